"""Tiled prediction: plans, measured receptive fields, tile-exactness, modes and inputs."""

from __future__ import annotations

import os
import warnings

import dask.array as da
import numpy as np
import pytest
import torch
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_tagan.core import InputError, predict
from napari_tagan.core.backends import onnx_available
from napari_tagan.core.networks import build_generator, build_segmenter
from napari_tagan.core.tiling import (
    blend_weights,
    choose_tile,
    default_halo,
    measure_receptive_field,
    padded_index,
    read_window,
    receptive_field,
    tile_plan,
)

from conftest import calibrated, tiny_model


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    # ONNX exports and measured receptive fields go to a per-session folder.
    monkeypatch.setenv("NAPARI_TAGAN_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="module")
def model():
    return calibrated(tiny_model("axons"))


def _analytic_radius(net: torch.nn.Module) -> int:
    """Receptive-field radius from the layer list (input pixels), for comparison."""
    radius, jump = 0, 1
    for m in net.modules():
        if isinstance(m, torch.nn.ReflectionPad2d):
            continue
        if isinstance(m, torch.nn.Conv2d):
            radius += (m.kernel_size[0] // 2) * jump
            jump *= m.stride[0]
        elif isinstance(m, torch.nn.ConvTranspose2d):
            jump //= m.stride[0]
            radius += -(-(m.kernel_size[0] // 2) // 1) * jump + (jump if m.stride[0] > 1 else 0)
    return radius


def test_measured_receptive_fields_match_the_architecture():
    g = receptive_field("resnet_9blocks", "generator")
    s = receptive_field("resnet_6blocks", "segmenter")
    # 9 blocks × 2 convs × 4 px at quarter resolution, plus encoder/decoder: ~82-84.
    assert 80 <= g <= 88 and 56 <= s <= 64
    assert g - s == 3 * 2 * 4  # three more residual blocks
    assert receptive_field("unet_128", "segmenter") is None
    assert default_halo("resnet_9blocks") % 4 == 0 and default_halo("resnet_9blocks") >= g
    assert default_halo("unet_128", "segmenter") % 128 == 0
    # Depth, not width, sets it: a wider replica measures the same.
    wide = build_segmenter("resnet_6blocks", 1, 1, nsf=6, norm="batch").eval()
    assert measure_receptive_field(wide, 4) == s
    assert abs(_analytic_radius(build_generator("resnet_9blocks", 1, 1, ngf=2)) - g) <= 4


@given(
    h=st.integers(1, 300),
    w=st.integers(1, 300),
    tile=st.integers(1, 128),
    halo=st.integers(0, 40),
)
@settings(max_examples=60, deadline=None)
def test_tile_cores_partition_the_padded_image(h, w, tile, halo):
    shape = (-(-h // 4) * 4, -(-w // 4) * 4)
    tiles = tile_plan(shape, tile, halo, 4, 8)
    cover = np.zeros(shape, int)
    for t in tiles:
        y0, y1, x0, x1 = t.window
        cy0, cy1, cx0, cx1 = t.core
        assert y0 % 4 == 0 and x0 % 4 == 0 and (y1 - y0) % 4 == 0 and (x1 - x0) % 4 == 0
        assert y0 <= cy0 < cy1 <= y1 and x0 <= cx0 < cx1 <= x1
        assert min(y1 - y0, x1 - x0) >= min(8, *shape)
        cover[cy0:cy1, cx0:cx1] += 1
    assert (cover == 1).all()


@given(
    h=st.integers(1, 90),
    w=st.integers(1, 90),
    tile=st.integers(1, 40),
    halo=st.integers(0, 40),
    multiple=st.sampled_from([1, 4, 8, 16]),
    min_window=st.integers(1, 24),
)
@settings(max_examples=80, deadline=None)
def test_blend_weights_sum_to_one_across_overlaps(h, w, tile, halo, multiple, min_window):
    shape = (-(-h // multiple) * multiple, -(-w // multiple) * multiple)
    total = np.zeros(shape)
    for t in tile_plan(shape, tile, halo, multiple, min_window):
        y0, y1, x0, x1 = t.window
        weights = blend_weights(t)
        assert weights.shape == t.window_shape and weights.min() >= 0 and weights.max() <= 1
        cy0, cy1, cx0, cx1 = t.core
        ramps = np.array(t.ramps)
        assert (ramps <= max(halo, 0) + multiple).all()
        # weight one at the core's pixels away from the ramps
        inner = weights[
            cy0 + t.ramps[0] - y0 : cy1 - t.ramps[1] - y0,
            cx0 + t.ramps[2] - x0 : cx1 - t.ramps[3] - x0,
        ]
        assert (inner == 1).all()
        total[y0:y1, x0:x1] += weights
    np.testing.assert_allclose(total, 1.0, atol=1e-6)


def test_blend_weights_of_the_unet_default():
    # unet_128: halo 64 rounds up to the 128 stride, tiles of 128 → triple overlaps.
    shape = (512, 384)
    tiles = tile_plan(shape, 128, 64, 128)
    total = np.zeros(shape)
    for t in tiles:
        y0, y1, x0, x1 = t.window
        total[y0:y1, x0:x1] += blend_weights(t)
    np.testing.assert_allclose(total, 1.0, atol=1e-6)
    # ramps are 128 wide (half the smaller core each side), centred on the core edges
    assert {r for t in tiles for r in t.ramps} == {0, 64}


def test_padded_reads_equal_torch_padding():
    rng = np.random.default_rng(1)
    image = rng.normal(size=(2, 13, 6)).astype(np.float32)
    for mode in ("reflect", "replicate"):
        whole = torch.nn.functional.pad(torch.from_numpy(image)[None], (0, 2, 0, 3), mode=mode)
        np.testing.assert_array_equal(
            read_window(image, (4, 16, 0, 8), (13, 6), mode), whole[0, :, 4:16, :8].numpy()
        )
        lazy = da.from_array(image, chunks=(1, 5, 5))
        np.testing.assert_array_equal(
            read_window(lazy, (8, 16, 4, 8), (13, 6), mode), whole[0, :, 8:16, 4:8].numpy()
        )
    assert padded_index(3, 7, 5, "reflect").tolist() == [3, 4, 3, 2]


def test_choose_tile_fits_the_budget():
    assert choose_tile((256, 256), halo=84, multiple=4, bytes_per_pixel=100, budget=1e9) >= 256
    side = choose_tile((4096, 4096), halo=84, multiple=4, bytes_per_pixel=1000, budget=1e9)
    assert side % 4 == 0 and (side + 168) ** 2 * 1000 <= 1e9 < (side + 172) ** 2 * 1000


def _network_units(result):
    # legacy8 outputs: 127.5 intensity units per network unit
    return result.synthetic_sted / 127.5 - 1.0


@given(
    h=st.integers(1, 110),
    w=st.integers(1, 110),
    tile=st.integers(20, 64),
    extra_halo=st.integers(0, 12),
)
@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_tiled_equals_whole_image(model, h, w, tile, extra_halo):
    rng = np.random.default_rng(h * 1000 + w)
    # within legacy8's 0-255 (a few bright pixels in a tiny image are > 1 %: a warning)
    image = np.minimum(rng.gamma(2.0, 30.0, size=(h, w)), 255.0).astype(np.float32)
    whole = predict(model, image, backend="eager")
    halo = default_halo("resnet_9blocks") + extra_halo
    tiled = predict(model, image, tile=tile, halo=halo, backend="eager")
    assert tiled.synthetic_sted.shape == (h, w) and tiled.segmentation.shape == (1, h, w)
    assert np.abs(_network_units(tiled) - _network_units(whole)).max() <= 1e-4
    assert np.abs(tiled.segmentation - whole.segmentation).max() <= 1e-4 / 2


def test_tiled_equals_whole_for_strips_and_tiny_images(model):
    rng = np.random.default_rng(5)
    cases = [((1, 300), 24), ((300, 1), 64), ((2, 3), 8), ((7, 257), 40), ((161, 9), 20)]
    for shape, tile in cases:
        image = rng.gamma(2.0, 30.0, size=shape).astype(np.float32)
        whole = predict(model, image, backend="eager")
        tiled = predict(model, image, tile=tile, backend="eager")
        assert tiled.synthetic_sted.shape == shape
        assert np.abs(_network_units(tiled) - _network_units(whole)).max() <= 1e-4
        np.testing.assert_allclose(tiled.segmentation, whole.segmentation, atol=5e-5)


def test_a_too_small_halo_is_not_exact(model):
    image = np.random.default_rng(2).gamma(2.0, 30.0, size=(160, 160)).astype(np.float32)
    whole = predict(model, image, backend="eager")
    tiled = predict(model, image, tile=40, halo=8, backend="eager")
    assert np.abs(_network_units(tiled) - _network_units(whole)).max() > 1e-2
    # the model is sensitive: the output varies well beyond the exactness tolerance
    assert _network_units(whole).std() > 1e-2


def test_memory_budget_picks_tiles_and_memmaps(model):
    image = np.random.default_rng(3).gamma(2.0, 30.0, size=(200, 230)).astype(np.float32)
    whole = predict(model, image, backend="eager")
    assert whole.metadata["tile"]["generator"] >= 232 and whole.metadata["halo"]["generator"] == 0
    small = predict(model, image, memory_budget=4_000_000, backend="eager", on_disk=True)
    assert small.metadata["tile"]["generator"] < 200
    base = small.synthetic_sted
    while not isinstance(base, np.memmap) and base.base is not None:
        base = base.base
    assert isinstance(base, np.memmap)
    np.testing.assert_allclose(small.synthetic_sted, whole.synthetic_sted, atol=1e-2)


def test_whole_image_when_it_fits_the_whole_image_budget(model):
    image = np.random.default_rng(9).gamma(2.0, 30.0, size=(120, 100)).astype(np.float32)
    # a budget (bytes) set by the caller bounds both the tiles and the whole image
    r = predict(model, image, memory_budget=1_000_000, backend="eager")
    assert r.metadata["tile"]["generator"] < 100 and r.metadata["halo"]["generator"] == 84
    assert predict(model, image, backend="eager").metadata["halo"]["generator"] == 0


def test_progress_per_tile_and_cancel(model):
    image = np.full((96, 96), 40, np.uint16)
    seen = []
    predict(model, image, tile=32, backend="eager", progress=lambda d, t: seen.append((d, t)))
    assert seen == [(i + 1, 18) for i in range(18)]  # 9 tiles for G, 9 for S
    calls = []

    def stop_after_four():
        calls.append(1)
        return len(calls) > 4

    with pytest.raises(InterruptedError):
        predict(model, image, tile=32, backend="eager", should_stop=stop_after_four)
    assert len(calls) == 5


def test_mc_tiled_reproducible_and_zero_std_without_dropout(model):
    image = np.random.default_rng(4).gamma(2.0, 30.0, size=(80, 70)).astype(np.float32)
    a = predict(model, image, mode="mc", generations=3, seed=7, tile=32)
    b = predict(model, image, mode="mc", generations=3, seed=7, tile=32)
    c = predict(model, image, mode="mc", generations=3, seed=8, tile=32)
    np.testing.assert_array_equal(a.synthetic_sted, b.synthetic_sted)
    np.testing.assert_array_equal(a.variability, b.variability)
    assert not np.array_equal(a.synthetic_sted, c.synthetic_sted)
    assert a.variability.max() > 0
    r = predict(tiny_model("axons", dropout=False), image, mode="mc", generations=3, tile=32)
    assert r.variability.max() == 0.0


def test_original_mode_is_whole_image_only(model):
    image = np.full((40, 40), 30.0, np.float32)
    with pytest.raises(InputError, match="cannot be tiled"):
        predict(model, image, mode="original", tile=16)
    r = predict(model, image, mode="original", memory_budget=1000)
    assert r.metadata["tile"]["generator"] >= 40


def test_stacks_dask_and_multichannel(model):
    rng = np.random.default_rng(6)
    stack = rng.gamma(2.0, 30.0, size=(3, 50, 40)).astype(np.float32)
    r = predict(model, stack, axes="ZYX", tile=24, backend="eager")
    assert r.synthetic_sted.shape == stack.shape and r.segmentation.shape == (3, 1, 50, 40)
    one = predict(model, stack[1], backend="eager")
    np.testing.assert_allclose(r.synthetic_sted[1], one.synthetic_sted, atol=1e-2)
    lazy = predict(model, da.from_array(stack, chunks=(1, 16, 16)), axes="ZYX", tile=24)
    np.testing.assert_allclose(lazy.synthetic_sted, r.synthetic_sted, atol=1e-2)
    on_disk = zarr.array(stack, chunks=(1, 16, 16))
    from_zarr = predict(model, on_disk, axes="ZYX", tile=24, backend="eager")
    np.testing.assert_allclose(from_zarr.synthetic_sted, r.synthetic_sted, atol=1e-2)
    with pytest.raises(InputError, match="does not match axes"):
        predict(model, stack, axes="ZCYX")
    synprot = tiny_model("synprot").eval()
    two = rng.gamma(2.0, 30.0, size=(2, 60, 52)).astype(np.float32)
    whole = predict(synprot, two, backend="eager")
    tiled = predict(synprot, two, tile=16, backend="eager")
    assert tiled.synthetic_sted.shape == two.shape
    np.testing.assert_allclose(tiled.synthetic_sted, whole.synthetic_sted, atol=1e-2)
    four = predict(synprot, np.stack([two, two]), axes="ZCYX", tile=16)
    assert four.synthetic_sted.shape == (2, 2, 60, 52)
    assert four.segmentation.shape == (2, 2, 60, 52)
    with pytest.raises(InputError, match="expects 2 channels"):
        predict(synprot, stack, axes="ZYX")


def test_lazy_nan_is_reported():
    image = np.ones((40, 40), np.float32)
    image[30, 3] = np.nan
    with pytest.raises(InputError, match="NaN or infinite"):
        predict(tiny_model("axons"), da.from_array(image, chunks=16), tile=16)


def test_unet_segmenter_tiles_blend_without_seams():
    live = tiny_model("live").eval()
    image = np.random.default_rng(7).gamma(2.0, 30.0, size=(300, 270)).astype(np.float32)
    whole = predict(live, image, backend="eager")
    tiled = predict(live, image, tile=128, backend="eager")
    # G (ResNet) stays exact; S (U-Net) is blended: close, not equal.
    np.testing.assert_allclose(tiled.synthetic_sted, whole.synthetic_sted, atol=1e-2)
    assert tiled.metadata["halo"]["segmenter"] == 128
    assert np.isfinite(tiled.segmentation).all()
    assert np.abs(tiled.segmentation - whole.segmentation).mean() < 0.05


@pytest.mark.skipif(not onnx_available(), reason="onnxruntime not installed")
def test_onnx_backend_matches_eager(model):
    image = np.random.default_rng(8).gamma(2.0, 30.0, size=(70, 90)).astype(np.float32)
    eager = predict(model, image, backend="eager")
    onnx = predict(model, image, backend="onnx", tile=32)
    assert onnx.metadata["backend"] == "onnx"
    assert np.abs(onnx.synthetic_sted - eager.synthetic_sted).max() <= 1e-4 * 127.5
    assert np.abs(onnx.segmentation - eager.segmentation).max() <= 1e-4
    # Once exported, "auto" picks it even for small images.
    assert predict(model, image).metadata["backend"] == "onnx"
    with pytest.raises(InputError, match="onnx backend"):
        predict(model, image, backend="onnx", mode="mc", generations=2)


@pytest.mark.filterwarnings("ignore:bf16 on this CPU is emulated")  # CPUs without bf16
def test_bf16_on_the_cpu_runs_channels_last_and_stays_close(model):
    image = np.random.default_rng(8).gamma(2.0, 30.0, size=(70, 90)).astype(np.float32)
    exact = predict(model, image, backend="eager")
    mixed = predict(model, image, precision="bf16")
    assert mixed.metadata["backend"] == "channels_last"
    assert mixed.metadata["precision"] == "bf16"
    diff = np.abs(mixed.synthetic_sted - exact.synthetic_sted) / 127.5  # network units
    assert 0 < diff.max() <= 0.1
    assert np.abs(mixed.segmentation - exact.segmentation).max() <= 0.1
    # The networks are handed back in their own memory format.
    conv = next(m for m in model.generator.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous()
    with pytest.raises(InputError, match="onnx backend"):
        predict(model, image, backend="onnx", precision="bf16")


def test_bf16_on_a_cpu_without_bf16_hardware_warns(model, monkeypatch):
    import napari_tagan.core.backends as backends
    from napari_tagan.core.device import AmpUnavailableWarning

    image = np.random.default_rng(8).gamma(2.0, 30.0, size=(40, 40)).astype(np.float32)
    monkeypatch.setattr(backends, "cpu_has_native_bf16", lambda: False)
    with pytest.warns(AmpUnavailableWarning, match="emulated") as record:
        result = predict(model, image, precision="bf16")
    assert len(record) == 1 and record[0].filename == __file__  # points at the caller
    assert result.metadata["precision"] == "bf16"  # asked for, so it still runs
    monkeypatch.setattr(backends, "cpu_has_native_bf16", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        predict(model, image, precision="bf16")


def _resident_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _conv_net(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 48, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(48, 48, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(48, 1, 3, padding=1),
    ).eval()


@pytest.mark.skipif(not onnx_available(), reason="onnxruntime not installed")
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_onnx_sessions_share_one_arena_and_give_it_back():
    """G's activation memory is reused by S, and given back after a pass.

    With an arena per session both stay allocated; without any arena every run faults
    its memory in again.
    """
    from napari_tagan.core.backends import make_runner

    cpu = torch.device("cpu")
    x = np.random.default_rng(0).random((1, 1, 1024, 1024), dtype=np.float32)
    activations = 2 * 48 * x.size * 4  # two 48-channel maps: 400 MB
    baseline = _resident_bytes()
    g_net, s_net = _conv_net(0), _conv_net(1)
    g, s = (make_runner(n, backend="onnx", device=cpu, stride=1) for n in (g_net, s_net))
    y = g(x)
    grown = _resident_bytes()
    z = s(y)  # the second network runs in the memory the first one left
    assert _resident_bytes() - grown < activations / 8
    s(y[:, :, :16, :16], release=True)
    held = _resident_bytes() - baseline
    assert held < activations / 4, f"{held / 1e6:.0f} MB still held after release"
    with torch.inference_mode():
        expected = s_net(g_net(torch.from_numpy(x))).numpy()
    assert np.abs(z - expected).max() <= 1e-4


@pytest.mark.skipif(not onnx_available(), reason="onnxruntime not installed")
def test_prediction_gives_memory_back_after_passes_with_large_windows(model, monkeypatch):
    import importlib

    engine = importlib.import_module("napari_tagan.core.prediction.engine")
    image = np.random.default_rng(9).gamma(2.0, 30.0, size=(70, 90)).astype(np.float32)
    kept = predict(model, image, backend="onnx", tile=32)
    monkeypatch.setattr(engine, "RELEASE_ARENA_BYTES", 1)  # every pass counts as large
    released = predict(model, image, backend="onnx", tile=32)
    np.testing.assert_array_equal(released.synthetic_sted, kept.synthetic_sted)
    np.testing.assert_array_equal(released.segmentation, kept.segmentation)


def test_largest_windows_run_first(model, monkeypatch):
    """An arena that grows with each new largest window keeps every size it has seen."""
    import importlib

    engine = importlib.import_module("napari_tagan.core.prediction.engine")
    real = engine.make_runner
    seen: dict[str, list[int]] = {}

    def recording(net, **kwargs):
        run = real(net, **kwargs)
        sizes = seen.setdefault("G" if net is model.generator else "S", [])

        def record(x, release=False):
            if not release:
                sizes.append(x.shape[-2] * x.shape[-1])
            return run(x, release=release)

        return record

    monkeypatch.setattr(engine, "make_runner", recording)
    image = np.random.default_rng(4).gamma(2.0, 20.0, size=(150, 130)).astype(np.float32)
    tiled = predict(model, image, backend="eager", tile=48)
    for sizes in seen.values():
        assert len(sizes) > 4 and len(set(sizes)) > 1
        assert sizes == sorted(sizes, reverse=True)
    whole = predict(model, image, backend="eager")
    assert np.abs(_network_units(tiled) - _network_units(whole)).max() <= 1e-4


def test_bad_arguments(model):
    image = np.ones((16, 16), np.float32)
    with pytest.raises(InputError, match="unknown backend"):
        predict(model, image, backend="tpu")
    with pytest.raises(InputError, match="fp16 needs a GPU"):
        predict(model, image, precision="fp16", device="cpu")
    with pytest.raises(InputError, match="unknown axes"):
        predict(model, image, axes="XYZ")


class _MemoryLimited(torch.nn.Module):
    """A network on a device that runs out of memory above ``max_pixels`` per input."""

    def __init__(self, net: torch.nn.Module, max_pixels: int) -> None:
        super().__init__()
        self.net = net
        self.max_pixels = max_pixels
        self.sides: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sides.append(max(x.shape[-2:]))
        if x.shape[-2] * x.shape[-1] > self.max_pixels:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.net(x)


def test_out_of_memory_retries_with_smaller_tiles(model):
    import copy

    image = np.random.default_rng(8).gamma(2.0, 30.0, size=(360, 360)).astype(np.float32)
    whole = predict(model, image, backend="eager")
    limited = copy.deepcopy(model)
    # windows are tile + 2 halos (84 px): 240² holds a 48-pixel tile, not a 92-pixel one
    limited.generator = _MemoryLimited(limited.generator, max_pixels=240 * 240)
    with pytest.warns(RuntimeWarning, match="out of memory on cpu with"):
        result = predict(limited, image, backend="eager", halo=default_halo("resnet_9blocks"))
    sides = limited.generator.sides
    assert sides[0] >= 360 and sides[-1] <= 240
    assert np.abs(_network_units(result) - _network_units(whole)).max() <= 1e-4
    np.testing.assert_allclose(result.segmentation, whole.segmentation, atol=5e-5)
    assert result.metadata["tile"]["generator"] < 92

    # a device too small for the smallest useful tile: one clear error, not a loop
    tiny = copy.deepcopy(model)
    tiny.generator = _MemoryLimited(tiny.generator, max_pixels=4)
    with pytest.warns(RuntimeWarning), pytest.raises(Exception, match="out of memory on cpu even"):
        predict(tiny, image, backend="eager")
