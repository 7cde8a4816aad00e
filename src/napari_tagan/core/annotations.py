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

from typing import Any

import numpy as np

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
