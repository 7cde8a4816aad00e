"""Where is the generator unsure? Score blocks of the field from stochastic generations.

:func:`propose_regions` runs N dropout generations (``predict`` in ``mc`` mode, one seed
each, so that each generation's segmentation is kept), summarises them
(:class:`Generations`), scores blocks of a physical size (:func:`rank_regions`) and keeps
the best within a budget (:func:`select_regions`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from .regions import Region, RegionSet

#: A class is "present" in a region for one generation when at least this fraction of the
#: region's pixels is segmented as that class.
DEFAULT_MIN_AREA = 0.02


@dataclass
class Generations:
    """What N stochastic generations say about each pixel.

    ``synthetic_sted`` is the mean over generations and ``variability`` the per-pixel std
    (Y, X; channels averaged); ``masks`` is (N, n_classes, Y, X) bool, each generation's
    segmentation thresholded at 0.5 (None without a segmenter).
    """

    synthetic_sted: np.ndarray
    variability: np.ndarray
    masks: np.ndarray | None
    class_names: tuple[str, ...] = ()


def sample_generations(
    model: Any,
    image: Any,
    *,
    generations: int = 8,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    **predict_options: Any,
) -> Generations:
    """Run ``generations`` dropout generations of ``model`` on one 2D (or C, Y, X) image.

    ``predict_options`` go to :func:`~napari_tagan.core.prediction.predict` (device,
    tile, sted/sted_mask for live models, ...).
    """
    from ..prediction import predict

    if isinstance(generations, bool) or int(generations) < 2:
        raise InputError(f"generations must be ≥ 2 to measure disagreement, got {generations}")
    sum1 = sum2 = None
    masks: list[np.ndarray] = []
    names: tuple[str, ...] = ()
    for g in range(int(generations)):
        result = predict(model, image, mode="mc", generations=1, seed=seed + g, **predict_options)
        sted = np.asarray(result.synthetic_sted, np.float64)
        sted = sted.mean(0) if sted.ndim == 3 else sted
        sum1 = sted if sum1 is None else sum1 + sted
        sum2 = sted**2 if sum2 is None else sum2 + sted**2
        if result.segmentation is not None:
            masks.append(np.asarray(result.segmentation) >= 0.5)
            names = tuple(result.class_names)
        if progress is not None:
            progress(g + 1, int(generations))
    total = int(generations)
    mean = sum1 / total
    var = np.maximum(sum2 / total - mean**2, 0.0)
    return Generations(
        synthetic_sted=mean.astype(np.float32),
        variability=np.sqrt(var).astype(np.float32),
        masks=np.stack(masks) if masks else None,
        class_names=names,
    )


def block_means(array: np.ndarray, block: tuple[int, int]) -> np.ndarray:
    """Mean of ``array`` (..., Y, X) over a grid of blocks (partial blocks at the edges)."""
    by, bx = block
    h, w = array.shape[-2:]
    sums = np.add.reduceat(
        np.add.reduceat(array, np.arange(0, h, by), -2), np.arange(0, w, bx), -1
    )
    heights = np.minimum(by, h - np.arange(0, h, by))
    widths = np.minimum(bx, w - np.arange(0, w, bx))
    return sums / (heights[:, None] * widths[None, :])


def _normalized(values: np.ndarray) -> np.ndarray:
    top = float(values.max()) if values.size else 0.0
    return values / top if top > 0 else np.zeros_like(values)


def rank_regions(
    summary: Generations,
    block_px: tuple[int, int],
    *,
    seg_weight: float = 0.5,
    min_area: float = DEFAULT_MIN_AREA,
) -> list[Region]:
    """Every block of the grid as a :class:`Region`, most informative first.

    score ∝ (1 − w) · variability / max + w · disagreement / max, with ``w = seg_weight``
    (0 without a segmenter), scaled so that the image's most uncertain block scores 1:
    the score ranks blocks of one image, not images. Ties keep reading order.
    """
    if not 0.0 <= seg_weight <= 1.0:
        raise InputError(f"seg_weight must be in [0, 1], got {seg_weight}")
    if not 0.0 < min_area <= 1.0:
        raise InputError(f"min_area must be in (0, 1], got {min_area}")
    var = block_means(np.asarray(summary.variability, np.float64), block_px)
    score = _normalized(var)
    nx = var.shape[1]
    disagreement = np.zeros_like(var)
    counts = None
    n = 0
    if summary.masks is not None and summary.masks.shape[1] > 0:
        masks = np.asarray(summary.masks, bool)
        n = masks.shape[0]
        on = masks.mean(0)
        disagreement = block_means(np.minimum(on, 1.0 - on).mean(0), block_px)
        counts = (block_means(masks.astype(np.float32), block_px) >= min_area).sum(0)
        score = _normalized((1.0 - seg_weight) * score + seg_weight * _normalized(disagreement))
    order = np.argsort(-score, axis=None, kind="stable")
    h, w = summary.variability.shape
    by, bx = block_px
    regions = []
    for flat in order:
        iy, ix = divmod(int(flat), nx)
        present: tuple[bool, ...] = ()
        confidence: tuple[float, ...] = ()
        if counts is not None:
            k = counts[:, iy, ix]
            present = tuple(bool(2 * c > n) for c in k)
            confidence = tuple(float(max(c, n - c) / n) for c in k)
        regions.append(
            Region(
                iy * by,
                ix * bx,
                min(h, (iy + 1) * by),
                min(w, (ix + 1) * bx),
                score=float(score[iy, ix]),
                variability=float(var[iy, ix]),
                disagreement=float(disagreement[iy, ix]),
                present=present,
                confidence=confidence,
            )
        )
    return regions


def budget_count(budget: int | float, regions: Sequence[Region], field_px: int) -> int:
    """How many of ``regions`` (in order) a budget allows.

    An int ≥ 1 is a number of regions; a float in (0, 1] a fraction of the field of view
    (at least one region).
    """
    if isinstance(budget, bool) or not isinstance(budget, int | float | np.number):
        raise InputError(f"budget must be a number of regions or a fraction, got {budget!r}")
    if isinstance(budget, int | np.integer):
        if budget < 1:
            raise InputError(f"budget must be ≥ 1 region, got {budget}")
        return min(int(budget), len(regions))
    if not (math.isfinite(budget) and 0.0 < budget <= 1.0):
        raise InputError(
            f"a fractional budget must be in (0, 1] of the field of view, got {budget}"
        )
    allowed, count = budget * field_px, 0
    for r in regions:
        if count and allowed < r.area:
            break
        allowed -= r.area
        count += 1
    return count


def block_pixels(block_um: float, pixel_size_um: tuple[float, float]) -> tuple[int, int]:
    """Block side in pixels (y, x) for a physical side; at least one pixel."""
    if isinstance(block_um, bool) or not (isinstance(block_um, int | float) and block_um > 0):
        raise InputError(f"block size must be a positive number of µm, got {block_um!r}")
    if not math.isfinite(block_um):
        raise InputError(f"block size must be finite, got {block_um}")
    return tuple(max(1, round(block_um / p)) for p in pixel_size_um)  # type: ignore[return-value]


def select_regions(
    ranked: Sequence[Region],
    budget: int | float,
    field_px: int,
    *,
    uncertain_below: float | None = None,
) -> list[Region]:
    """The top of ``ranked`` within ``budget``.

    With ``uncertain_below``, only regions whose present/absent call is less confident
    than that are kept (the others are trusted to the synthetic image).
    """
    pool = list(ranked)
    if uncertain_below is not None:
        if not 0.5 < uncertain_below <= 1.0:
            raise InputError(f"uncertain_below must be in (0.5, 1], got {uncertain_below}")
        pool = [r for r in pool if r.uncertain(uncertain_below)]
    return pool[: budget_count(budget, pool, field_px)] if pool else []


@dataclass
class RegionProposal:
    """Output of :func:`propose_regions`: the proposed regions and how they were chosen."""

    regions: RegionSet
    ranked: tuple[Region, ...]
    summary: Generations
    block_px: tuple[int, int]


def propose_regions(
    model: Any,
    image: Any,
    *,
    budget: int | float = 8,
    block_um: float = 2.0,
    pixel_size_um: float | Sequence[float] | None = None,
    origin_um: float | Sequence[float] = (0.0, 0.0),
    generations: int = 8,
    seed: int = 0,
    seg_weight: float = 0.5,
    min_area: float = DEFAULT_MIN_AREA,
    uncertain_below: float | None = None,
    progress: Callable[[int, int], None] | None = None,
    **predict_options: Any,
) -> RegionProposal:
    """Propose where to acquire real STED: the blocks where the generator is least sure.

    Parameters
    ----------
    model, image
        A loaded model and one (Y, X) or (C, Y, X) image in intensity units.
    budget
        Number of regions (int ≥ 1) or fraction of the field of view (float in (0, 1]).
    block_um, pixel_size_um, origin_um
        Side of the square blocks scored, the image's pixel size (µm, one number or
        (y, x); required) and the physical position of its top-left corner.
    generations, seed
        Dropout generations (≥ 2) and the seed of the first.
    seg_weight, min_area
        Weight of segmentation disagreement against STED variability in the score, and
        the area fraction above which a class counts as present in a block.
    uncertain_below
        Propose only regions whose present/absent call has a confidence below this.
    predict_options
        Passed on to ``predict`` (``device``, ``tile``, ...).
    """
    if pixel_size_um is None:
        raise InputError("the image has no pixel size: give pixel_size_um (µm per pixel)")
    geometry = RegionSet((), (1, 1), pixel_size_um, origin_um)  # validates both
    block = block_pixels(block_um, geometry.pixel_size_um)
    summary = sample_generations(
        model, image, generations=generations, seed=seed, progress=progress, **predict_options
    )
    ranked = rank_regions(summary, block, seg_weight=seg_weight, min_area=min_area)
    shape = summary.variability.shape
    chosen = select_regions(ranked, budget, shape[0] * shape[1], uncertain_below=uncertain_below)
    regions = RegionSet(
        tuple(chosen),
        shape,
        geometry.pixel_size_um,
        geometry.origin_um,
        summary.class_names,
        metadata={
            "block_um": float(block_um),
            "block_px": list(block),
            "generations": int(generations),
            "seed": int(seed),
            "seg_weight": float(seg_weight),
            "min_area": float(min_area),
            "budget": budget,
            "preset": model.config.preset,
        },
    )
    return RegionProposal(regions, tuple(ranked), summary, block)
