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

from ..config import ModelConfig
from ..errors import InputError
from ..guards import check_training_pair
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


# ------------------------------------------------------------------------------ annotations
# The annotation convention (0 not annotated, 1 background, 2.. classes) and mask → target
# conversion: to be replaced by core/annotations.py.


def labels_to_targets(
    labels: Any, n_classes: int, *, mask_range: tuple[float, float] = (-1.0, 1.0)
) -> tuple[np.ndarray, np.ndarray]:
    """Turn annotations into S's targets and a weight map of the annotated pixels.

    Parameters
    ----------
    labels
        One of

        * an integer label image (Y, X) as made by the Annotate widget: 0 = not
          annotated, 1 = background, ``k + 2`` = class ``k``;
        * a list of ``n_classes`` integer label images (Y, X), one per class, for classes
          that overlap: 0 = not annotated, 1 = background, 2 = the class;
        * a boolean or float mask array (n_classes, Y, X) (or (Y, X) for one class),
          annotated everywhere: True / non-zero = the class (float values in [0, 1] are
          taken as fractions between off and on). An integer (n_classes, Y, X) array is a
          mask array too; pass a *list* for per-class label images.
    n_classes
        Number of classes the segmenter outputs.
    mask_range
        S's (off, on) target values, the config's ``mask_range``.

    Returns
    -------
    targets, weights : numpy.ndarray
        float32 (n_classes, Y, X); targets in ``mask_range`` units (off where not
        annotated), weights in {0, 1}.

    Raises
    ------
    InputError
        Wrong shapes, labels beyond the class count, non-finite masks.
    """
    if n_classes < 1:
        raise InputError(f"n_classes must be ≥ 1, got {n_classes}")
    lo, hi = (np.float32(v) for v in mask_range)
    if isinstance(labels, list | tuple):
        return _per_class_labels(labels, n_classes, lo, hi)
    array = np.asarray(labels)
    if array.ndim == 2 and np.issubdtype(array.dtype, np.integer):
        return _label_image(array, n_classes, lo, hi)
    return _mask_array(array, n_classes, lo, hi)


def _per_class_labels(
    labels: Sequence[Any], n_classes: int, lo: np.float32, hi: np.float32
) -> tuple[np.ndarray, np.ndarray]:
    """One label image per class: 0 = not annotated, 1 = background, 2 = the class."""
    if len(labels) != n_classes:
        raise InputError(f"got {len(labels)} per-class label images for {n_classes} class(es)")
    layers = [np.asarray(x) for x in labels]
    shapes = {x.shape for x in layers}
    if len(shapes) != 1 or layers[0].ndim != 2:
        raise InputError(f"per-class label images must be 2D and equal in shape, got {shapes}")
    targets = np.full((n_classes, *layers[0].shape), lo, np.float32)
    weights = np.zeros((n_classes, *layers[0].shape), np.float32)
    for k, layer in enumerate(layers):
        _check_integer(layer, f"label image of class {k + 1}")
        if layer.size and (layer.max() > 2 or layer.min() < 0):
            raise InputError(
                f"per-class label image {k + 1} holds values {int(layer.min())}.."
                f"{int(layer.max())}; expected 0 (not annotated), 1 (background), 2 (class)"
            )
        targets[k][layer == 2] = hi
        weights[k] = (layer != 0).astype(np.float32)
    return targets, weights


def _label_image(
    array: np.ndarray, n_classes: int, lo: np.float32, hi: np.float32
) -> tuple[np.ndarray, np.ndarray]:
    """One integer label image: 0 = not annotated, 1 = background, ``k + 2`` = class k."""
    if array.size and (array.min() < 0 or array.max() > n_classes + 1):
        raise InputError(
            f"label image holds values {int(array.min())}..{int(array.max())}; with "
            f"{n_classes} class(es) expected 0 (not annotated), 1 (background), 2.."
            f"{n_classes + 1} (classes)"
        )
    targets = np.full((n_classes, *array.shape), lo, np.float32)
    for k in range(n_classes):
        targets[k][array == k + 2] = hi
    weights = np.repeat((array != 0)[None].astype(np.float32), n_classes, axis=0)
    return targets, weights


def _mask_array(
    array: np.ndarray, n_classes: int, lo: np.float32, hi: np.float32
) -> tuple[np.ndarray, np.ndarray]:
    """Masks (n_classes, Y, X), annotated everywhere; floats in [0, 1] are fractions."""
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[0] != n_classes:
        raise InputError(
            f"mask array of shape {array.shape}: expected ({n_classes}, Y, X) masks, a 2D "
            "integer label image, or a list of per-class label images"
        )
    if array.dtype == np.bool_:
        frac = array.astype(np.float32)
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise InputError("mask array holds NaN or infinite values")
        in_unit = array.size and array.min() >= 0 and array.max() <= 1
        frac = array.astype(np.float32) if in_unit else (array != 0).astype(np.float32)
    else:
        _check_integer(array, "mask array")
        frac = (array != 0).astype(np.float32)
    targets = (lo + frac * (hi - lo)).astype(np.float32)
    return targets, np.ones_like(targets)


def _check_integer(array: np.ndarray, what: str) -> None:
    if not (np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_):
        raise InputError(f"{what} must hold integers, got dtype {array.dtype}")


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
# The TA-GAN file layouts (channel order of a stack, BF/SIM/masks folders): to be replaced
# by core/layouts.py.


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

    Layouts: ``[confocal…, STED…, masks…]`` (axons, dendrites, nanodomains, generic),
    ``[confocal, STED]`` (live, or unannotated data), and for multi-channel presets
    (synprot) groups of three per channel: ``[conf A, STED A, mask A, conf B, …]``.
    """
    ic, oc = config.image_channels, config.output_nc
    n = config.n_classes if config.seg_target == "labels" else 0
    if stack.ndim == 3 and stack.shape[0] > 16 and stack.shape[-1] <= 16:
        stack = np.moveaxis(stack, -1, 0)  # (Y, X, C) files
    if stack.ndim != 3:
        raise InputError(f"{name}: expected a multi-page (C, Y, X) TIFF, got shape {stack.shape}")
    c = stack.shape[0]
    if ic > 1 and ic == oc == n and c == 3 * ic:
        return stack[0::3], stack[1::3], stack[2::3]
    if c == ic + oc + n and n:
        return stack[:ic], stack[ic : ic + oc], stack[ic + oc :]
    if c == ic + oc:
        return stack[:ic], stack[ic:], None
    layout = f"{ic} confocal + {oc} STED" + (f" + {n} mask" if n else "") + " channel(s)"
    raise InputError(
        f"{name} has {c} channel(s); the {config.preset!r} preset expects {layout}"
        + (f" (or {ic + oc} without masks)" if n else "")
    )


def _file_masks(masks: np.ndarray, config: ModelConfig) -> tuple[np.ndarray, np.ndarray]:
    legacy = config.normalization.kind == "legacy8"
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
    if (folder / "BF").is_dir() and (folder / "SIM").is_dir():
        return _saureus_folder(folder, config)
    files = _list_tiffs(folder)
    if not files:
        raise InputError(
            f"no TIFF samples in {folder} (expected *.tif files, or BF/ SIM/ masks/ folders)"
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
    for file in _list_tiffs(folder / "BF"):
        sim = folder / "SIM" / file.name
        if not sim.is_file():
            raise InputError(f"{file.name} is in BF/ but not in SIM/ ({folder})")
        conf = _channels_first(_read_tiff(file), config.image_channels, file.name)
        sted = _channels_first(_read_tiff(sim), config.output_nc, sim.name)
        mask_file = folder / "masks" / file.name
        masks = _read_tiff(mask_file) if mask_file.is_file() and config.n_classes else None
        _hash_arrays(h, conf, sted, masks)
        targets = weights = None
        if masks is not None:
            masks = masks[None] if masks.ndim == 2 else masks
            targets, weights = _file_masks(masks, config)
        samples.append(_make_sample(config, conf, sted, targets, weights, file.name))
    if not samples:
        raise InputError(f"no TIFF samples in {folder / 'BF'}")
    return TrainingDataset(config, samples, h.hexdigest(), source=str(folder))
