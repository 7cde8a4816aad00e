"""The annotation convention for the widgets: see :mod:`napari_tagan.core.annotations`.

Kept so that widgets importing ``._labels`` keep working; new code imports the core module.
"""

from __future__ import annotations

from napari_tagan.core.annotations import (
    BACKGROUND,
    BACKGROUND_COLOUR,
    CLASS_COLOURS,
    FIRST_CLASS,
    NOT_ANNOTATED,
    PALETTE,
    TRANSPARENT,
    annotation_layer_kwargs,
    class_colour,
    mask_to_annotation,
    probability_to_annotation,
)

__all__ = [
    "BACKGROUND",
    "BACKGROUND_COLOUR",
    "CLASS_COLOURS",
    "FIRST_CLASS",
    "NOT_ANNOTATED",
    "PALETTE",
    "TRANSPARENT",
    "annotation_layer_kwargs",
    "class_colour",
    "mask_to_annotation",
    "probability_to_annotation",
]
