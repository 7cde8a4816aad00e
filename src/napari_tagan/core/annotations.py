"""The annotation convention of Labels layers, its class colours, and mask ↔ labels.

A Labels layer made or read by this plugin uses **0 = not annotated**, **1 = background**
(annotated, no class here) and **2, 3, … = classes**, so that a partial annotation says
where the user has not looked yet. Classes that may overlap (rings and fibers) get one
Labels layer each, holding 0/1/2. Class names are in the layer's ``features`` table (the
status bar shows them under the cursor) and in ``metadata["tagan"]["classes"]``.

The reader, the sample data, the Annotate and Enhance widgets and the training data
loader all follow it. Pure numpy: no Qt, napari or torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import InputError

NOT_ANNOTATED = 0
BACKGROUND = 1
FIRST_CLASS = 2
CONVENTION = "0 not annotated, 1 background, 2.. classes"

#: Colour of a class by name (falls back to :data:`PALETTE` in order).
CLASS_COLOURS = {
    "rings": "magenta",
    "fibers": "lime",
    "nanodomains": "yellow",
    "spots 561": "orange",
    "spots 640": "cyan",
    "bacteria": "cyan",
    "beads": "orange",
    "structure": "magenta",
}
PALETTE = ("magenta", "lime", "cyan", "yellow", "orange", "red", "dodgerblue")
BACKGROUND_COLOUR = (0.55, 0.6, 0.7, 0.35)
TRANSPARENT = (0.0, 0.0, 0.0, 0.0)


def class_colour(name: str, index: int = 0) -> str:
    """Display colour of a class."""
    return CLASS_COLOURS.get(name, PALETTE[index % len(PALETTE)])


def annotation_layer_kwargs(
    *classes: str, background: tuple[float, float, float, float] = BACKGROUND_COLOUR
) -> dict[str, Any]:
    """``add_labels`` keyword arguments (colormap, features, metadata) for ``classes``.

    ``background`` is the colour of value 1: visible while annotating, transparent for a
    complete ground truth (the sample data).
    """
    if not classes:
        raise ValueError("an annotation layer needs at least one class")
    colours: dict[Any, Any] = {None: TRANSPARENT, NOT_ANNOTATED: TRANSPARENT}
    colours[BACKGROUND] = background
    for i, name in enumerate(classes):
        colours[FIRST_CLASS + i] = class_colour(name, i)
    names = ["not annotated", "background", *classes]
    return {
        "colormap": colours,
        "features": {"index": list(range(len(names))), "class": names},
        "metadata": {"tagan": {"classes": list(classes), "convention": CONVENTION}},
    }


def mask_to_annotation(mask: np.ndarray) -> np.ndarray:
    """A fully annotated mask (0 = off, anything else = on) as 1 (background) / 2 (class)."""
    return np.where(np.asarray(mask) != 0, FIRST_CLASS, BACKGROUND).astype(np.uint8)


def probability_to_annotation(probability: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """A class probability map as an annotation (1 background, 2 class) at ``threshold``."""
    return np.where(np.asarray(probability) >= threshold, FIRST_CLASS, BACKGROUND).astype(np.uint8)


def annotation_to_mask(labels: np.ndarray, class_index: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Class ``class_index`` of an annotation as (mask, annotated), both bool.

    ``mask`` is True where the label is ``FIRST_CLASS + class_index``; ``annotated`` where
    the label is not :data:`NOT_ANNOTATED`. Per-class layers (0/1/2) use ``class_index=0``.
    """
    labels = np.asarray(labels)
    return labels == FIRST_CLASS + class_index, labels != NOT_ANNOTATED


# --- annotations → segmenter targets -----------------------------------------------------


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
