"""Writer round trips: what is saved reopens as the same layer, with its provenance."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from napari.components import ViewerModel
from napari.layers import Image, Labels
from npe2 import PluginManager

from napari_tagan._reader import read_layers
from napari_tagan._writer import write_image, write_labels
from napari_tagan.core.annotations import annotation_layer_kwargs


@pytest.fixture
def result_layer() -> Image:
    rng = np.random.default_rng(3)
    data = rng.random((40, 56), dtype=np.float32) * 200
    return Image(
        data,
        name="cell synthetic STED",
        scale=(0.015, 0.02),
        translate=(3.0, -1.5),
        units="µm",
        colormap="magma",
        metadata={
            "tagan": {
                "model": "/models/axons.tagan",
                "preset": "axons",
                "mode": "mc",
                "generations": np.int64(4),
                "device": "cpu",
                "stats": np.array([0.0, 255.0]),
            }
        },
    )


def test_image_round_trip_keeps_scale_translate_and_provenance(tmp_path, result_layer):
    path = tmp_path / "result.tif"
    (written,) = write_image(str(path), result_layer.data, result_layer._get_state())
    assert written == str(path)

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        description = json.loads(page.description)["napari_tagan"]
        assert page.tags["ResolutionUnit"].value == 3  # centimetre
        x_num, x_den = page.tags["XResolution"].value
        assert x_num / x_den == pytest.approx(1e4 / 0.02, rel=1e-6)
        y_num, y_den = page.tags["YResolution"].value
        assert y_num / y_den == pytest.approx(1e4 / 0.015, rel=1e-6)
    assert description["metadata"]["tagan"]["mode"] == "mc"
    assert description["metadata"]["tagan"]["generations"] == 4
    assert description["metadata"]["tagan"]["stats"] == [0.0, 255.0]

    ((data, meta, kind),) = read_layers(str(path))
    assert kind == "image"
    assert meta["name"] == "cell synthetic STED"
    np.testing.assert_array_equal(data, result_layer.data)
    assert data.dtype == np.float32
    np.testing.assert_allclose(meta["scale"], (0.015, 0.02))
    np.testing.assert_allclose(meta["translate"], (3.0, -1.5))
    assert meta["units"] == "µm"
    assert meta["colormap"] == "magma"
    assert meta["metadata"]["tagan"]["preset"] == "axons"


def test_labels_round_trip_with_classes(tmp_path):
    style = annotation_layer_kwargs("rings")
    data = np.zeros((3, 32, 32), dtype=np.int64)
    data[1, 4:10, 4:12] = 2
    data[1, 20:, :] = 1
    layer = Labels(data, name="cell annotations", scale=(0.5, 0.02, 0.02), **style)
    path = tmp_path / "labels"  # no suffix: the writer adds .tif
    (written,) = write_labels(str(path), layer.data, layer._get_state())
    assert written.endswith("labels.tif")
    with tifffile.TiffFile(written) as tif:
        assert tif.series[0].dtype == np.uint8
        assert tif.series[0].shape == (3, 32, 32)

    ((back, meta, kind),) = read_layers(written)
    assert kind == "labels" and meta["name"] == "cell annotations"
    np.testing.assert_array_equal(back, data)
    np.testing.assert_allclose(meta["scale"], (0.5, 0.02, 0.02))
    assert list(meta["features"]["class"]) == ["not annotated", "background", "rings"]
    assert meta["metadata"]["tagan"]["classes"] == ["rings"]


def test_labels_need_integers_and_failed_writes_leave_nothing(tmp_path):
    path = tmp_path / "bad.tif"
    with pytest.raises(ValueError, match="integers"):
        write_labels(str(path), np.zeros((4, 4), np.float32), {"name": "x"})
    assert list(tmp_path.iterdir()) == []


def test_scale_in_nanometres_is_saved_in_micrometres(tmp_path):
    layer = Image(np.ones((16, 16), np.uint16), scale=(20.0, 20.0), units="nm")
    (written,) = write_image(str(tmp_path / "nm.tif"), layer.data, layer._get_state())
    ((_, meta, _),) = read_layers(written)
    np.testing.assert_allclose(meta["scale"], (0.02, 0.02))


def test_large_label_values_keep_a_wide_dtype(tmp_path):
    data = np.array([[0, 70000], [1, 2]], dtype=np.int64)
    (written,) = write_labels(str(tmp_path / "wide.tif"), data, {"name": "wide"})
    ((back, _, _),) = read_layers(written)
    assert back.dtype == np.uint32
    np.testing.assert_array_equal(back, data)


def test_napari_saves_through_the_plugin(tmp_path, result_layer):
    PluginManager.instance().discover()
    viewer = ViewerModel()
    viewer.add_layer(result_layer)
    labels = viewer.add_labels(
        np.ones((40, 56), np.uint8), name="cell annotations", scale=(0.015, 0.02)
    )
    image_path = tmp_path / "sted.tif"
    labels_path = tmp_path / "labels.tif"
    viewer.layers.selection = {result_layer}
    assert viewer.layers.save(str(image_path), selected=True, plugin="napari-tagan") == [
        str(image_path)
    ]
    viewer.layers.selection = {labels}
    saved = viewer.layers.save(str(labels_path), selected=True, plugin="napari-tagan")
    assert saved == [str(labels_path)]

    reopened = ViewerModel()
    (sted,) = reopened.open(str(image_path), plugin="napari-tagan")
    assert sted.name == "cell synthetic STED"
    assert sted.metadata["tagan"]["model"] == "/models/axons.tagan"
    np.testing.assert_allclose(sted.translate, (3.0, -1.5))
    (back,) = reopened.open(str(labels_path), plugin="napari-tagan")
    assert type(back).__name__ == "Labels"
    np.testing.assert_allclose(back.scale, (0.015, 0.02))
