"""Writing simulated datasets in the original TA-GAN folder layouts."""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..io import atomic_output, atomic_write_bytes
from ..layouts import LAYOUTS, FileLayout
from .params import (
    CLASS_NAMES,
    STRUCTURES,
    ImagingParams,
    Structure,
    StructureParams,
    default_params,
)
from .sample import SimulatedSample, simulate

#: Structures :func:`write_dataset` writes: those with an original TA-GAN layout.
WRITABLE = tuple(s for s in STRUCTURES if s in LAYOUTS)
_LEGACY8_MAX = 255


def write_dataset(
    root: str | os.PathLike[str],
    structure: Structure,
    n_train: int,
    n_valid: int,
    shape: tuple[int, int] = (224, 224),
    seed: int = 0,
    n_test: int = 0,
    params: ImagingParams | None = None,
    *,
    structure_params: StructureParams | None = None,
) -> Path:
    """Write a simulated training set in the original TA-GAN folder layout.

    ``root/train``, ``root/valid`` (and ``root/test`` when ``n_test > 0``) receive one
    file per sample in the structure's layout of :data:`napari_tagan.core.layouts.LAYOUTS`
    (channels first; S. aureus: ``BF/``, ``SIM/`` and ``masks/`` folders).

    Intensities are photon counts, not rescaled: TA-GAN's "legacy8" normalisation clips at
    255, and the default photon budgets put the maxima around 60–200 like the original
    axon / dendrite data. Counts above 255 (uint8 files: clipped) raise a ``UserWarning``
    naming how many pixels saturate: lower the photon budget rather than let the loader
    clip them.

    The pixel size is stored as TIFF resolution (pixels per µm) and ImageJ ``spacing`` /
    ``unit``; channel names and the simulation parameters (with the per-sample seed) in the
    ImageJ ``Labels`` / ``Info`` entries; ``root/simulation.json`` records the generator.
    Files are written through :func:`~napari_tagan.core.io.atomic_output` (never
    half-written), readable as ``open()`` would make them.

    Parameters
    ----------
    root : path-like
        Dataset folder; created if missing. Existing files of the same name are replaced.
    structure : {"axons", "dendrites", "nanodomains", "saureus"}
        What to simulate.
    n_train, n_valid, n_test : int
        Number of samples per split.
    shape : tuple of int
        (Y, X) of every sample.
    seed : int
        Dataset seed; each sample gets its own seed derived from it (stored per file).
    params : ImagingParams, optional
        Imaging parameters; :func:`default_params` of the structure when omitted.
    structure_params : StructureParams, optional
        Biology knobs.

    Returns
    -------
    pathlib.Path
        ``root``.
    """
    import tifffile

    _check_request(structure, n_train, n_valid, n_test)
    counts = {"train": n_train, "valid": n_valid, "test": n_test}
    params = default_params(structure) if params is None else params
    structure_params = StructureParams() if structure_params is None else structure_params
    root = Path(root)
    for split, n in counts.items():
        if n or split != "test":
            (root / split).mkdir(parents=True, exist_ok=True)
    saturated = 0
    for index, (split, sample_seed) in enumerate(_sample_seeds(counts, seed)):
        sample = simulate(
            structure, shape, seed=sample_seed, params=params, structure_params=structure_params
        )
        saturated += _write_sample(tifffile, root / split, f"{structure}_{index:05d}.tif", sample)
    _write_manifest(root, structure, seed, shape, counts, params, structure_params)
    if saturated:
        _warn_saturation(saturated)
    return root


def _write_manifest(
    root: Path,
    structure: str,
    seed: int,
    shape: tuple[int, int],
    counts: dict[str, int],
    params: ImagingParams,
    structure_params: StructureParams,
) -> None:
    manifest = {
        "generator": "napari_tagan.core.simulate.write_dataset",
        "structure": structure,
        "seed": int(seed),
        "shape": list(shape),
        "splits": counts,
        "class_names": list(CLASS_NAMES[structure]),
        "imaging": asdict(params),
        "structure_params": asdict(structure_params),
        "intensity_unit": "photons",
    }
    text = json.dumps(manifest, indent=2) + "\n"
    atomic_write_bytes(root / "simulation.json", text.encode("utf-8"))


def _warn_saturation(saturated: int) -> None:
    warnings.warn(
        f"{saturated} pixels of the written images exceed 255 photons and will be "
        "clipped by TA-GAN's 8-bit ('legacy8') normalisation; lower confocal_photons / "
        "sted_photons to keep the structures unsaturated.",
        UserWarning,
        stacklevel=3,
    )


def _sample_seeds(counts: dict[str, int], seed: int) -> list[tuple[str, int]]:
    """(split, seed) of every sample in writing order; one seed each, from ``seed``."""
    splits = [split for split, n in counts.items() for _ in range(n)]
    seeds = np.random.SeedSequence(seed).generate_state(max(len(splits), 1), np.uint32)
    return [(split, int(s)) for split, s in zip(splits, seeds, strict=False)]


def _check_request(structure: str, *counts: int) -> None:
    if structure not in WRITABLE:
        raise InputError(
            "write_dataset structure must be 'axons', 'dendrites', 'nanodomains' or "
            f"'saureus', got {structure!r}"
        )
    for split, n in zip(("train", "valid", "test"), counts, strict=True):
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise InputError(f"n_{split} must be a non-negative integer, got {n!r}")


def _write_sample(tifffile: Any, folder: Path, name: str, sample: SimulatedSample) -> int:
    """Write one sample; return how many image pixels exceed the 8-bit range."""
    layout = LAYOUTS[sample.structure]
    confocal = np.rint(sample.confocal)
    sted = np.rint(sample.sted)
    saturated = int((confocal > _LEGACY8_MAX).sum() + (sted > _LEGACY8_MAX).sum())
    resolution = (1.0 / sample.pixel_size_um, 1.0 / sample.pixel_size_um)
    info = json.dumps(sample.metadata())
    if layout.folders is not None:
        images = (confocal, sted, sample.masks[0])
        _write_folders(tifffile, folder, name, layout, images, resolution, info)
        return 0  # min–max normalised data: no 8-bit clipping
    dtype = np.dtype(layout.dtype)
    top = np.iinfo(dtype).max
    channels = [np.clip(confocal, 0, top), np.clip(sted, 0, top)]
    names = ["confocal", "STED"]
    for class_name, mask in zip(sample.class_names, sample.masks, strict=True):
        channels.append(mask * layout.mask_on)
        names.append(f"{class_name} mask")
    stack = np.stack(channels).astype(dtype)
    _write_tiff(tifffile, folder / name, stack, resolution, info, names)
    return saturated


def _write_folders(
    tifffile: Any,
    folder: Path,
    name: str,
    layout: FileLayout,
    images: tuple[np.ndarray, np.ndarray, np.ndarray],
    resolution: tuple[float, float],
    info: str,
) -> None:
    """Confocal, STED and (bool) mask as 2D images of one name in the layout's folders."""
    assert layout.folders is not None
    top = np.iinfo(np.dtype(layout.dtype)).max
    for sub, image in zip(layout.folders, images, strict=True):
        (folder / sub).mkdir(exist_ok=True)
        if image.dtype != bool:
            image = np.clip(image, 0, top).astype(layout.dtype)
        labels = None if image.dtype == bool else [sub]
        _write_tiff(tifffile, folder / sub / name, image, resolution, info, labels)


def _write_tiff(
    tifffile: Any,
    path: Path,
    data: np.ndarray,
    resolution: tuple[float, float],
    info: str,
    channel_names: list[str] | None,
) -> None:
    with atomic_output(path) as tmp:
        if data.dtype == bool:
            # Bilevel masks cannot be ImageJ files: standard resolution tags (per cm).
            tifffile.imwrite(
                tmp,
                data,
                resolution=(resolution[0] * 1e4, resolution[1] * 1e4),
                resolutionunit="CENTIMETER",
                description=info,
                metadata=None,
            )
            return
        metadata: dict[str, Any] = {
            "spacing": 1.0 / resolution[0],
            "unit": "um",
            "Info": info,
            "axes": "CYX" if data.ndim == 3 else "YX",
        }
        if channel_names is not None:
            metadata["Labels"] = channel_names
        tifffile.imwrite(tmp, data, imagej=True, resolution=resolution, metadata=metadata)
