"""Whole-image prediction: shapes, units, modes, and input validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_tagan.core import InputError, predict
from napari_tagan.core.normalization import legacy8

from conftest import tiny_model


def _manual(model, image):
    """Independent recomputation of eval-mode prediction for a legacy8 model."""
    x = (legacy8(image) / 255.0 - 0.5) / 0.5
    h, w = image.shape
    ph, pw = (-h) % 4, (-w) % 4
    t = torch.nn.functional.pad(torch.from_numpy(x)[None, None], (0, pw, 0, ph), mode="reflect")
    with torch.no_grad():
        g = model.generator.eval()(t)
        s = model.segmenter.eval()(g)
    sted = (g[0, 0, :h, :w].numpy() + 1) / 2 * 255
    prob = np.clip((s[0, :, :h, :w].numpy() + 1) / 2, 0, 1)
    return sted, prob


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64, np.int32])
def test_eval_prediction_matches_the_networks(axons_model, confocal, dtype):
    image = confocal.astype(dtype)
    result = predict(axons_model, image)
    sted, prob = _manual(axons_model, image)
    assert result.synthetic_sted.shape == image.shape and result.synthetic_sted.dtype == np.float32
    assert result.segmentation.shape == (1, *image.shape)
    np.testing.assert_allclose(result.synthetic_sted, sted, atol=1e-3)
    np.testing.assert_allclose(result.segmentation, prob, atol=1e-5)
    assert result.variability is None and result.class_names == ("rings",)
    assert result.metadata["mode"] == "eval" and result.metadata["preset"] == "axons"


def test_eval_is_deterministic_and_leaves_the_model_as_it_was(axons_model, confocal):
    axons_model.generator.train()
    running = axons_model.generator.model[2].running_mean.clone()
    a = predict(axons_model, confocal)
    b = predict(axons_model, confocal, mode="original")
    c = predict(axons_model, confocal)
    np.testing.assert_array_equal(a.synthetic_sted, c.synthetic_sted)
    assert not np.allclose(a.synthetic_sted, b.synthetic_sted)  # batch statistics differ
    assert torch.equal(axons_model.generator.model[2].running_mean, running)
    assert axons_model.generator.training  # caller's mode restored


def test_mc_generations_reproducible_and_zero_std_without_dropout(axons_model, confocal):
    a = predict(axons_model, confocal, mode="mc", generations=4, seed=3)
    b = predict(axons_model, confocal, mode="mc", generations=4, seed=3)
    c = predict(axons_model, confocal, mode="mc", generations=4, seed=4)
    np.testing.assert_array_equal(a.synthetic_sted, b.synthetic_sted)
    assert not np.array_equal(a.synthetic_sted, c.synthetic_sted)
    assert a.variability.shape == confocal.shape and a.variability.max() > 0
    no_dropout = tiny_model("axons", dropout=False)
    r = predict(no_dropout, confocal, mode="mc", generations=3, seed=0)
    assert r.variability.max() == 0.0
    with pytest.raises(InputError, match="eval mode is deterministic"):
        predict(axons_model, confocal, generations=2)


def test_multichannel_preset_and_live(confocal):
    synprot = tiny_model("synprot")
    two = np.stack([confocal, confocal[::-1]]).astype(np.float32)
    r = predict(synprot, two)
    assert r.synthetic_sted.shape == two.shape and r.segmentation.shape == (2, *confocal.shape)
    live = tiny_model("live")
    r = predict(live, confocal.astype(np.float32))
    assert r.synthetic_sted.shape == confocal.shape and r.segmentation.shape[0] == 2
    mask = np.zeros(confocal.shape, bool)
    mask[:10, :10] = True
    with_regions = predict(live, confocal, sted=confocal * 2.0, sted_mask=mask)
    assert not np.array_equal(with_regions.synthetic_sted, r.synthetic_sted)


def test_segmentation_is_probability_and_optional(axons_model, confocal):
    r = predict(axons_model, confocal)
    assert 0.0 <= r.segmentation.min() and r.segmentation.max() <= 1.0
    assert predict(axons_model, confocal, segment=False).segmentation is None


@pytest.mark.parametrize(
    "image,match",
    [
        (np.zeros((2, 16, 16)), r"expects 1 channel\(s\) \(confocal\) first"),
        (np.zeros((1, 2, 16, 16)), "expected a 2D image"),
        (np.array([[1.0, np.nan], [0.0, np.inf]]), r"2 NaN or infinite pixel\(s\)"),
        (np.zeros((4, 4), complex), "not a real number type"),
    ],
)
def test_bad_inputs_have_clear_messages(axons_model, image, match):
    with pytest.raises(InputError, match=match):
        predict(axons_model, image)


def test_synprot_needs_two_channels(confocal):
    with pytest.raises(InputError, match=r"expects 2 channels \(confocal 561, confocal 640\)"):
        predict(tiny_model("synprot"), confocal)


def test_tiny_and_odd_images(axons_model):
    for shape in [(1, 1), (1, 9), (3, 2), (17, 5)]:
        r = predict(axons_model, np.full(shape, 50, np.uint16))
        assert r.synthetic_sted.shape == shape
        assert np.isfinite(r.synthetic_sted).all()


def test_progress_and_cancel(axons_model, confocal):
    seen = []
    predict(
        axons_model, confocal, mode="mc", generations=3, progress=lambda d, t: seen.append((d, t))
    )
    assert seen[-1] == (3, 3)
    with pytest.raises(InterruptedError):
        predict(axons_model, confocal, should_stop=lambda: True)


def test_run_options_are_one_object_or_keywords(axons_model, confocal):
    from napari_tagan.core.prediction import RunOptions

    options = RunOptions(backend="eager", tile=32)
    a = predict(axons_model, confocal, options=options)
    b = predict(axons_model, confocal, backend="eager", tile=32)
    np.testing.assert_array_equal(a.synthetic_sted, b.synthetic_sted)
    assert a.metadata["tile"]["generator"] == 32 and a.metadata["backend"] == "eager"
    # keywords replace the fields of the options they are given with
    c = predict(axons_model, confocal, options=options, tile=48)
    assert c.metadata["tile"]["generator"] == 48
    with pytest.raises(InputError, match="tile must be ≥ 1"):
        RunOptions(tile=0)
    with pytest.raises(InputError, match="unknown precision 'fp8'"):
        RunOptions(precision="fp8")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="tiles"):
        predict(axons_model, confocal, tiles=32)


def test_segment_runs_s_alone_on_a_sted_like_image(axons_model, confocal):
    from napari_tagan.core.prediction import segment

    x = (legacy8(confocal) / 255.0 - 0.5) / 0.5
    h, w = confocal.shape
    t = torch.nn.functional.pad(
        torch.from_numpy(x)[None, None], (0, (-w) % 4, 0, (-h) % 4), mode="reflect"
    )
    with torch.no_grad():
        s = axons_model.segmenter.eval()(t)
    expected = np.clip((s[0, :, :h, :w].numpy() + 1) / 2, 0, 1)
    got = segment(axons_model, confocal)
    assert got.shape == (1, h, w)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # tiled: the same (ResNet S is local)
    np.testing.assert_allclose(segment(axons_model, confocal, tile=16), expected, atol=1e-4)
    with pytest.raises(InputError, match="segmenter expects 1 STED channel"):
        segment(axons_model, np.zeros((2, 16, 16)))
