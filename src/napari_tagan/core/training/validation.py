"""Validation metrics of a model during training, over whole images."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import numpy as np
import torch

from ..device import Placement
from ..errors import InputError
from ..metrics import dice_iou_from_counts, overlap_counts, psnr, ssim
from ..model import TAGANModel
from .batches import validation_item
from .data import TrainingDataset


def segmenter_target(model: TAGANModel, real: torch.Tensor) -> torch.Tensor:
    """The live preset's target: the frozen S on the real STED.

    Thresholded to {0, 1} per class when the config gives thresholds (as the original).
    """
    assert model.segmenter is not None
    with torch.no_grad():
        seg_real = model.segmenter(real).float()
    thresholds = model.config.seg_thresholds
    if not thresholds:
        return seg_real
    t = torch.tensor(thresholds, device=seg_real.device, dtype=seg_real.dtype)
    return (seg_real > t[None, :, None, None]).float()


@contextlib.contextmanager
def _eval_mode(model: TAGANModel) -> Iterator[None]:
    nets = model.networks()
    was = {k: n.training for k, n in nets.items()}
    model.eval()
    try:
        yield
    finally:
        for k, n in nets.items():
            n.train(was[k])


@torch.no_grad()
def evaluate(
    model: TAGANModel, data: TrainingDataset, where: Placement, *, uses_labels: bool
) -> dict[str, float]:
    """Validation metrics over whole images (running BN statistics, no dropout).

    PSNR and SSIM of the synthetic vs the real STED; Dice and IoU of S on the synthetic
    STED vs the labels (``uses_labels``) or vs S on the real STED (live preset).
    """
    a, b = model.config.normalization.out_range
    psnrs, ssims = [], []
    counts: tuple[int, ...] | None = None
    with _eval_mode(model):
        for i in range(len(data)):
            item = validation_item(data, i)
            g_in = torch.from_numpy(item.g_input)[None].to(where.device)
            with where.autocast():
                fake_t = model.generator(g_in.contiguous(memory_format=where.memory_format))
            fake = fake_t[0].float().cpu().numpy()
            psnrs.append(psnr(fake, item.sted, b - a))
            ssims.append(ssim(fake, item.sted, b - a))
            c = _overlap(model, fake_t, item, where, uses_labels)
            if c is not None:
                counts = (
                    c if counts is None else tuple(x + y for x, y in zip(counts, c, strict=True))
                )
    dice, iou = dice_iou_from_counts(*counts) if counts is not None else (math.nan, math.nan)
    psnr_finite = [p for p in psnrs if math.isfinite(p)] or [math.inf]
    return {
        "psnr": float(np.mean(psnr_finite)),
        "ssim": float(np.mean(ssims)),
        "dice": dice,
        "iou": iou,
    }


def _overlap(
    model: TAGANModel, fake_t: torch.Tensor, item, where: Placement, uses_labels: bool
) -> tuple[int, ...] | None:
    """Overlap counts of S on the synthetic STED vs its reference; None where undefined."""
    if model.segmenter is None:
        return None
    cfg = model.config
    mid = 0.5 * (cfg.mask_range[0] + cfg.mask_range[1])
    with where.autocast():
        seg = model.segmenter(fake_t)[0].float().cpu().numpy()
    if uses_labels:
        if item.targets is None or not item.weights.any():
            return None
        return overlap_counts(seg > mid, item.targets > mid, item.weights)
    real_t = torch.from_numpy(item.sted)[None].to(where.device)
    ref = segmenter_target(model, real_t)[0].cpu().numpy()
    if cfg.seg_thresholds:
        thr = np.asarray(cfg.seg_thresholds, np.float32)[:, None, None]
        return overlap_counts(seg > thr, ref > 0.5, None)
    return overlap_counts(seg > mid, ref > mid, None)


def choose_best_metric(
    name: str, model: TAGANModel, valid_data: TrainingDataset | None, *, uses_labels: bool
) -> str:
    """The metric that selects ``best`` (``auto``: Dice where S is evaluated, else PSNR)."""
    if name == "auto":
        evaluates_seg = model.segmenter is not None and (
            not uses_labels or (valid_data is not None and valid_data.has_targets)
        )
        return "dice" if evaluates_seg else "psnr"
    if name not in ("dice", "psnr", "ssim"):
        raise InputError(f"best_metric must be auto, dice, psnr or ssim, got {name!r}")
    return name
