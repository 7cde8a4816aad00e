"""Training data: paired confocal / STED images with (possibly partial) segmentation targets.

A :class:`TrainingDataset` holds samples already normalized with the model's
:class:`~napari_tagan.core.config.NormalizationSpec` (statistics per image, confocal and
STED each with their own, as the original pipeline), plus per-class targets in
``mask_range`` units and weight maps (1 = annotated). It is built from arrays
(:func:`dataset_from_arrays`, what the napari widget hands over) or from a folder in one
of the original TA-GAN layouts (:func:`dataset_from_folder`).

Batches are cut in :mod:`.batches`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..annotations import labels_to_targets
from ..config import ModelConfig
from ..errors import InputError
from ..guards import check_training_pair
from ..layouts import LAYOUTS, split_stack
from ..normalization import masks_to_target, normalize
from ..tiff import read_tiff_array

TIFF_SUFFIXES = (".tif", ".tiff")


@dataclass
class TrainingSample:
    """One normalized training pair.

    Attributes
    ----------
    confocal : numpy.ndarray
        float32 (image_channels, Y, X), in the network's range.
    sted : numpy.ndarray
        float32 (output_nc, Y, X), in the network's range.
    targets, weights : numpy.ndarray or None
        float32 (n_classes, Y, X): S's targets in ``mask_range`` units and where they hold
        (1 = annotated, 0 = not). None when the sample has no annotation.
    name : str
        File name or index, for messages.
    """

    confocal: np.ndarray
    sted: np.ndarray
    targets: np.ndarray | None = None
    weights: np.ndarray | None = None
    name: str = ""
    _annotated: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def shape(self) -> tuple[int, int]:
        """(Y, X) of the sample."""
        return (int(self.confocal.shape[-2]), int(self.confocal.shape[-1]))

    def annotated_pixels(self) -> np.ndarray:
        """Flat indices of the pixels annotated for at least one class (cached)."""
        if self._annotated is None:
            if self.weights is None:
                self._annotated = np.zeros(0, np.int64)
            else:
                self._annotated = np.flatnonzero(self.weights.max(axis=0) > 0)
        return self._annotated

    @property
    def fully_annotated(self) -> bool:
        """Every pixel annotated for every class."""
        return self.weights is not None and bool(self.weights.min() > 0)


@dataclass
class TrainingDataset(Sequence[TrainingSample]):
    """Samples normalized for ``config``, with a fingerprint of the raw data."""

    config: ModelConfig
    samples: list[TrainingSample]
    fingerprint: str = ""
    source: str = ""

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> TrainingSample:  # type: ignore[override]
        return self.samples[index]

    @property
    def has_targets(self) -> bool:
        """At least one sample carries annotated pixels."""
        return any(s.annotated_pixels().size for s in self.samples)

    def check_model(self, config: ModelConfig, what: str = "training data") -> None:
        """Raise :class:`InputError` unless the data fit a model with ``config``."""
        if config.normalization != self.config.normalization:
            raise InputError(
                f"{what} was normalized with {self.config.normalization.kind!r}, the model "
                f"uses {config.normalization.kind!r}; rebuild the dataset with the model's config"
            )
        for s in self.samples[:1]:
            if s.confocal.shape[0] != config.image_channels or s.sted.shape[0] != config.output_nc:
                raise InputError(
                    f"{what} has {s.confocal.shape[0]} confocal / {s.sted.shape[0]} STED "
                    f"channel(s); the model expects {config.image_channels} / {config.output_nc}"
                )
            if s.targets is not None and s.targets.shape[0] != config.n_classes:
                raise InputError(
                    f"{what} has {s.targets.shape[0]} class(es); the model segments "
                    f"{config.n_classes} ({', '.join(config.class_names)})"
                )


# ------------------------------------------------------------------------------ arrays


def _channels_first(array: Any, channels: int, what: str) -> np.ndarray:
    a = np.asarray(array)
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_) or np.issubdtype(
        a.dtype, np.complexfloating
    ):
        raise InputError(f"{what} has dtype {a.dtype}; expected real numbers")
    if a.ndim == 2 and channels == 1:
        a = a[None]
    if a.ndim != 3 or a.shape[0] != channels:
        expect = "(Y, X) or (1, Y, X)" if channels == 1 else f"({channels}, Y, X)"
        raise InputError(f"{what} has shape {a.shape}; expected {expect}")
    if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
        raise InputError(f"{what} holds NaN or infinite values")
    return a


def _hash_arrays(h: Any, *arrays: Any) -> None:
    for a in arrays:
        if a is None:
            h.update(b"none")
            continue
        if isinstance(a, list | tuple):
            _hash_arrays(h, *a)
            continue
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())


def _make_sample(
    config: ModelConfig,
    confocal: np.ndarray,
    sted: np.ndarray,
    targets: np.ndarray | None,
    weights: np.ndarray | None,
    name: str,
) -> TrainingSample:
    if confocal.shape[-2:] != sted.shape[-2:]:
        raise InputError(
            f"{name}: confocal {confocal.shape[-2:]} and STED {sted.shape[-2:]} differ in size"
        )
    if targets is not None and targets.shape[-2:] != confocal.shape[-2:]:
        raise InputError(
            f"{name}: labels {targets.shape[-2:]} and images {confocal.shape[-2:]} differ in size"
        )
    spec = config.normalization
    conf_n, _ = normalize(confocal, spec)
    sted_n, _ = normalize(sted, spec)
    check_training_pair(name, (confocal, conf_n), (sted, sted_n))
    return TrainingSample(conf_n, sted_n, targets, weights, name)


def dataset_from_arrays(
    config: ModelConfig,
    confocals: Sequence[Any],
    steds: Sequence[Any],
    labels: Sequence[Any] | None = None,
    *,
    names: Sequence[str] | None = None,
) -> TrainingDataset:
    """Build a dataset from in-memory images (e.g. napari layers).

    Parameters
    ----------
    config
        The model's config (channels, classes, normalization, mask range).
    confocals, steds
        Equal-length lists of (Y, X) or (C, Y, X) arrays in raw intensity units; each
        image is normalized with its own statistics.
    labels
        Per sample, anything :func:`labels_to_targets` accepts, or None (no annotation;
        such samples still train G's adversarial term and S is not trained on them).
        Omit for presets that need no labels (live).
    names
        Optional sample names for messages.

    Returns
    -------
    TrainingDataset
    """
    if len(confocals) != len(steds):
        raise InputError(f"{len(confocals)} confocal image(s) but {len(steds)} STED image(s)")
    if not confocals:
        raise InputError("no training images given")
    labels = [None] * len(confocals) if labels is None else list(labels)
    if len(labels) != len(confocals):
        raise InputError(f"{len(labels)} label entries for {len(confocals)} image pair(s)")
    names = [f"sample {i + 1}" for i in range(len(confocals))] if names is None else names
    h = hashlib.sha256()
    samples = []
    for conf, sted, lab, name in zip(confocals, steds, labels, names, strict=True):
        c = _channels_first(conf, config.image_channels, f"{name}: confocal")
        s = _channels_first(sted, config.output_nc, f"{name}: STED")
        _hash_arrays(h, c, s, lab)
        targets = weights = None
        if lab is not None and config.n_classes:
            targets, weights = labels_to_targets(
                lab, config.n_classes, mask_range=config.mask_range
            )
        samples.append(_make_sample(config, c, s, targets, weights, name))
    return TrainingDataset(config, samples, h.hexdigest(), source="arrays")


# ------------------------------------------------------------------------------ file layouts

#: The S. aureus layout's confocal (brightfield), STED (SIM) and mask folders.
_FOLDERS: tuple[str, str, str] = LAYOUTS["saureus"].folders or ("BF", "SIM", "masks")


def _resolve_split(path: Path, split: str) -> Path:
    if not path.exists():
        raise InputError(f"dataset folder not found: {path}")
    if path.is_dir() and (path / split).is_dir():
        return path / split
    return path


def _read_tiff(path: Path) -> np.ndarray:
    return read_tiff_array(path)


def _list_tiffs(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.suffix.lower() in TIFF_SUFFIXES and not p.name.startswith(".")
    )


def split_channels(
    stack: np.ndarray, config: ModelConfig, name: str = "sample"
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Split one original TA-GAN TIFF stack into (confocal, STED, masks or None).

    The layouts are :mod:`napari_tagan.core.layouts`'; masks only for presets whose S
    learns from labels.
    """
    classes = config.class_names if config.seg_target == "labels" else ()
    planes = split_stack(
        stack, config.image_channels, config.output_nc, classes, preset=config.preset, name=name
    )
    return planes["confocal"], planes["sted"], planes.get("mask")


def _file_masks(masks: np.ndarray, config: ModelConfig) -> tuple[np.ndarray, np.ndarray]:
    # the original's masks go through its images' 8-bit conversion (synprot's graded too)
    legacy = config.normalization.kind.startswith("legacy8")
    targets = masks_to_target(masks, config.mask_range, legacy=legacy)
    return targets, np.ones_like(targets)


def dataset_from_folder(
    path: str | os.PathLike[str], config: ModelConfig, *, split: str = "train"
) -> TrainingDataset:
    """Load a dataset in one of the original TA-GAN folder layouts.

    ``path`` is a dataset root holding ``train/`` and ``valid/`` (``split`` picks one) or
    a split folder itself. Either one multi-page TIFF per sample (channels first, see
    :func:`split_channels`), or, for S. aureus, ``BF/``, ``SIM/`` and ``masks/``
    sub-folders holding 2D images with the same file names.

    Raises
    ------
    InputError
        Missing folder, no TIFF files, unexpected channel counts, unreadable files.
    """
    folder = _resolve_split(Path(path), split)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder of training images")
    conf_dir, sted_dir, _ = _FOLDERS
    if (folder / conf_dir).is_dir() and (folder / sted_dir).is_dir():
        return _saureus_folder(folder, config)
    files = _list_tiffs(folder)
    if not files:
        raise InputError(
            f"no TIFF samples in {folder} (expected *.tif files, or "
            f"{'/ '.join(_FOLDERS)}/ folders)"
        )
    return dataset_from_files(files, config)


def dataset_from_files(
    files: Sequence[str | os.PathLike[str]], config: ModelConfig
) -> TrainingDataset:
    """Load multi-page TIFF samples (one file per sample, see :func:`split_channels`)."""
    h = hashlib.sha256()
    samples: list[TrainingSample] = []
    for file in map(Path, files):
        if not file.is_file():
            raise InputError(f"training file not found: {file}")
        conf, sted, masks = split_channels(_read_tiff(file), config, file.name)
        _hash_arrays(h, conf, sted, masks)
        targets = weights = None
        if masks is not None:
            targets, weights = _file_masks(masks, config)
        samples.append(_make_sample(config, conf, sted, targets, weights, file.name))
    if not samples:
        raise InputError("no training files given")
    source = str(Path(files[0]).parent)
    return TrainingDataset(config, samples, h.hexdigest(), source=source)


def _saureus_folder(folder: Path, config: ModelConfig) -> TrainingDataset:
    h = hashlib.sha256()
    samples: list[TrainingSample] = []
    conf_dir, sted_dir, mask_dir = _FOLDERS
    for file in _list_tiffs(folder / conf_dir):
        sim = folder / sted_dir / file.name
        if not sim.is_file():
            raise InputError(f"{file.name} is in {conf_dir}/ but not in {sted_dir}/ ({folder})")
        conf = _channels_first(_read_tiff(file), config.image_channels, file.name)
        sted = _channels_first(_read_tiff(sim), config.output_nc, sim.name)
        mask_file = folder / mask_dir / file.name
        masks = _read_tiff(mask_file) if mask_file.is_file() and config.n_classes else None
        _hash_arrays(h, conf, sted, masks)
        targets = weights = None
        if masks is not None:
            masks = masks[None] if masks.ndim == 2 else masks
            targets, weights = _file_masks(masks, config)
        samples.append(_make_sample(config, conf, sted, targets, weights, file.name))
    if not samples:
        raise InputError(f"no TIFF samples in {folder / conf_dir}")
    return TrainingDataset(config, samples, h.hexdigest(), source=str(folder))
