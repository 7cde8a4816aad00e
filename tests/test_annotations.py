"""The annotation convention: values, class colours shared by every producer, conversions."""

from __future__ import annotations

import numpy as np

import napari_tagan.core.annotations as ann
from napari_tagan import _sample_data
from napari_tagan.core.annotations import (
    annotation_layer_kwargs,
    annotation_to_mask,
    class_colour,
    mask_to_annotation,
    probability_to_annotation,
)


def test_values_of_the_convention():
    assert (ann.NOT_ANNOTATED, ann.BACKGROUND, ann.FIRST_CLASS) == (
        0,
        1,
        2,
    )
    kwargs = annotation_layer_kwargs("rings", "fibers")
    assert kwargs["features"]["class"] == ["not annotated", "background", "rings", "fibers"]
    assert kwargs["colormap"][0] == ann.TRANSPARENT
    assert kwargs["colormap"][1] == ann.BACKGROUND_COLOUR
    assert kwargs["colormap"][3] == "lime"
    assert kwargs["metadata"]["tagan"]["classes"] == ["rings", "fibers"]


def test_sample_data_and_annotation_layers_share_class_colours():
    # fibers and bacteria once had swapped colours between the two
    layers = _sample_data.sample_layers("dendrites", shape=(64, 64))
    colours = {kw["name"]: kw["colormap"][2] for _, kw, kind in layers if kind == "labels"}
    assert colours == {"dendrites rings": class_colour("rings"), "dendrites fibers": "lime"}
    (bacteria,) = [
        kw for _, kw, k in _sample_data.sample_layers("saureus", (64, 64)) if k == "labels"
    ]
    assert bacteria["colormap"][2] == class_colour("bacteria") == "cyan"
    assert bacteria["colormap"][1] == ann.TRANSPARENT  # complete truth: no grey veil


def test_mask_labels_round_trip():
    mask = np.array([[0, 255], [32768, 0]], np.uint16)
    labels = mask_to_annotation(mask)
    assert labels.dtype == np.uint8 and labels.tolist() == [[1, 2], [2, 1]]
    on, annotated = annotation_to_mask(labels)
    np.testing.assert_array_equal(on, mask != 0)
    assert annotated.all()
    partial = np.array([[0, 1, 2, 3]])
    on, annotated = annotation_to_mask(partial, class_index=1)
    assert on.tolist() == [[False, False, False, True]]
    assert annotated.tolist() == [[False, True, True, True]]
    assert probability_to_annotation(np.array([0.2, 0.5, 0.9])).tolist() == [1, 2, 2]
