"""Intensity normalization: raw microscope units ↔ the networks' [-1, 1] (or [0, 1]).

Statistics are computed once per image, or per top/bottom half (never per tile), so a
tiled prediction sees the same mapping as a whole-image one. Every mapping is affine up to
an 8-bit quantisation (``legacy8`` before it, ``minmax8`` after it), and the inverse is the
affine part: ``x = lo + (y - a) / (b - a) * (hi - lo)`` with ``(a, b)`` the output range
and ``(lo, hi)`` per channel.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import NormalizationSpec

#: Percentiles of images larger than this (pixels per channel) are estimated on a regular
#: subsample, which keeps them O(1) in memory and time for whole-slide images.
PERCENTILE_SAMPLE_LIMIT = 1 << 22
#: ``legacy8`` warns when more than this fraction of an image's pixels is clipped at 255.
CLIPPED_WARNING_FRACTION = 0.01


class ClippingWarning(UserWarning):
    """Much of an image lies above the 8-bit range that ``legacy8`` normalization keeps."""


@dataclass(frozen=True)
class NormStats:
    """Per-channel ``lo``/``hi`` of an affine normalization (``lo`` ↦ a, ``hi`` ↦ b)."""

    lo: tuple[float, ...]
    hi: tuple[float, ...]

    def to_dict(self) -> dict[str, list[float]]:
        """JSON-able form, for layer and TIFF metadata."""
        return {"lo": list(self.lo), "hi": list(self.hi)}


def legacy8(image: np.ndarray) -> np.ndarray:
    """The original's 8-bit conversion: clip to [0, 255], truncate to integers (float32).

    Truncation is toward zero, which equals ``floor`` after clipping to non-negatives.
    """
    return np.trunc(np.clip(np.asarray(image, dtype=np.float32), 0.0, 255.0))


def _reduce(array: Any, how: str) -> float:
    # numpy and dask arrays both have .min()/.max(); np.asarray computes a dask result.
    return float(np.asarray(getattr(array, how)()))


def _subsample(channel: Any) -> np.ndarray:
    """The channel, or a regular subsample of it when it is large (numpy)."""
    size = int(np.prod(channel.shape))
    step = max(1, int(np.ceil(np.sqrt(size / PERCENTILE_SAMPLE_LIMIT))))
    return np.asarray(channel[::step, ::step], dtype=np.float32)


def _warn_if_clipped(channel: Any, spec: NormalizationSpec) -> None:
    if not isinstance(channel, np.ndarray):
        return  # lazy (dask, zarr): a subsample would read every chunk just for this
    kind = channel.dtype.kind
    if kind == "b" or (kind in "iu" and np.iinfo(channel.dtype).max <= 255):
        return  # 8-bit data cannot exceed the range
    clipped = float(np.mean(_subsample(channel) > 255.0))
    if clipped > CLIPPED_WARNING_FRACTION:
        warnings.warn(
            f"{clipped:.0%} of the image's pixels are above 255 and are clipped by the "
            f"{spec.kind} normalization (the original TA-GAN's 8-bit conversion, which its "
            "models expect): rescale such images to 0-255 for these models, or train new "
            "ones with percentile normalization (the generic preset, or the config's "
            "normalization.kind=percentile)",
            ClippingWarning,
            stacklevel=4,
        )


def _channel_range(channel: Any, spec: NormalizationSpec) -> tuple[float, float]:
    if spec.kind in ("legacy8", "legacy8_minmax"):
        _warn_if_clipped(channel, spec)
        if spec.kind == "legacy8":
            return 0.0, 255.0
        lo, hi = _reduce(channel, "min"), _reduce(channel, "max")
        return float(legacy8(np.float32(lo))), float(legacy8(np.float32(hi)))
    if spec.kind in ("minmax", "minmax8"):
        return _reduce(channel, "min"), _reduce(channel, "max")
    lo, hi = np.percentile(_subsample(channel), [spec.p_low, spec.p_high])
    return float(lo), float(hi)


def compute_stats(image: Any, spec: NormalizationSpec) -> NormStats:
    """Per-channel statistics of a (C, Y, X) image (numpy or dask) for ``spec``.

    A channel whose range is empty (constant image) or below float32's smallest normal
    number (whose reciprocal overflows) gets ``hi = lo + 1`` so that it maps to the low
    end instead of dividing by zero.
    """
    if len(image.shape) != 3:
        raise ValueError(f"expected a (C, Y, X) image, got shape {tuple(image.shape)}")
    los, his = [], []
    for c in range(image.shape[0]):
        lo, hi = _channel_range(image[c], spec)
        if not float(np.float32(hi) - np.float32(lo)) >= float(np.finfo(np.float32).tiny):
            hi = lo + 1.0
        los.append(lo)
        his.append(hi)
    return NormStats(tuple(los), tuple(his))


def normalize(
    image: np.ndarray, spec: NormalizationSpec, stats: NormStats | None = None
) -> tuple[np.ndarray, NormStats]:
    """Map a (C, Y, X) image to the network range; returns the array and its statistics.

    Pass ``stats`` to normalize a piece (a tile) of a larger image with the statistics of
    the whole.
    """
    stats = compute_stats(image, spec) if stats is None else stats
    a, b = spec.out_range
    if spec.kind == "minmax8":
        return _minmax8(image, stats, a, b), stats
    x = legacy8(image) if spec.kind.startswith("legacy8") else np.asarray(image, np.float32)
    lo = np.asarray(stats.lo, np.float32)[:, None, None]
    hi = np.asarray(stats.hi, np.float32)[:, None, None]
    out = (x - lo) * np.float32(b - a) / (hi - lo) + np.float32(a)
    return out.astype(np.float32, copy=False), stats


def _minmax8(image: np.ndarray, stats: NormStats, a: float, b: float) -> np.ndarray:
    """Min-max to 0-255 in float64 (as the original's numpy), 8-bit, then to (a, b)."""
    lo = np.asarray(stats.lo, np.float64)[:, None, None]
    hi = np.asarray(stats.hi, np.float64)[:, None, None]
    eight = legacy8((np.asarray(image, np.float64) - lo) / (hi - lo) * 255.0)
    return (eight * np.float32((b - a) / 255.0) + np.float32(a)).astype(np.float32, copy=False)


def stretch_channels(array: np.ndarray, out_range: tuple[float, float]) -> np.ndarray:
    """Each channel of a (C, Y, X) array min-max stretched to ``out_range`` (float32).

    The synprot training crops: the original stretches each channel of each *crop* after
    cropping. A constant channel maps to the low end (the original divides by zero there).
    """
    x = np.asarray(array, np.float32)
    lo = x.min(axis=(1, 2), keepdims=True)
    span = x.max(axis=(1, 2), keepdims=True) - lo
    a, b = (np.float32(v) for v in out_range)
    safe = np.where(span > 0, span, np.float32(1.0))
    return ((x - lo) / safe * (b - a) + a).astype(np.float32, copy=False)


def denormalize(y: np.ndarray, spec: NormalizationSpec, stats: NormStats) -> np.ndarray:
    """Inverse of :func:`normalize` for a (C, Y, X) network output (float32).

    For ``legacy8`` this is the original's output scale, ``(y + 1) / 2 × 255``.
    """
    a, b = spec.out_range
    lo = np.asarray(stats.lo, np.float32)[:, None, None]
    hi = np.asarray(stats.hi, np.float32)[:, None, None]
    return (
        (np.asarray(y, np.float32) - np.float32(a)) / np.float32(b - a) * (hi - lo) + lo
    ).astype(np.float32, copy=False)


def masks_to_target(
    masks: np.ndarray, mask_range: tuple[float, float], *, legacy: bool = False
) -> np.ndarray:
    """Turn (n_classes, Y, X) masks into S's targets in ``mask_range``.

    ``legacy=True`` follows the original file pipeline, where masks go through the 8-bit
    conversion too: 0 ↦ low, ≥ 255 ↦ high, values between map linearly. Otherwise any
    non-zero pixel is "on".
    """
    lo, hi = mask_range
    if legacy:
        frac = legacy8(masks) / np.float32(255.0)
    else:
        frac = (np.asarray(masks) != 0).astype(np.float32)
    return (np.float32(lo) + frac * np.float32(hi - lo)).astype(np.float32)


def target_to_probability(y: np.ndarray, mask_range: tuple[float, float]) -> np.ndarray:
    """Map S's Tanh output back to a per-pixel probability in [0, 1]."""
    lo, hi = mask_range
    return np.clip((np.asarray(y, np.float32) - lo) / np.float32(hi - lo), 0.0, 1.0)


# --- per-region statistics (the original's top/bottom halves) --------------------------


@dataclass(frozen=True)
class RegionStats:
    """Statistics per band of rows: ``rows[i] = (start, stop)`` uses ``stats[i]``."""

    rows: tuple[tuple[int, int], ...]
    stats: tuple[NormStats, ...]

    @property
    def finite(self) -> bool:
        """Every band's statistics are finite numbers."""
        return all(np.isfinite(st.lo + st.hi).all() for st in self.stats)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form: :meth:`NormStats.to_dict` for one band, else rows and stats."""
        if len(self.stats) == 1:
            return self.stats[0].to_dict()
        return {"rows": [list(r) for r in self.rows], "stats": [s.to_dict() for s in self.stats]}


def region_rows(height: int, regions: str) -> tuple[tuple[int, int], ...]:
    """The row bands of ``regions``: the whole image, or its top and bottom halves.

    The original's ``tophalf`` is rows ``[0, h // 2)`` and ``bottomhalf`` rows
    ``[h // 2, 2 * (h // 2))``; for an odd height its last row belongs to no half, here
    to the bottom one.
    """
    if regions == "image" or height < 2:
        return ((0, height),)
    if regions == "halves":
        return ((0, height // 2), (height // 2, height))
    raise ValueError(f"unknown regions {regions!r}; expected 'image' or 'halves'")


def compute_region_stats(image: Any, spec: NormalizationSpec) -> RegionStats:
    """:func:`compute_stats` of each of ``spec.regions``' bands of a (C, Y, X) image.

    Computed once from the whole of each band, so a tile normalized with
    :func:`normalize_rows` gets exactly the values of the whole image.
    """
    rows = region_rows(int(image.shape[-2]), spec.regions)
    return RegionStats(rows, tuple(compute_stats(image[:, a:b], spec) for a, b in rows))


def _by_rows(piece: np.ndarray, regions: RegionStats, y0: int, fn: Any) -> np.ndarray:
    """``fn(band, stats)`` on each part of ``piece`` (rows ``y0..``) within one band.

    Rows past the image (bottom padding) belong to the last band.
    """
    if len(regions.stats) == 1:
        return fn(piece, regions.stats[0])
    out = np.empty(piece.shape, np.float32)
    last = len(regions.rows) - 1
    for i, ((a, b), stats) in enumerate(zip(regions.rows, regions.stats, strict=True)):
        lo = max(a - y0, 0)
        hi = piece.shape[-2] if i == last else min(b - y0, piece.shape[-2])
        if lo < hi:
            out[..., lo:hi, :] = fn(piece[..., lo:hi, :], stats)
    return out


def normalize_rows(
    piece: np.ndarray, spec: NormalizationSpec, regions: RegionStats, y0: int = 0
) -> np.ndarray:
    """Normalize a (C, Y, X) ``piece`` whose first row is row ``y0`` of the whole image."""
    return _by_rows(piece, regions, y0, lambda band, st: normalize(band, spec, st)[0])


def denormalize_rows(
    y: np.ndarray, spec: NormalizationSpec, regions: RegionStats, y0: int = 0
) -> np.ndarray:
    """Inverse of :func:`normalize_rows`."""
    return _by_rows(y, regions, y0, lambda band, st: denormalize(band, spec, st))


# --- the original live test input ------------------------------------------------------

#: Side of the block the original live test input gives G as its STED region (pixels).
ORIGINAL_LIVE_TEST_BLOCK = 100


def original_live_region(
    sted_net: np.ndarray, block: int = ORIGINAL_LIVE_TEST_BLOCK
) -> np.ndarray:
    """The original live test region: the brightest ``block``-px block of the STED (bool).

    ``sted_net`` is the STED in network units (:func:`original_live_input`). Blocks are
    means over ``block`` × ``block`` pixels, the edge blocks padded with 0 (skimage's
    ``block_reduce``); the map of blocks is stretched back to the image by a nearest
    resize, so edge blocks are not exactly ``block`` pixels wide, as in the original.
    Where the brightest value is shared, the first block is taken (the original takes
    none).
    """
    h, w = sted_net.shape
    ny, nx = -(-h // block), -(-w // block)
    padded = np.zeros((ny * block, nx * block), np.float64)
    padded[:h, :w] = sted_net
    means = padded.reshape(ny, block, nx, block).mean(axis=(1, 3))
    by, bx = divmod(int(np.argmax(means)), nx)
    rows = np.floor((np.arange(h) + 0.5) * ny / h).astype(int) == by
    cols = np.floor((np.arange(w) + 0.5) * nx / w).astype(int) == bx
    return rows[:, None] & cols[None, :]
