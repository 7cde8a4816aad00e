"""The Guide acquisition widget driven as a user would: propose, edit, export, predict."""

from __future__ import annotations

import numpy as np
import pytest

from napari_tagan._widgets._guide import GuideWidget
from napari_tagan.core import save_bundle
from napari_tagan.core.checkpoints import load_model
from napari_tagan.core.guide import predict_with_regions, read_regions

from conftest import tiny_model

pytestmark = [pytest.mark.viewer, pytest.mark.usefixtures("private_settings", "one_torch_thread")]
WAIT_MS = 60_000
SCALE, TRANSLATE = (0.02, 0.02), (5.0, 7.0)


@pytest.fixture
def confocal():
    return np.random.default_rng(0).gamma(2.0, 20.0, size=(40, 48)).astype(np.float32)


def _widget(make_napari_viewer, tmp_path, confocal, preset="axons"):
    viewer = make_napari_viewer()
    viewer.add_image(confocal, name="cell", scale=SCALE, translate=TRANSLATE)
    widget = GuideWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.model_path.value = str(save_bundle(tiny_model(preset), tmp_path / f"{preset}.tagan"))
    widget.device.value = "cpu"
    widget.generations.value = 2
    widget.block_um.value = 0.16
    widget.budget.value = 3
    return viewer, widget


def _propose(qtbot, widget):
    assert widget.propose() is not None
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    return widget.viewer.layers["cell STED regions"]


def test_propose_adds_an_editable_shapes_layer_and_a_table(
    make_napari_viewer, qtbot, tmp_path, confocal
):
    _, widget = _widget(make_napari_viewer, tmp_path, confocal)
    shapes = _propose(qtbot, widget)
    assert type(shapes).__name__ == "Shapes" and len(shapes.data) == 3
    assert set(shapes.shape_type) == {"rectangle"}
    np.testing.assert_allclose(shapes.scale, SCALE)
    np.testing.assert_allclose(shapes.translate, TRANSLATE)
    assert list(shapes.features["rank"]) == [1, 2, 3]
    assert shapes.features["score"].iloc[0] == 1.0
    assert {"present_rings", "confidence_rings"} <= set(shapes.features.columns)
    table = widget.table.value
    assert len(table["data"]) == 3 and "rings" in table["columns"]
    assert {row[table["columns"].index("rings")] for row in table["data"]} <= {
        "present",
        "absent",
    }

    shapes.selected_data = {1}
    shapes.remove_selected()  # the user drops a region: table and export follow
    assert len(widget.table.value["data"]) == 2
    path = widget.export(tmp_path / "regions.csv")
    regions = read_regions(path)
    assert len(regions.regions) == 2
    assert regions.pixel_size_um == SCALE
    assert regions.origin_um == pytest.approx((4.99, 6.99))  # the top-left pixel's edge
    first = regions.regions[0]
    assert regions.physical(first)[0] == pytest.approx(4.99 + first.y0 * 0.02)


def test_predict_with_regions_for_a_live_model(make_napari_viewer, qtbot, tmp_path, confocal):
    viewer, widget = _widget(make_napari_viewer, tmp_path, confocal, preset="live")
    sted = np.random.default_rng(1).gamma(2.0, 10.0, size=confocal.shape).astype(np.float32)
    viewer.add_image(sted, name="real STED", scale=SCALE, translate=TRANSLATE)
    widget.image.value = viewer.layers["cell"]
    _propose(qtbot, widget)
    widget.sted.value = viewer.layers["real STED"]
    assert widget.predict() is not None
    qtbot.waitUntil(lambda: "cell synthetic STED (from regions)" in viewer.layers, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    got = viewer.layers["cell synthetic STED (from regions)"]
    expected = predict_with_regions(
        load_model(widget.model_path.value), confocal, sted, widget.regions(), device="cpu"
    )
    np.testing.assert_allclose(got.data, expected.synthetic_sted, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(got.scale, SCALE)
