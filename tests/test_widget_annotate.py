"""The Annotate widget: Labels layers that match the image, with the preset's classes."""

from __future__ import annotations

import numpy as np
import pytest
from napari.utils.notifications import notification_manager

from napari_tagan._widgets._annotate import AnnotateWidget
from napari_tagan.core.training import labels_to_targets

pytestmark = pytest.mark.viewer


def test_annotation_layer_matches_image_and_names_classes(make_napari_viewer):
    viewer = make_napari_viewer()
    image = viewer.add_image(
        np.zeros((48, 64), np.uint16), name="cell", scale=(0.02, 0.03), translate=(4.0, 2.0)
    )
    widget = AnnotateWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.image.value is image
    widget.preset.value = "axons"
    assert widget.class_names() == ["rings"]
    assert "rings" in widget.legend.value and "background" in widget.legend.value
    widget.create_button.clicked.emit()

    labels = viewer.layers["cell annotations"]
    assert type(labels).__name__ == "Labels"
    assert labels.data.shape == (48, 64) and labels.data.dtype == np.uint8
    assert not labels.data.any()  # nothing annotated yet
    np.testing.assert_allclose(labels.scale, image.scale)
    np.testing.assert_allclose(labels.translate, image.translate)
    assert list(labels.features["class"]) == ["not annotated", "background", "rings"]
    assert labels.metadata["tagan"]["classes"] == ["rings"]
    assert viewer.layers.selection.active is labels
    assert labels.mode == "paint" and labels.selected_label == 2
    # the class is named where the user looks: the status bar under the cursor
    labels.data[10, 10] = 2
    assert "class: rings" in labels.get_status((10, 10))["coordinates"]
    # class colours: background visible, not annotated transparent
    assert labels.colormap.map(np.array([0]))[0][3] == 0
    assert labels.colormap.map(np.array([1]))[0][3] > 0


def test_overlapping_classes_get_one_layer_each_and_partial_annotation_trains(
    make_napari_viewer,
):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((3, 32, 40), np.float32), name="dend", scale=(0.4, 0.02, 0.02))
    widget = AnnotateWidget(viewer)
    widget.preset.value = "dendrites"
    made = widget.create()
    assert [layer.name for layer in made] == ["dend annotations rings", "dend annotations fibers"]
    rings, fibers = made
    assert rings.data.shape == (3, 32, 40)
    np.testing.assert_allclose(fibers.scale, (0.4, 0.02, 0.02))

    # a partial annotation on plane 1: a few ring pixels, some background
    rings.data[1, 5:8, 5:9] = 2
    rings.data[1, 20:24, :] = 1
    fibers.data[1, 0:2, :] = 1
    targets, weights = labels_to_targets([rings.data[1], fibers.data[1]], 2)
    assert weights[0].sum() == 12 + 4 * 40 and weights[1].sum() == 2 * 40
    assert (targets[0][5:8, 5:9] == 1).all() and (targets[0][20:24] == -1).all()

    # re-running never wipes an annotation in progress
    again = widget.create()
    assert again[0] is rings and rings.data[1, 5, 5] == 2
    assert sum(layer.name.startswith("dend annotations") for layer in viewer.layers) == 2


def test_custom_classes_and_multichannel_images(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((2, 32, 32), np.uint16), name="syn")
    widget = AnnotateWidget(viewer)
    widget.preset.value = "synprot"
    layers = widget.create()
    # the channel axis of a two-protein image is not annotated separately
    assert [layer.data.shape for layer in layers] == [(32, 32), (32, 32)]

    widget.preset.value = "generic"
    widget.classes.value = "nuclei, , membranes, nuclei"
    assert widget.class_names() == ["nuclei", "membranes"]
    widget.image.value = viewer.layers["syn"]
    names = [layer.name for layer in widget.create()]
    assert names == ["syn annotations nuclei", "syn annotations membranes"]

    # bad input: one clear notification, no layer
    widget.classes.value = " "
    before = len(notification_manager.records), len(viewer.layers)
    assert widget.create() == []
    messages = [str(n.message) for n in notification_manager.records[before[0] :]]
    assert "Annotate: enter at least one class name" in messages
    assert len(viewer.layers) == before[1]
