"""Results as OME-Zarr: multiscale pyramids with physical pixel sizes, through ngff-zarr.

``predict --output OUT.zarr`` writes one OME-Zarr image per result under one zarr
hierarchy: ``OUT.zarr/{name}_sted``, ``{name}_seg`` (one channel per class) and
``{name}_sted_std``; each is a multiscale pyramid (levels halved in Y and X until the
smallest side would drop below :data:`MIN_LEVEL_SIDE`) whose scale transformations carry
the pixel size in micrometres, and whose ``napari_tagan`` attribute holds the provenance.
An image is written beside its final place and moved there when complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError

MIN_LEVEL_SIDE = 64
_DIMS = {"Z": "z", "T": "t", "C": "c", "Y": "y", "X": "x"}


@dataclass
class OmeZarrImage:
    """An OME-Zarr image read back: its pyramid (lazy, level 0 first) and metadata."""

    levels: list[Any]
    axes: str
    pixel_size: tuple[float, float] | None
    name: str
    attributes: dict[str, Any]


def pyramid_factors(shape_yx: tuple[int, int], min_side: int = MIN_LEVEL_SIDE) -> list[int]:
    """Down-sampling factors 2, 4, … while the smallest side stays ≥ ``min_side``."""
    factors, f = [], 2
    while min(shape_yx) // f >= min_side:
        factors.append(f)
        f *= 2
    return factors


def write_omezarr(
    path: str | os.PathLike[str],
    array: Any,
    *,
    axes: str,
    pixel_size: tuple[float, ...] | None = None,
    name: str | None = None,
    attributes: dict[str, Any] | None = None,
    chunk: int = 512,
) -> Path:
    """Write ``array`` (axes from ``ZTCYX``) as a multiscale OME-Zarr image at ``path``."""
    import ngff_zarr as nz
    import zarr

    target = Path(path)
    if len(axes) != np.ndim(array) or set(axes) - set(_DIMS):
        raise InputError(f"axes {axes!r} do not describe an array of shape {np.shape(array)}")
    dims = [_DIMS[a] for a in axes]
    scale = {d: 1.0 for d in dims}
    units = None
    if pixel_size and len(pixel_size) >= 2 and min(pixel_size[-2:]) > 0:
        scale["y"], scale["x"] = float(pixel_size[-2]), float(pixel_size[-1])
        units = {"y": "micrometer", "x": "micrometer"}
    image = nz.to_ngff_image(
        array, dims=dims, scale=scale, axes_units=units, name=name or target.stem
    )
    factors = pyramid_factors(tuple(np.shape(array)[-2:]))
    chunks = {d: (chunk if d in "yx" else 1) for d in dims}
    multiscales = nz.to_multiscales(image, scale_factors=factors or [], chunks=chunks)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent))
    try:
        nz.to_ngff_zarr(str(tmp), multiscales, version="0.4")
        group = zarr.open_group(str(tmp), mode="r+")
        group.attrs["napari_tagan"] = json.loads(json.dumps(attributes or {}, default=str))
        _replace_dir(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return target


def _replace_dir(new: Path, target: Path) -> None:
    """Move a finished store into place, replacing an earlier result of the same name."""
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        os.replace(target, old)
        os.replace(new, target)
        shutil.rmtree(old)
    else:
        os.replace(new, target)


def read_omezarr(path: str | os.PathLike[str]) -> OmeZarrImage:
    """Open an OME-Zarr image lazily (dask arrays), with its pixel size in µm."""
    import ngff_zarr as nz
    import zarr

    p = Path(path)
    try:
        ms = nz.from_ngff_zarr(str(p))
    except Exception as exc:  # the library raises several kinds for a non-OME store
        raise InputError(f"{p}: not an OME-Zarr image ({str(exc).splitlines()[0]})") from None
    first = ms.images[0]
    axes = "".join(d.upper() for d in first.dims)
    pixel = None
    if first.axes_units and first.axes_units.get("x") == "micrometer":
        pixel = (float(first.scale["y"]), float(first.scale["x"]))
    attrs = dict(zarr.open_group(str(p), mode="r").attrs).get("napari_tagan", {})
    return OmeZarrImage([im.data for im in ms.images], axes, pixel, ms.metadata.name, attrs)


def write_prediction_omezarr(
    folder: str | os.PathLike[str],
    name: str,
    result: Any,
    *,
    axes: str,
    seg_axes: str,
    pixel_size: tuple[float, ...] | None,
    provenance: dict[str, Any],
) -> list[Path]:
    """Write a :class:`~napari_tagan.core.PredictionResult` as OME-Zarr images."""
    root = Path(folder)
    classes = {"classes": list(result.class_names)}
    parts = [
        ("sted", result.synthetic_sted, axes, "synthetic STED", {}),
        ("seg", result.segmentation, seg_axes, "segmentation", classes),
        ("sted_std", result.variability, axes, "variability", {}),
    ]
    out = [
        write_omezarr(
            root / f"{name}_{suffix}",
            array,
            axes=array_axes,
            pixel_size=pixel_size,
            name=f"{name} {label}",
            attributes={**provenance, **extra},
        )
        for suffix, array, array_axes, label, extra in parts
        if array is not None
    ]
    _root_group(root)
    return out


def _root_group(root: Path) -> None:
    """Make ``root`` a zarr group, so that tools list the images inside it."""
    import zarr

    if not any((root / f).exists() for f in (".zgroup", "zarr.json")):
        zarr.open_group(str(root), mode="a", zarr_format=2)
