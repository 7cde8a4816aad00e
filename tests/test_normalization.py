"""Normalization rules (legacy8 exactly as the original), inverses and statistics."""

from __future__ import annotations

import contextlib
import warnings

import dask.array as da
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from napari_tagan.core.config import NormalizationSpec
from napari_tagan.core.normalization import (
    CLIPPED_WARNING_FRACTION,
    ClippingWarning,
    compute_stats,
    denormalize,
    legacy8,
    masks_to_target,
    normalize,
    target_to_probability,
)

LEGACY = NormalizationSpec(kind="legacy8")


def _rule(x):
    """The original pipeline, written out independently: clip, truncate, /255, to [-1, 1]."""
    out = []
    for v in np.asarray(x, dtype=np.float64).ravel():
        v = min(max(v, 0.0), 255.0)
        v = float(int(v))  # truncation
        out.append((v / 255.0 - 0.5) / 0.5)
    return np.array(out).reshape(np.shape(x))


@pytest.mark.parametrize(
    "values,dtype",
    [
        ([0, 1, 127, 128, 254, 255], np.uint8),
        ([0, 40, 255, 256, 260, 1000, 65535], np.uint16),
        ([-5.0, -0.5, 0.0, 0.99, 1.0, 12.7, 254.999, 255.0, 255.5, 1e6], np.float32),
        ([-3, 100, 300], np.int32),
        ([0.2, 17.9], np.float64),
    ],
)
def test_legacy8_matches_the_original_rule(values, dtype):
    img = np.array(values, dtype=dtype).reshape(1, 1, -1)
    clipped = (np.asarray(values) > 255).mean() > CLIPPED_WARNING_FRACTION
    with pytest.warns(ClippingWarning) if clipped else contextlib.nullcontext():
        y, stats = normalize(img, LEGACY)
    np.testing.assert_allclose(y, _rule(img), atol=1e-6)
    assert y.dtype == np.float32
    assert stats.lo == (0.0,) and stats.hi == (255.0,)


def test_legacy8_output_scale_is_the_originals():
    y = np.array([-1.0, 0.0, 1.0], np.float32).reshape(1, 1, 3)
    x = denormalize(y, LEGACY, compute_stats(np.zeros((1, 1, 1)), LEGACY))
    np.testing.assert_allclose(x.ravel(), [0.0, 127.5, 255.0])
    assert legacy8(np.array([-1.0, 3.7, 300.0])).tolist() == [0.0, 3.0, 255.0]


@given(
    arrays(
        np.float32,
        st.tuples(st.integers(1, 3), st.integers(2, 12), st.integers(2, 12)),
        elements=st.floats(-1e4, 1e4, width=32),
    ),
    st.sampled_from(["minmax", "percentile"]),
)
@settings(max_examples=60, deadline=None)
def test_affine_kinds_round_trip(image, kind):
    spec = NormalizationSpec(kind=kind, p_low=2.0, p_high=98.0)
    y, stats = normalize(image, spec)
    back = denormalize(y, spec, stats)
    scale = max(1.0, float(np.abs(image).max()))
    np.testing.assert_allclose(back, image, atol=1e-5 * scale, rtol=1e-4)
    if kind == "minmax":
        for c in range(image.shape[0]):
            if image[c].max() > image[c].min():
                assert y[c].min() == pytest.approx(-1.0, abs=1e-5)
                assert y[c].max() == pytest.approx(1.0, abs=1e-5)


def test_subnormal_ranges_count_as_empty():
    """A range whose reciprocal overflows float32 maps to the low end, without warnings."""
    image = np.full((1, 4, 4), 1e-45, np.float32)
    image[0, 0, 0] = 0.0
    for kind in ("minmax", "percentile"):
        spec = NormalizationSpec(kind=kind, p_low=2.0, p_high=98.0)
        y, stats = normalize(image, spec)
        assert stats.hi[0] == stats.lo[0] + 1.0
        assert np.isfinite(y).all() and np.abs(y - -1.0).max() < 1e-6
        np.testing.assert_allclose(denormalize(y, spec, stats), image, atol=1e-6)


def test_percentile_maps_percentiles_to_range_ends_per_channel():
    rng = np.random.default_rng(1)
    img = np.stack([rng.normal(100, 10, (64, 64)), rng.normal(5, 1, (64, 64))]).astype(np.float32)
    spec = NormalizationSpec(kind="percentile", p_low=1.0, p_high=99.0)
    y, stats = normalize(img, spec)
    for c in range(2):
        assert np.percentile(y[c], 1) == pytest.approx(-1.0, abs=1e-4)
        assert np.percentile(y[c], 99) == pytest.approx(1.0, abs=1e-4)
    assert stats.lo[0] > stats.lo[1]


def test_minmax_to_unit_range_and_legacy8_minmax():
    img = np.array([[[10.0, 20.0], [30.0, 300.0]]], np.float32)
    y, _ = normalize(img, NormalizationSpec(kind="minmax", out_range=(0.0, 1.0)))
    np.testing.assert_allclose(y.ravel(), [0.0, 10 / 290, 20 / 290, 1.0], atol=1e-6)
    with pytest.warns(ClippingWarning, match="25% of the image's pixels are above 255"):
        y, stats = normalize(img, NormalizationSpec(kind="legacy8_minmax"))
    assert stats.lo == (10.0,) and stats.hi == (255.0,)  # 300 is clipped first
    np.testing.assert_allclose(y.ravel(), [-1.0, -1 + 2 * 10 / 245, -1 + 2 * 20 / 245, 1.0])


def test_constant_image_does_not_divide_by_zero():
    y, stats = normalize(np.full((1, 4, 4), 7.0), NormalizationSpec(kind="minmax"))
    assert np.all(y == -1.0) and stats.hi[0] == stats.lo[0] + 1


def test_stats_of_a_tile_use_the_whole_image():
    rng = np.random.default_rng(2)
    img = rng.gamma(2, 30, (1, 64, 64)).astype(np.float32)
    spec = NormalizationSpec(kind="percentile")
    whole, stats = normalize(img, spec)
    tile, _ = normalize(img[:, 10:30, 5:40], spec, stats)
    np.testing.assert_array_equal(tile, whole[:, 10:30, 5:40])


def test_stats_on_dask_and_subsampled_large_images():
    rng = np.random.default_rng(3)
    img = rng.normal(0, 1, (1, 3000, 3000)).astype(np.float32)
    spec = NormalizationSpec(kind="percentile", p_low=1.0, p_high=99.0)
    exact = np.percentile(img[0], [1, 99])
    approx = compute_stats(img, spec)
    lazy = compute_stats(da.from_array(img, chunks=(1, 1000, 1000)), spec)
    assert approx == lazy
    np.testing.assert_allclose([approx.lo[0], approx.hi[0]], exact, atol=0.02)
    mm = compute_stats(
        da.from_array(img, chunks=(1, 1000, 1000)), NormalizationSpec(kind="minmax")
    )
    assert mm.lo[0] == pytest.approx(float(img.min())) and mm.hi[0] == pytest.approx(
        float(img.max())
    )


def test_masks_to_target_and_probabilities():
    masks = np.array([[[0, 255, 32768, 128]]], np.uint16)
    legacy = masks_to_target(masks, (-1.0, 1.0), legacy=True)
    np.testing.assert_allclose(legacy.ravel(), [-1.0, 1.0, 1.0, -1 + 2 * 128 / 255], atol=1e-6)
    binary = masks_to_target(masks, (0.0, 1.0))
    assert binary.ravel().tolist() == [0.0, 1.0, 1.0, 1.0]
    np.testing.assert_allclose(
        target_to_probability(np.array([-1.0, 0.0, 1.0, 1.5]), (-1.0, 1.0)), [0, 0.5, 1, 1]
    )


def test_bad_shape_message():
    with pytest.raises(ValueError, match=r"expected a \(C, Y, X\) image"):
        compute_stats(np.zeros((4, 4)), LEGACY)


def test_legacy8_warns_once_much_of_an_image_is_clipped():
    """16-bit data given to an 8-bit model: a warning that says what to do, not silence."""
    rng = np.random.default_rng(0)
    dim = rng.integers(0, 256, size=(1, 300, 300)).astype(np.uint16)
    dim[0, 0, :200] = 4000  # 0.2 % saturated pixels: normal for fluorescence
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        normalize(dim, LEGACY)
        normalize(dim * 100, NormalizationSpec())  # percentile: nothing is clipped
    bright = dim * 16
    with pytest.warns(ClippingWarning, match=r"9\d% of the image's pixels are above 255.*"
                      r"normalization.kind=percentile"):  # fmt: skip
        normalize(bright, LEGACY)


# --- per-region statistics and the original live test input ------------------------------


def test_halves_normalize_each_half_as_the_original_and_tiles_exactly():
    from napari_tagan.core.normalization import (
        compute_region_stats,
        denormalize_rows,
        normalize_rows,
    )

    rng = np.random.default_rng(2)
    image = rng.gamma(2.0, 30.0, (2, 37, 20)).astype(np.float32)
    image[:, :18] *= 0.25  # a dim top half: its own contrast, as with --preprocess tophalf
    spec = NormalizationSpec(kind="legacy8_minmax", regions="halves")
    regions = compute_region_stats(image, spec)
    assert regions.rows == ((0, 18), (18, 37))
    whole = normalize_rows(image, spec, regions)
    top_alone, _ = normalize(image[:, :18], spec.model_copy(update={"regions": "image"}))
    np.testing.assert_array_equal(whole[:, :18], top_alone)
    assert whole[:, :18].max() == 1.0 and whole[:, 18:].max() == 1.0
    tiles = [normalize_rows(image[:, y : y + 8], spec, regions, y0=y) for y in range(0, 37, 8)]
    np.testing.assert_array_equal(np.concatenate(tiles, axis=1), whole)
    back = denormalize_rows(whole, spec, regions)
    np.testing.assert_allclose(back, np.trunc(np.clip(image, 0, 255)), atol=1e-3)
    plain = compute_region_stats(image, NormalizationSpec(kind="legacy8_minmax"))
    assert plain.rows == ((0, 37),)


def test_original_live_test_input_and_region():
    from PIL import Image

    block_reduce = pytest.importorskip("skimage.measure").block_reduce
    from napari_tagan.core.normalization import original_live_region

    rng = np.random.default_rng(4)
    conf = rng.gamma(2.0, 100.0, (230, 170)).astype(np.float32)
    sted = (conf * 1.7 + rng.gamma(1.0, 40.0, conf.shape)).astype(np.float32)
    # the original (data/live_test_dataset.py), written out
    b = (sted - conf.min()) / (conf.max() - conf.min()) * 255
    a = (conf - conf.min()) / (conf.max() - conf.min()) * 255
    a_t, b_t = ((np.asarray(Image.fromarray(x).convert("L")) / 255 - 0.5) / 0.5 for x in (a, b))
    spec = NormalizationSpec(kind="minmax8")
    got_a, stats = normalize(conf[None], spec)
    got_b, _ = normalize(sted[None], spec, stats)  # the STED on the confocal's statistics
    np.testing.assert_allclose(got_a[0], a_t, atol=1e-6)
    np.testing.assert_allclose(got_b[0], b_t, atol=1e-6)
    assert (got_b == 1).mean() > 0.01  # the STED above the confocal's max is clipped
    blocks = block_reduce(b_t, (100, 100), np.mean)
    n = 2
    picked = blocks > np.sort(blocks.ravel())[-n]
    expected = np.asarray(Image.fromarray(picked).resize((170, 230)))
    region = original_live_region(got_b[0])
    np.testing.assert_array_equal(region, expected)
    assert 0 < region.sum() < region.size
