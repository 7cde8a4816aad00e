"""napari sample-data contributions: simulated layers open in a viewer model."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from napari_tagan import _sample_data

SAMPLES = {
    "axons": (_sample_data.axons_sample, ("rings",)),
    "dendrites": (_sample_data.dendrites_sample, ("rings", "fibers")),
    "nanodomains": (_sample_data.nanodomains_sample, ("nanodomains",)),
}


def test_sample_module_imports_nothing_heavy():
    code = (
        "import sys, napari_tagan._sample_data\n"
        "bad = [m for m in ('scipy', 'torch', 'napari', 'qtpy')"
        " if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("structure", SAMPLES)
def test_sample_layer_data(structure):
    function, classes = SAMPLES[structure]
    layers = function()
    kinds = [kind for _, _, kind in layers]
    assert kinds == ["image", "image"] + ["labels"] * len(classes)
    names = [kwargs["name"] for _, kwargs, _ in layers]
    assert names == [f"{structure} confocal", f"{structure} STED"] + [
        f"{structure} {c}" for c in classes
    ]
    for data, kwargs, kind in layers:
        assert data.shape == _sample_data.SAMPLE_SHAPE
        assert kwargs["scale"] == pytest.approx((0.02, 0.02))  # µm
        meta = kwargs["metadata"]
        assert meta["pixel_size_nm"] == 20.0 and meta["structure"] == structure
        if kind == "labels":
            assert data.dtype == np.uint8
            assert set(np.unique(data)) <= {1, 2} and (data == 2).any()
        else:
            assert data.dtype == np.float32 and data.max() > 0


@pytest.mark.parametrize("structure", SAMPLES)
def test_samples_open_as_layers(structure):
    components = pytest.importorskip("napari.components")
    function, classes = SAMPLES[structure]
    viewer = components.ViewerModel()
    for data, kwargs, kind in function():
        viewer._add_layer_from_data(data, kwargs, kind)
    assert [layer.name for layer in viewer.layers] == [
        f"{structure} confocal",
        f"{structure} STED",
        *(f"{structure} {c}" for c in classes),
    ]
    for layer in viewer.layers:
        np.testing.assert_allclose(layer.scale, (0.02, 0.02))
        assert str(layer.units[0]) == "micrometer"
    labels = [layer for layer in viewer.layers if layer._type_string == "labels"]
    assert len(labels) == len(classes)
    for layer, class_name in zip(labels, classes, strict=True):
        assert layer.metadata["label_values"][class_name] == 2
        assert np.asarray(layer.data).max() == 2


def test_saureus_sample_opens():
    components = pytest.importorskip("napari.components")
    viewer = components.ViewerModel()
    for data, kwargs, kind in _sample_data.saureus_sample():
        viewer._add_layer_from_data(data, kwargs, kind)
    assert [layer.name for layer in viewer.layers] == [
        "saureus brightfield",
        "saureus SIM",
        "saureus bacteria",
    ]
    np.testing.assert_allclose(viewer.layers[0].scale, (0.04, 0.04))
