"""What a biologist sees before pressing anything: tooltips, guessed layers, saving, defaults."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from napari_tagan._reader import napari_get_reader
from napari_tagan._sample_data import sample_layers
from napari_tagan._widgets._common import value_widgets
from napari_tagan._widgets._enhance import EnhanceWidget
from napari_tagan._widgets._train import TrainWidget
from napari_tagan._widgets._train_settings import QUICK, defaults_for
from napari_tagan.core import TAGANModel, preset_config, save_bundle

pytestmark = [pytest.mark.viewer, pytest.mark.usefixtures("private_settings", "one_torch_thread")]


def _sample(viewer, key="axons"):
    for data, kwargs, kind in sample_layers(key, (64, 64)):
        getattr(viewer, f"add_{kind}")(data, **kwargs)


@pytest.mark.parametrize("panel", [TrainWidget, EnhanceWidget])
def test_every_control_has_a_tooltip(make_napari_viewer, panel):
    widget = panel(make_napari_viewer())
    controls = value_widgets(widget.body)
    assert len(controls) > 15
    missing = [w.label or getattr(w, "text", "") for w in controls if not w.tooltip]
    assert not missing, f"controls without a tooltip: {missing}"


def test_advanced_settings_start_collapsed(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.advanced.native.isHidden()
    widget.advanced_toggle.value = True
    assert not widget.advanced.native.isHidden()


def test_guesses_prefer_inputs_and_never_results(make_napari_viewer):
    viewer = make_napari_viewer()
    _sample(viewer)
    enhance = EnhanceWidget(viewer)
    train = TrainWidget(viewer)
    assert enhance.image.value.name == "axons confocal"  # not the STED on top
    row = train.rows[0]
    assert (row.confocal.value.name, row.sted.value.name) == ("axons confocal", "axons STED")
    assert [x.name for x in row.annotations.value] == ["axons rings"]
    # results made from it are never guessed as ground truth or input
    viewer.add_labels(
        np.zeros((64, 64), np.uint8),
        name="axons confocal segmentation",
        metadata={"tagan": {"input_layer": "axons confocal"}},
    )
    viewer.add_image(np.zeros((64, 64), np.float32), name="axons confocal synthetic STED")
    assert [x.name for x in row.annotations.value] == ["axons rings"]
    assert enhance.image.value.name == "axons confocal"
    # a second set does not take the first set's layers
    assert train.add_set().confocal.value is None


def test_layers_arriving_later_are_guessed(make_napari_viewer):
    viewer = make_napari_viewer()
    train = TrainWidget(viewer)  # before any layer (and before any Labels layer)
    enhance = EnhanceWidget(viewer)
    _sample(viewer)
    row = train.rows[0]
    assert row.confocal.value.name == "axons confocal"
    assert [x.name for x in row.annotations.value] == ["axons rings"]
    assert enhance.image.value.name == "axons confocal"
    row.confocal.value = viewer.layers["axons STED"]  # the user's choice stays
    viewer.add_image(np.zeros((8, 8)), name="other")
    assert row.confocal.value.name == "axons STED"


def test_cpu_defaults_are_the_quick_settings(make_napari_viewer):
    widget = TrainWidget(make_napari_viewer())
    widget.device.value = "cpu"
    widget.preset.value = "dendrites"
    got = (widget.iterations.value, widget.batch_size.value, widget.crop.value)
    assert got == (QUICK["iterations"], QUICK["batch_size"], QUICK["crop_size"])
    assert widget.filters.value == QUICK["filters"]
    assert "min" in widget.estimate.value and "estimate" in widget.estimate.value
    gpu = defaults_for("axons", "cuda")
    assert (gpu.batch_size, gpu.crop_size, gpu.filters) == (8, 128, 64)  # the paper's


def test_settings_are_remembered(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    first = TrainWidget(viewer)
    first.iterations.value = 1234
    first.output.value = str(tmp_path / "runs")
    first._settings.save(first._remembered())
    again = TrainWidget(viewer)
    assert again.iterations.value == 1234 and str(again.output.value) == str(tmp_path / "runs")


def test_save_results_round_trips_pixel_size_and_labels(make_napari_viewer, qtbot, tmp_path):
    torch.manual_seed(0)
    bundle = save_bundle(
        TAGANModel.from_config(preset_config("axons", ngf=4, nsf=4, ndf=4)), tmp_path / "m.tagan"
    )
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    viewer.add_image(rng.gamma(2, 25, (48, 48)).astype(np.uint16), name="c", scale=(0.02, 0.02))
    widget = EnhanceWidget(viewer)
    widget.use_model(bundle)
    widget.device.value = "cpu"
    assert not widget.save_button.enabled
    widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert widget.save_button.enabled
    written = widget.save_results(tmp_path / "out")
    assert sorted(p.name for p in written) == ["c_segmentation.tif", "c_synthetic_STED.tif"]
    for path in written:
        data, kwargs, kind = napari_get_reader(str(path))(str(path))[0]
        original = viewer.layers[kwargs["name"]]
        assert kind == type(original).__name__.lower()
        np.testing.assert_allclose(kwargs["scale"], (0.02, 0.02), rtol=1e-6)
        np.testing.assert_array_equal(data, original.data)


def test_opening_enhance_and_deleting_a_layer_do_not_stall(make_napari_viewer):
    """Our code's share of two main-thread moments.

    napari's own share of a deletion (a full ``gc.collect()`` in its canvas) is printed,
    not asserted.
    """
    viewer = make_napari_viewer()
    _sample(viewer)
    start = time.perf_counter()
    enhance = EnhanceWidget(viewer)
    opened = time.perf_counter() - start
    train = TrainWidget(viewer)
    start = time.perf_counter()
    viewer.layers.remove("axons STED")
    deleted = time.perf_counter() - start
    start = time.perf_counter()
    enhance.reset_choices()
    train.reset_choices()
    ours = time.perf_counter() - start  # what the panels do when a layer comes or goes
    print(
        f"Enhance opened in {opened * 1000:.0f} ms; a layer deleted in {deleted * 1000:.0f} ms, "
        f"of which the panels' refresh {ours * 1000:.0f} ms"
    )
    assert opened < 0.5 and ours < 0.1  # margins for a machine shared by other jobs
