"""Image-quality and segmentation metrics for validation (numpy in, floats out).

PSNR and SSIM compare a synthetic STED with the real one in network units (a known data
range); Dice and IoU compare binary segmentations over the annotated pixels only.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: SSIM constants and Gaussian window of Wang et al. (2004): σ = 1.5, 11×11 taps.
SSIM_K1 = 0.01
SSIM_K2 = 0.03
SSIM_SIGMA = 1.5
_SSIM_TRUNCATE = 3.5  # radius int(3.5 × 1.5 + 0.5) = 5 → an 11-tap window


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    return a, b


def psnr(prediction: np.ndarray, reference: np.ndarray, data_range: float) -> float:
    """Peak signal-to-noise ratio in dB, ``10 log10(range² / MSE)`` (inf when equal)."""
    a, b = _pair(prediction, reference)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10(data_range**2 / mse))


def ssim(prediction: np.ndarray, reference: np.ndarray, data_range: float) -> float:
    """Mean structural similarity of two 2D images (or the mean over leading axes).

    Gaussian-weighted local statistics (σ = 1.5) with population covariances, the mean
    taken over the pixels whose 11×11 window lies inside the image (as scikit-image's
    ``structural_similarity(gaussian_weights=True, use_sample_covariance=False)``).
    """
    a, b = _pair(prediction, reference)
    if a.ndim > 2:
        flat_a = a.reshape(-1, *a.shape[-2:])
        flat_b = b.reshape(-1, *b.shape[-2:])
        pairs = zip(flat_a, flat_b, strict=True)
        return float(np.mean([ssim(x, y, data_range) for x, y in pairs]))
    if a.ndim != 2:
        raise ValueError(f"ssim needs 2D images, got shape {a.shape}")

    def blur(x: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(x, SSIM_SIGMA, truncate=_SSIM_TRUNCATE, mode="reflect")

    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    pad = int(_SSIM_TRUNCATE * SSIM_SIGMA + 0.5)
    inner = s[pad:-pad, pad:-pad] if min(s.shape) > 2 * pad else s
    return float(inner.mean())


def overlap_counts(
    prediction: np.ndarray, target: np.ndarray, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class (intersection, |prediction|, |target|) over weighted pixels.

    Inputs are boolean (n_classes, Y, X) maps; the counts add up over images, so a
    dataset's Dice is computed from the summed counts (not a mean of per-image Dice).
    """
    p = np.asarray(prediction, bool)
    t = np.asarray(target, bool)
    if p.shape != t.shape:
        raise ValueError(f"segmentations differ in shape: {p.shape} vs {t.shape}")
    w = np.ones(p.shape, bool) if weights is None else np.asarray(weights) > 0
    axes = tuple(range(1, p.ndim))

    def count(mask: np.ndarray) -> np.ndarray:
        return np.asarray(np.sum(mask & w, axis=axes, dtype=np.int64))

    return count(p & t), count(p), count(t)


def dice_iou_from_counts(
    intersection: np.ndarray, predicted: np.ndarray, target: np.ndarray
) -> tuple[float, float]:
    """Mean over classes of Dice ``2|P∩T| / (|P| + |T|)`` and IoU ``|P∩T| / |P∪T|``.

    A class absent from both prediction and target counts as perfect (1.0).
    """
    inter = np.asarray(intersection, np.float64)
    total = np.asarray(predicted, np.float64) + np.asarray(target, np.float64)
    union = total - inter
    dice = np.where(total > 0, 2 * inter / np.maximum(total, 1), 1.0)
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return float(dice.mean()), float(iou.mean())


def dice_iou(
    prediction: np.ndarray, target: np.ndarray, weights: np.ndarray | None = None
) -> tuple[float, float]:
    """Dice and IoU (means over classes) of boolean (n_classes, Y, X) segmentations."""
    return dice_iou_from_counts(*overlap_counts(prediction, target, weights))
