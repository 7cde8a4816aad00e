"""The Train widget: a tiny run previews, reports, stops on request, resumes, hands over."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from napari.utils.notifications import notification_manager
from qtpy.QtCore import QTimer

from napari_tagan._sample_data import sample_layers
from napari_tagan._widgets._enhance import EnhanceWidget
from napari_tagan._widgets._train import TrainWidget
from napari_tagan._widgets._train_data import order_labels
from napari_tagan.core import TAGANModel, load_model, preset_config, read_bundle, save_bundle
from napari_tagan.core.training import LATEST

pytestmark = [pytest.mark.viewer, pytest.mark.usefixtures("private_settings", "one_torch_thread")]
WAIT_MS = 120_000


def _add_set(viewer, name, seed, scale=(0.02, 0.02)):
    rng = np.random.default_rng(seed)
    truth = rng.random((64, 64)) > 0.8
    sted = (truth * 120 + rng.poisson(10, (64, 64))).astype(np.uint16)
    confocal = (sted.astype(np.float32) * 0.3 + rng.poisson(20, (64, 64))).astype(np.uint16)
    labels = np.zeros((64, 64), np.uint8)
    labels[:40] = np.where(truth[:40], 2, 1)  # partly annotated
    viewer.add_image(confocal, name=f"{name} confocal", scale=scale)
    viewer.add_image(sted, name=f"{name} STED", scale=scale)
    viewer.add_labels(labels, name=f"{name} annotations", scale=scale)


def _tiny(widget, output, iterations):
    widget.preset.value = "axons"
    widget.filters.value = 4
    widget.iterations.value = iterations
    widget.batch_size.value = 2
    widget.crop.value = 32
    widget.device.value = "cpu"
    widget.output.value = str(output)
    widget.preview_every.value = 2
    widget.validate_every.value = 3
    widget.checkpoint_every.value = 1000


def test_tiny_training_run(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    _add_set(viewer, "a", 0)
    _add_set(viewer, "b", 1)
    enhance = EnhanceWidget(viewer)
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget)
    # the first set is recognised by its layer names
    row = widget.rows[0]
    assert row.confocal.value.name == "b confocal"
    assert row.sted.value.name == "b STED"
    assert [x.name for x in row.annotations.value] == ["b annotations"]
    second = widget.add_set()
    second.confocal.value = viewer.layers["a confocal"]
    second.sted.value = viewer.layers["a STED"]
    second.annotations.value = [viewer.layers["a annotations"]]
    widget.validation.value = 1  # set 2 held out
    _tiny(widget, tmp_path / "run", iterations=6)

    worker = widget.train()
    assert worker is not None and widget.stop_button.enabled
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)

    summary = widget.summary
    assert summary is not None and summary.iterations == 6 and not summary.stopped_early
    assert widget.history.iterations == [1, 2, 3, 4, 5, 6]
    assert {"G", "D", "S"} <= set(widget.history.losses)
    assert all(np.isfinite(widget.history.losses["G"]))
    assert [it for it, _ in widget.history.validation] == [0, 3, 6]
    assert "dice" in widget.history.validation[-1][1]
    losses, validation = widget.plot.panels  # what the docked plot shows
    assert {c.name for c in losses.curves} >= {"G", "D", "S"}
    assert len(losses.curves[0].x) == 6
    assert [c.name for c in validation.curves][:1] == ["dice"]
    preview = viewer.layers["b confocal training preview"]
    assert preview.data.shape == (64, 64) and preview.data.dtype == np.float32
    np.testing.assert_allclose(preview.scale, (0.02, 0.02))
    assert preview.metadata["tagan"]["iteration"] == 6
    assert widget.progress.value == widget.progress.max
    latest = widget.run_dir / LATEST  # a fresh folder named after the run
    assert widget.run_dir.parent == tmp_path / "run"
    assert widget.run_dir.name.startswith("axons-b-confocal-")
    assert summary.latest == latest
    model = load_model(latest)
    assert model.config.preset == "axons" and model.provenance.iterations == 6
    # handed to the Enhance widget
    assert str(enhance.model_path.value) == str(latest)


def test_stop_keeps_a_checkpoint_and_resume_continues(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    _add_set(viewer, "a", 0)
    widget = TrainWidget(viewer)
    widget.to_enhance.value = False
    _tiny(widget, tmp_path / "run", iterations=100_000)
    widget.train()
    qtbot.waitUntil(lambda: len(widget.history.iterations) >= 2, timeout=WAIT_MS)
    widget.stop()
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    stopped = widget.summary
    assert stopped.stopped_early and 2 <= stopped.iterations < 100_000
    model = load_model(stopped.latest)
    assert model.provenance.iterations == stopped.iterations

    # Resume continues the run that stopped, its loss curve included
    widget.iterations.value = stopped.iterations + 3
    widget.resume_button.clicked.emit()
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    assert widget.summary.iterations == stopped.iterations + 3
    assert widget.summary.latest == stopped.latest
    assert widget.history.iterations == list(range(1, stopped.iterations + 4))


def test_two_trainings_in_a_row_each_get_a_folder(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    _add_set(viewer, "a", 0)
    widget = TrainWidget(viewer)
    widget.to_enhance.value = False
    _tiny(widget, tmp_path / "runs", iterations=2)
    latest = []
    for _ in range(2):  # the output field untouched
        assert widget.train() is not None
        qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
        assert widget.summary is not None and widget.summary.iterations == 2
        latest.append(widget.summary.latest)
    assert latest[0] != latest[1] and all(p.parent.parent == tmp_path / "runs" for p in latest)
    assert all(load_model(p).provenance.iterations == 2 for p in latest)


def test_event_loop_stays_responsive_while_training(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    _add_set(viewer, "a", 0)
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.to_enhance.value = False
    _tiny(widget, tmp_path / "run", iterations=100_000)
    widget.preview_every.value = 5

    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    widget.train()
    qtbot.waitUntil(lambda: len(widget.history.iterations) >= 1, timeout=WAIT_MS)
    timer.start()
    qtbot.waitUntil(lambda: len(widget.history.iterations) >= 40, timeout=WAIT_MS)
    timer.stop()
    widget.stop()
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    gaps = np.diff(ticks)
    assert len(gaps) > 20
    print(f"event-loop gaps during training: max {gaps.max() * 1000:.0f} ms over {len(gaps)}")
    assert gaps.max() < 0.1, f"longest event-loop stall {gaps.max() * 1000:.0f} ms"


def test_fine_tune_the_enhance_widgets_model(make_napari_viewer, qtbot, tmp_path):
    torch.manual_seed(0)
    start = TAGANModel.from_config(preset_config("axons", ngf=4, nsf=4, ndf=4))
    bundle = save_bundle(start, tmp_path / "start.tagan")
    viewer = make_napari_viewer()
    _add_set(viewer, "a", 0)
    enhance = EnhanceWidget(viewer)
    enhance.use_model(bundle)
    widget = TrainWidget(viewer)
    _tiny(widget, tmp_path / "tuned", iterations=3)
    widget.start.value = "file"
    assert widget.model_path.enabled and not widget.preset.enabled
    widget.from_enhance.clicked.emit()
    assert str(widget.model_path.value) == str(bundle)
    widget.train()
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    assert widget.summary is not None and widget.summary.iterations == 3
    tuned = load_model(widget.summary.latest)
    assert tuned.config.ngf == 4 and tuned.provenance.iterations == 3
    changed = [
        not torch.equal(a, b)
        for a, b in zip(
            start.generator.state_dict().values(),
            tuned.generator.state_dict().values(),
            strict=True,
        )
    ]
    assert any(changed)  # trained from the file's weights, further
    assert str(enhance.model_path.value) == str(widget.summary.latest)  # handed back


def test_train_reports_bad_input(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    widget = TrainWidget(viewer)  # no layers at all
    before = len(notification_manager.records)
    assert widget.train() is None
    messages = [str(n.message) for n in notification_manager.records[before:]]
    assert any("Train: set 1: choose a confocal and a STED layer" in m for m in messages)
    assert widget.train_button.enabled and not widget.running


def test_per_class_layers_go_in_the_models_class_order():
    from napari.layers import Labels

    layers = [
        Labels(data, **kw)
        for data, kw, kind in sample_layers("dendrites", (64, 64))
        if kind == "labels"
    ]
    reversed_layers = layers[::-1]  # as a layer list shows them: the last added on top
    assert [x.name for x in order_labels(reversed_layers, ("rings", "fibers"))] == [
        "dendrites rings",
        "dendrites fibers",
    ]
    renamed = [
        Labels(x.data, name=f"cell annotations {c}")
        for x, c in zip(layers, ("rings", "fibers"), strict=True)
    ][::-1]
    assert [x.name for x in order_labels(renamed, ("rings", "fibers"))] == [
        "cell annotations rings",
        "cell annotations fibers",
    ]


def test_clipped_16_bit_data_warns_once_per_training(make_napari_viewer, qtbot, tmp_path):
    """Images, validation and every preview would each warn: the user sees it once."""
    viewer = make_napari_viewer()
    _add_set(viewer, "a", 0)
    _add_set(viewer, "b", 1)
    for layer in list(viewer.layers):
        if layer.name.endswith(("confocal", "STED")):
            layer.data = layer.data * 40  # 16-bit range for an 8-bit (legacy8) preset
    widget = TrainWidget(viewer)
    _tiny(widget, tmp_path / "run", iterations=4)
    widget.preview_every.value = 1
    second = widget.add_set()
    second.confocal.value = viewer.layers["a confocal"]
    second.sted.value = viewer.layers["a STED"]
    widget.validation.value = 1
    before = len(notification_manager.records)
    assert widget.train() is not None
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    assert widget.summary is not None and widget.summary.iterations == 4
    messages = [str(n.message) for n in notification_manager.records[before:]]
    clipped = [m for m in messages if "are above 255" in m]
    assert len(clipped) == 1, messages
    assert clipped[0].startswith("Train: ") and "normalization.kind=percentile" in clipped[0]


def test_mixed_precision_reaches_the_trainer(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    import napari_tagan.core.device as device_module

    # Our own hardware query, so that the bf16 path is taken on any CPU (emulated there).
    monkeypatch.setattr(device_module, "cpu_has_native_bf16", lambda: True)
    viewer = make_napari_viewer()
    _add_set(viewer, "a", 0)
    widget = TrainWidget(viewer)
    _tiny(widget, tmp_path / "run", iterations=2)
    assert widget.amp.value is False  # fp32 unless asked
    widget.amp.value = True
    assert widget.train() is not None
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    assert widget.summary is not None and widget.summary.iterations == 2
    state = read_bundle(widget.run_dir / LATEST).training_state
    assert state["amp_dtype"] == "bfloat16"


def test_live_training_without_a_segmenter_is_refused(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    _add_set(viewer, "a", 0)
    widget = TrainWidget(viewer)
    widget.to_enhance.value = False
    _tiny(widget, tmp_path / "runs", iterations=2)
    widget.preset.value = "live"
    widget.train()
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    assert "segmenter" in widget.status.value
    assert not list((tmp_path / "runs").rglob("*.tagan"))
