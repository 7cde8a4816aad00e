"""The Enhance widget driven as a user would: pick layer and model, press Enhance, wait."""

from __future__ import annotations

import time

import dask.array as da
import numpy as np
import pytest
import torch
from napari.utils.notifications import notification_manager
from qtpy.QtCore import QTimer

from napari_tagan._widgets._common import RecentModels
from napari_tagan._widgets._enhance import EnhanceWidget, plan_planes
from napari_tagan.core import TAGANModel, load_model, predict, preset_config, save_bundle

from conftest import calibrated

pytestmark = [pytest.mark.viewer, pytest.mark.usefixtures("private_settings", "one_torch_thread")]
WAIT_MS = 60_000


def _model(preset="axons", seed=0):
    torch.manual_seed(seed)
    return calibrated(TAGANModel.from_config(preset_config(preset, ngf=4, nsf=4, ndf=4)))


def _bundle(tmp_path, preset="axons"):
    return save_bundle(_model(preset), tmp_path / f"{preset}.tagan")


@pytest.fixture
def bundle(tmp_path):
    return _bundle(tmp_path)


@pytest.fixture
def confocal():
    rng = np.random.default_rng(0)
    return rng.gamma(2.0, 25.0, size=(64, 64)).astype(np.uint16)


def _run(qtbot, widget):
    worker = widget.run()
    assert worker is not None
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    return worker


def _reference(bundle, image, **kwargs):
    return predict(load_model(bundle), image, device="cpu", **kwargs)


def test_enhance_2d_image(make_napari_viewer, qtbot, bundle, confocal):
    viewer = make_napari_viewer()
    layer = viewer.add_image(confocal, name="cell", scale=(0.02, 0.02), translate=(5.0, 7.0))
    widget = EnhanceWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.image.value is layer
    widget.use_model(bundle)
    widget.device.value = "cpu"
    _run(qtbot, widget)

    sted = viewer.layers["cell synthetic STED"]
    seg = viewer.layers["cell segmentation"]
    assert "cell variability" not in viewer.layers  # deterministic: one generation
    assert sted.data.shape == (64, 64) and sted.data.dtype == np.float32
    assert type(seg).__name__ == "Labels" and seg.data.dtype == np.uint8
    for result in (sted, seg):
        np.testing.assert_allclose(result.scale, (0.02, 0.02))
        np.testing.assert_allclose(result.translate, (5.0, 7.0))
    ref = _reference(bundle, confocal, mode="eval")
    assert ref.synthetic_sted.std() > 1.0  # an image, not a constant
    np.testing.assert_allclose(sted.data, ref.synthetic_sted, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(seg.data, np.where(ref.segmentation[0] >= 0.5, 2, 1))
    assert set(np.unique(seg.data)) == {1, 2}
    meta = sted.metadata["tagan"]
    assert meta["preset"] == "axons" and meta["mode"] == "eval" and meta["generations"] == 1
    assert meta["model"] == str(bundle) and meta["device"] == "cpu"
    assert widget.progress.value == widget.progress.max
    # the model is remembered
    assert RecentModels().load()[0]["path"] == str(bundle)
    assert any(e and e["path"] == str(bundle) for e in widget.recent_box.choices)


def test_generations_give_variability_and_probabilities(
    make_napari_viewer, qtbot, bundle, confocal
):
    viewer = make_napari_viewer()
    viewer.add_image(confocal, name="cell")
    widget = EnhanceWidget(viewer)
    widget.use_model(bundle)
    widget.device.value = "cpu"
    widget.mode.value = "mc"
    assert widget.generations.enabled
    widget.generations.value = 3
    widget.seed.value = 5
    widget.segmentation.value = "probabilities"
    _run(qtbot, widget)

    ref = _reference(bundle, confocal, mode="mc", generations=3, seed=5)
    var = viewer.layers["cell variability"]
    prob = viewer.layers["cell segmentation"]
    assert type(prob).__name__ == "Image" and prob.data.dtype == np.float32
    np.testing.assert_allclose(var.data, ref.variability, rtol=1e-4, atol=1e-4)
    assert float(var.data.max()) > 0
    np.testing.assert_allclose(prob.data, ref.segmentation[0], atol=1e-5)
    np.testing.assert_allclose(
        viewer.layers["cell synthetic STED"].data, ref.synthetic_sted, rtol=1e-5, atol=1e-4
    )
    assert viewer.layers["cell synthetic STED"].metadata["tagan"]["generations"] == 3

    # Running again replaces the results instead of adding copies.
    n_layers = len(viewer.layers)
    _run(qtbot, widget)
    assert len(viewer.layers) == n_layers


def test_current_plane_and_whole_stack(make_napari_viewer, qtbot, bundle):
    rng = np.random.default_rng(1)
    stack = rng.gamma(2.0, 25.0, size=(3, 64, 64)).astype(np.float32)
    viewer = make_napari_viewer()
    viewer.add_image(stack, name="zs", scale=(0.5, 0.02, 0.02), translate=(1.0, 0.0, 0.0))
    widget = EnhanceWidget(viewer)
    widget.use_model(bundle)
    widget.device.value = "cpu"
    assert widget.scope.enabled
    viewer.dims.set_current_step(0, 2)  # world z = 1 + 2 * 0.5
    widget.scope.value = "plane"
    _run(qtbot, widget)
    plane = viewer.layers["zs synthetic STED"]
    assert plane.data.shape == (1, 64, 64)
    np.testing.assert_allclose(plane.scale, (0.5, 0.02, 0.02))
    np.testing.assert_allclose(plane.translate, (2.0, 0.0, 0.0))
    ref2 = _reference(bundle, stack[2])
    np.testing.assert_allclose(plane.data[0], ref2.synthetic_sted, rtol=1e-5, atol=1e-4)

    widget.scope.value = "stack"
    _run(qtbot, widget)
    whole = viewer.layers["zs synthetic STED"]
    assert whole.data.shape == (3, 64, 64)
    np.testing.assert_allclose(whole.translate, (1.0, 0.0, 0.0))
    np.testing.assert_allclose(whole.data[2], ref2.synthetic_sted, rtol=1e-5, atol=1e-4)
    seg = viewer.layers["zs segmentation"]
    assert seg.data.shape == (3, 64, 64)


def test_dask_stack_is_read_plane_by_plane(make_napari_viewer, qtbot, bundle):
    rng = np.random.default_rng(2)
    stack = rng.gamma(2.0, 25.0, size=(4, 64, 64)).astype(np.uint16)
    reads = []

    def load(block, block_info=None):
        reads.append(block_info[None]["array-location"][0])
        return block

    lazy = da.from_array(stack, chunks=(1, 64, 64)).map_blocks(load, dtype=stack.dtype)
    viewer = make_napari_viewer()
    layer = viewer.add_image(lazy, name="lazy")
    widget = EnhanceWidget(viewer)
    widget.image.value = layer
    widget.use_model(bundle)
    widget.device.value = "cpu"
    widget.scope.value = "stack"
    reads.clear()
    _run(qtbot, widget)
    out = viewer.layers["lazy synthetic STED"].data
    assert isinstance(out, np.ndarray) and out.shape == (4, 64, 64)
    # every plane read on its own, none read as part of a whole-stack load
    assert sorted(set(reads)) == [(0, 1), (1, 2), (2, 3), (3, 4)]
    np.testing.assert_allclose(
        out[3], _reference(bundle, stack[3]).synthetic_sted, rtol=1e-5, atol=1e-4
    )


def test_cancel_stops_a_running_job(make_napari_viewer, qtbot, bundle, confocal):
    viewer = make_napari_viewer()
    viewer.add_image(confocal, name="cell")
    widget = EnhanceWidget(viewer)
    widget.use_model(bundle)
    widget.device.value = "cpu"
    widget.mode.value = "mc"
    widget.generations.value = 256
    worker = widget.run()
    assert widget.cancel_button.enabled and not widget.run_button.enabled
    qtbot.waitUntil(lambda: widget.progress.value > 0, timeout=WAIT_MS)
    with qtbot.waitSignal(worker.worker.finished, timeout=WAIT_MS):
        widget.cancel()
    assert widget.progress.value == 0 and widget.status.value == "cancelled"
    assert "cell synthetic STED" not in viewer.layers
    assert widget.run_button.enabled and not widget.cancel_button.enabled


def test_errors_become_notifications(make_napari_viewer, qtbot, tmp_path, confocal):
    bad = tmp_path / "broken.tagan"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all")
    viewer = make_napari_viewer()
    viewer.add_image(confocal, name="cell")
    widget = EnhanceWidget(viewer)
    widget.use_model(bad)
    before = len(notification_manager.records)
    _run(qtbot, widget)
    messages = [str(n.message) for n in notification_manager.records[before:]]
    assert any("Enhance: broken.tagan" in m for m in messages), messages
    assert "cell synthetic STED" not in viewer.layers
    assert widget.run_button.enabled

    # a model that does not fit the image: also one clear message
    widget.use_model(_bundle(tmp_path, "synprot"))
    before = len(notification_manager.records)
    _run(qtbot, widget)
    messages = [str(n.message) for n in notification_manager.records[before:]]
    assert any("expects 2 channels" in m for m in messages), messages


def test_plan_planes():
    assert plan_planes((64, 64), 2, "plane").indices == [()]
    plan = plan_planes((2, 3, 8, 8), 2, "plane", (1, 5, 0, 0))
    assert plan.indices == [(1, 2)] and plan.out_lead == (1, 1) and plan.offset == (1, 2)
    plan = plan_planes((2, 3, 8, 8), 2, "stack")
    assert len(plan.indices) == 6 and plan.out_lead == (2, 3)
    plan = plan_planes((4, 2, 8, 8), 3, "plane", (3, 0, 0, 0))
    assert plan.indices == [(3,)] and plan.lead_shape == (4,)


def test_original_checkpoint_folder_with_epoch_and_preset(make_napari_viewer, qtbot, tmp_path):
    folder = tmp_path / "experiment"
    folder.mkdir()
    for epoch, seed in (("100", 1), ("200", 2)):
        model = _model("dendrites", seed)
        torch.save(model.generator.state_dict(), folder / f"{epoch}_net_G.pth")
        torch.save(model.segmenter.state_dict(), folder / f"{epoch}_net_S.pth")
    rng = np.random.default_rng(3)
    image = rng.gamma(2.0, 25.0, size=(64, 64)).astype(np.float32)
    viewer = make_napari_viewer()
    viewer.add_image(image, name="dend", scale=(0.015, 0.015))
    widget = EnhanceWidget(viewer)
    widget.model_path.value = str(folder)  # as the folder button does
    assert widget.epoch.enabled and list(widget.epoch.choices) == ["auto", "100", "200"]
    widget.epoch.value = "100"
    widget.preset.value = "dendrites"
    widget.device.value = "cpu"
    widget.tile.value = 32  # eval mode is tile-exact: same values as the whole image
    _run(qtbot, widget)

    ref = predict(load_model(folder, epoch="100", preset="dendrites"), image, device="cpu")
    other = predict(load_model(folder, epoch="200"), image, device="cpu")
    sted = viewer.layers["dend synthetic STED"]
    np.testing.assert_allclose(sted.data, ref.synthetic_sted, rtol=1e-5, atol=1e-4)
    assert not np.allclose(sted.data, other.synthetic_sted, atol=1e-3)
    for k, cls in enumerate(("rings", "fibers")):
        seg = viewer.layers[f"dend segmentation {cls}"]
        np.testing.assert_array_equal(seg.data, np.where(ref.segmentation[k] >= 0.5, 2, 1))
        assert seg.metadata["tagan"]["classes"] == [cls]
    meta = sted.metadata["tagan"]
    assert meta["model"] == str(folder) and meta["epoch"] == "100"
    assert meta["preset"] == "dendrites"
    assert RecentModels().load()[0] == {"path": str(folder), "epoch": "100", "preset": "dendrites"}

    # choosing the recent entry again restores folder, epoch and preset
    widget.use_model(tmp_path)  # something else
    widget.recent_box.value = RecentModels().load()[0]
    assert str(widget.model_path.value) == str(folder)
    assert widget.epoch.value == "100" and widget.preset.value == "dendrites"


def test_event_loop_stays_responsive_while_enhancing(make_napari_viewer, qtbot, bundle):
    rng = np.random.default_rng(4)
    stack = rng.gamma(2.0, 25.0, size=(24, 96, 96)).astype(np.float32)
    viewer = make_napari_viewer()
    viewer.add_image(stack, name="zs")
    widget = EnhanceWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.use_model(bundle)
    widget.device.value = "cpu"
    widget.mode.value = "mc"
    widget.generations.value = 4
    widget.scope.value = "stack"

    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    computed: list[float] = []  # when the progress bar reaches its end, just before the
    # worker returns; the result layers are added on the main thread after that moment
    widget.progress.changed.connect(
        lambda v: computed.append(time.perf_counter()) if v == widget.progress.max else None
    )
    timer.start()
    assert widget.run() is not None
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    timer.stop()
    t = np.array(ticks)
    before = t[t < computed[0]]
    computing = np.diff(np.append(before, computed[0]))
    adding = np.diff(t[len(before) - 1 :])
    assert viewer.layers["zs synthetic STED"].data.shape == (24, 96, 96)
    assert "zs variability" in viewer.layers and "zs segmentation" in viewer.layers
    print(
        f"event-loop gaps while enhancing: max {computing.max() * 1000:.0f} ms over "
        f"{len(computing)}; while adding the results: max {adding.max() * 1000:.0f} ms"
    )
    assert len(computing) > 20
    assert computing.max() < 0.1, f"longest event-loop stall {computing.max() * 1000:.0f} ms"


def test_jobs_keep_existing_objects_out_of_full_collections():
    """While a job runs, full collections walk only new objects; holds nest."""
    import gc

    from napari_tagan._widgets._common import hold_full_collections

    assert gc.get_freeze_count() == 0
    first = hold_full_collections()
    frozen = gc.get_freeze_count()
    assert frozen > 1000  # the interpreter's, napari's and torch's objects
    second = hold_full_collections()
    first()
    first()  # releasing twice does nothing
    assert gc.get_freeze_count() >= frozen  # still held by the second job
    second()
    assert gc.get_freeze_count() == 0


def test_bright_images_for_an_8bit_model_warn_once_per_job(make_napari_viewer, qtbot, tmp_path):
    """16-bit intensities and a legacy8 (original-style) model: one warning notification."""
    viewer = make_napari_viewer()
    rng = np.random.default_rng(9)
    viewer.add_image(rng.integers(300, 4000, size=(5, 40, 40)).astype(np.uint16), name="bright")
    widget = EnhanceWidget(viewer)
    widget.use_model(_bundle(tmp_path))  # the axons preset: legacy8, as the original
    widget.device.value = "cpu"
    widget.scope.value = "stack"
    before = len(notification_manager.records)
    _run(qtbot, widget)
    messages = [str(n.message) for n in notification_manager.records[before:]]
    clipped = [m for m in messages if "are above 255" in m]
    assert len(clipped) == 1, messages
    assert clipped[0].startswith("Enhance: 100% of the image's pixels")
    assert viewer.layers["bright synthetic STED"].data.shape == (5, 40, 40)


def test_mixed_precision_is_the_cores_bf16_result(
    make_napari_viewer, qtbot, bundle, confocal, monkeypatch
):
    import napari_tagan.core.device as device_module

    # Our own hardware query: the bf16 path on any CPU (emulated where it lacks bf16).
    monkeypatch.setattr(device_module, "cpu_has_native_bf16", lambda: True)
    viewer = make_napari_viewer()
    viewer.add_image(confocal, name="cell")
    widget = EnhanceWidget(viewer)
    widget.use_model(bundle)
    widget.device.value = "cpu"
    assert widget.precision.value == "fp32"
    widget.precision.value = "bf16"
    _run(qtbot, widget)
    sted = viewer.layers["cell synthetic STED"]
    assert sted.metadata["tagan"]["precision"] == "bf16"
    mixed = _reference(bundle, confocal, precision="bf16")
    exact = _reference(bundle, confocal)
    np.testing.assert_array_equal(sted.data, mixed.synthetic_sted)
    assert not np.array_equal(mixed.synthetic_sted, exact.synthetic_sted)  # bf16 did run
    np.testing.assert_allclose(mixed.synthetic_sted, exact.synthetic_sted, atol=0.05 * 255)
