"""Jobs belong to their viewer: closing a panel or the viewer stops them; panels find them."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from napari_tagan._widgets._enhance import EnhanceWidget
from napari_tagan._widgets._jobs import running_job
from napari_tagan._widgets._train import TrainWidget
from napari_tagan.core import TAGANModel, load_model, preset_config, save_bundle

pytestmark = [pytest.mark.viewer, pytest.mark.usefixtures("private_settings", "one_torch_thread")]
WAIT_MS = 120_000


def _pair(viewer, name="a", seed=0):
    rng = np.random.default_rng(seed)
    sted = (rng.random((64, 64)) * 200).astype(np.uint16)
    viewer.add_image((sted * 0.5).astype(np.uint16), name=f"{name} confocal")
    viewer.add_image(sted, name=f"{name} STED")
    viewer.add_labels((sted > 100).astype(np.uint8) + 1, name=f"{name} rings")


def _endless(widget, output):
    widget.to_enhance.value = False
    widget.filters.value = 4
    widget.iterations.value = 1_000_000
    widget.batch_size.value = 1
    widget.crop.value = 32
    widget.device.value = "cpu"
    widget.output.value = str(output)
    widget.preview_every.value = 1000
    widget.checkpoint_every.value = 1_000_000


def _started(qtbot, viewer, widget, tmp_path):
    _endless(widget, tmp_path / "runs")
    job = widget.train()
    assert job is not None
    qtbot.waitUntil(
        lambda: len(widget.history.iterations) >= 2 or not job.running, timeout=WAIT_MS
    )
    assert job.running, widget.status.value
    return job


def test_closing_the_panel_stops_training_and_keeps_the_model(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    _pair(viewer)
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Train")
    job = _started(qtbot, viewer, widget, tmp_path)
    viewer.window.remove_dock_widget(widget.native)  # what the panel's close button does
    assert job.stop_requested.is_set()
    qtbot.waitUntil(lambda: not job.running, timeout=WAIT_MS)
    latest = widget.run_dir / "latest.tagan"
    assert 2 <= load_model(latest).provenance.iterations < 1_000_000
    assert running_job(viewer, "train") is None


def test_closing_the_viewer_stops_training_within_seconds(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    _pair(viewer)
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Train")
    job = _started(qtbot, viewer, widget, tmp_path)
    run_dir = widget.run_dir
    start = time.perf_counter()
    viewer.close()  # waits for the job to stop (one iteration) and save
    waited = time.perf_counter() - start
    print(f"viewer closed {waited:.2f} s after the request")
    assert job.done.is_set() and waited < 30
    assert load_model(run_dir / "latest.tagan").provenance.iterations >= 2


def test_a_reopened_panel_finds_and_stops_the_running_job(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    _pair(viewer)
    first = TrainWidget(viewer)
    job = _started(qtbot, viewer, first, tmp_path)
    again = TrainWidget(viewer)  # e.g. the panel opened again from the menu
    assert again.running and again.stop_button.enabled and not again.train_button.enabled
    seen = len(again.history.iterations)
    qtbot.waitUntil(lambda: len(again.history.iterations) > seen, timeout=WAIT_MS)
    again.stop_button.clicked.emit()
    qtbot.waitUntil(lambda: not job.running, timeout=WAIT_MS)
    assert again.summary is not None and again.summary.stopped_early
    assert again.train_button.enabled and not again.stop_button.enabled
    assert load_model(again.summary.latest).provenance.iterations == again.summary.iterations


def test_closing_the_enhance_panel_stops_its_job(make_napari_viewer, qtbot, tmp_path):
    torch.manual_seed(0)
    model = TAGANModel.from_config(preset_config("axons", ngf=4, nsf=4, ndf=4))
    bundle = save_bundle(model, tmp_path / "m.tagan")
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).random((64, 64)).astype(np.float32), name="c")
    widget = EnhanceWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Enhance")
    widget.use_model(bundle)
    widget.device.value = "cpu"
    widget.mode.value = "mc"
    widget.generations.value = 256
    job = widget.run()
    qtbot.waitUntil(lambda: job.fraction > 0, timeout=WAIT_MS)
    viewer.window.remove_dock_widget(widget.native)
    qtbot.waitUntil(lambda: not job.running, timeout=WAIT_MS)
    assert job.stop_requested.is_set() and job.fraction < 1
    assert "c synthetic STED" not in viewer.layers


def test_progress_shows_in_the_activity_dock_and_cancels_there(
    make_napari_viewer, qtbot, tmp_path
):
    from napari.utils import progress

    viewer = make_napari_viewer()
    _pair(viewer)
    widget = TrainWidget(viewer)
    job = _started(qtbot, viewer, widget, tmp_path)
    bars = [p for p in progress._all_instances if p.desc == "Train"]
    assert len(bars) == 1 and bars[0].total > 0
    bars[0].cancel()  # the activity dock's Cancel button
    qtbot.waitUntil(lambda: not job.running, timeout=WAIT_MS)
    assert widget.summary is not None and widget.summary.stopped_early
