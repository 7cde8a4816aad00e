"""Validation metrics: known answers and agreement with scikit-image."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from napari_tagan.core.metrics import dice_iou, dice_iou_from_counts, overlap_counts, psnr, ssim


def test_psnr_known_value_and_identity():
    a = np.zeros((8, 8), np.float32)
    b = np.full((8, 8), 0.2, np.float32)
    # MSE 0.04, range 2 → 10 log10(4 / 0.04) = 20 dB
    assert psnr(b, a, 2.0) == pytest.approx(20.0)
    assert math.isinf(psnr(a, a, 2.0))


def test_psnr_matches_skimage():
    rng = np.random.default_rng(1)
    a, b = rng.uniform(-1, 1, (2, 32, 40))
    assert psnr(a, b, 2.0) == pytest.approx(peak_signal_noise_ratio(b, a, data_range=2.0))


def test_ssim_matches_skimage_gaussian_variant():
    rng = np.random.default_rng(2)
    ref = rng.uniform(-1, 1, (48, 40))
    noisy = np.clip(ref + rng.normal(0, 0.3, ref.shape), -1, 1)
    expected = structural_similarity(
        noisy,
        ref,
        data_range=2.0,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
    )
    assert ssim(noisy, ref, 2.0) == pytest.approx(expected, abs=1e-6)
    assert ssim(ref, ref, 2.0) == pytest.approx(1.0)


def test_ssim_of_channels_is_the_mean():
    rng = np.random.default_rng(3)
    a, b = rng.uniform(-1, 1, (2, 2, 32, 32))
    assert ssim(a, b, 2.0) == pytest.approx((ssim(a[0], b[0], 2.0) + ssim(a[1], b[1], 2.0)) / 2)


def test_dice_iou_known_answers():
    pred = np.zeros((1, 4, 4), bool)
    target = np.zeros((1, 4, 4), bool)
    pred[0, :2] = True  # 8 pixels
    target[0, 1:3] = True  # 8 pixels, 4 shared
    assert [c.tolist() for c in overlap_counts(pred, target)] == [[4], [8], [8]]
    dice, iou = dice_iou(pred, target)
    assert dice == pytest.approx(0.5)
    assert iou == pytest.approx(4 / 12)


def test_dice_ignores_unannotated_pixels_and_empty_classes():
    pred = np.zeros((2, 4, 4), bool)
    target = np.zeros((2, 4, 4), bool)
    pred[0, 0] = True
    target[0, 0] = True
    pred[0, 3] = True  # wrong, but not annotated
    weights = np.ones((2, 4, 4))
    weights[:, 3] = 0
    dice, iou = dice_iou(pred, target, weights)
    assert (dice, iou) == (1.0, 1.0)  # class 1 empty in both → perfect
    dice, iou = dice_iou(pred, target)  # class 0: 4 shared of 8 + 4 → Dice 2/3, IoU 1/2
    assert dice == pytest.approx((2 / 3 + 1) / 2) and iou == pytest.approx((1 / 2 + 1) / 2)


def test_counts_add_over_images():
    rng = np.random.default_rng(4)
    p, t = rng.random((2, 2, 1, 8, 8)) > 0.5
    c1, c2 = overlap_counts(p[0], t[0]), overlap_counts(p[1], t[1])
    summed = tuple(x + y for x, y in zip(c1, c2, strict=True))
    whole = overlap_counts(np.concatenate([p[0], p[1]], -1), np.concatenate([t[0], t[1]], -1))
    assert dice_iou_from_counts(*summed) == pytest.approx(dice_iou_from_counts(*whole))


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape"):
        psnr(np.zeros((2, 2)), np.zeros((2, 3)), 1.0)
    with pytest.raises(ValueError, match="shape"):
        dice_iou(np.zeros((1, 2, 2)), np.zeros((1, 2, 3)))
