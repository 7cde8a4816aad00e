"""Whole-image prediction: confocal in, synthetic STED and segmentation out.

:func:`predict` is the public entry point. It is built from three steps that the tiled
engine reuses piece by piece: :func:`prepare_input` (validate, normalize with whole-image
statistics), :func:`forward` (the networks on a normalized batch, in a chosen
:data:`Mode`), and :func:`finish` (back to intensity units and probabilities).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from .device import resolve_device
from .errors import InputError
from .model import TAGANModel
from .networks import ARCH_STRIDE
from .normalization import NormStats, denormalize, normalize, target_to_probability

#: ``eval``: running BN statistics, no dropout (deterministic).
#: ``mc``: eval, but dropout active: N stochastic generations → mean and std.
#: ``original``: BN batch statistics and dropout, as the original test script without
#: ``--eval`` (whole image only; results depend on the image extent).
Mode = Literal["eval", "mc", "original"]
MODES: tuple[str, ...] = ("eval", "mc", "original")


@dataclass
class PredictionResult:
    """Output of :func:`predict`.

    ``synthetic_sted`` has the input image's shape ((Y, X) or (C, Y, X)), float32, in the
    input's intensity units. ``segmentation`` is (n_classes, Y, X) float32 probabilities in
    [0, 1] (None without a segmenter). ``variability`` is the per-pixel standard deviation
    of the synthetic STED over generations (None for a single generation).
    """

    synthetic_sted: np.ndarray
    segmentation: np.ndarray | None
    variability: np.ndarray | None
    class_names: tuple[str, ...]
    metadata: dict[str, Any] = field(default_factory=dict)


def as_channels_first(model: TAGANModel, image: Any) -> tuple[Any, bool]:
    """Check an image against the model's channel count; return (C, Y, X) and was-2D.

    Works on numpy and dask arrays without loading them.
    """
    cfg = model.config
    shape = tuple(image.shape)
    dtype = np.dtype(image.dtype)
    if not (np.issubdtype(dtype, np.number) or dtype == np.bool_) or np.issubdtype(
        dtype, np.complexfloating
    ):
        raise InputError(f"image dtype {dtype} is not a real number type")
    if len(shape) == 2:
        if cfg.image_channels != 1:
            raise InputError(
                f"the {cfg.preset!r} model expects {cfg.image_channels} channels "
                f"({', '.join(cfg.channel_names)}) as a (C, Y, X) image; got a 2D image"
            )
        return image[None], True
    if len(shape) == 3 and shape[0] == cfg.image_channels:
        return image, False
    if len(shape) == 3:
        raise InputError(
            f"image of shape {shape}: the {cfg.preset!r} model expects "
            f"{cfg.image_channels} channel(s) ({', '.join(cfg.channel_names)}) first, "
            f"i.e. ({cfg.image_channels}, Y, X){' or (Y, X)' if cfg.image_channels == 1 else ''}"
        )
    raise InputError(
        f"image of shape {shape}: expected a 2D image (Y, X) or channels-first (C, Y, X); "
        "for stacks, predict plane by plane"
    )


def check_finite(array: np.ndarray, what: str = "image") -> None:
    """Raise :class:`InputError` if ``array`` holds NaN or infinite values."""
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise InputError(f"{what} holds {bad} NaN or infinite pixel(s); fix or mask them first")


def sted_region_channels(
    model: TAGANModel,
    shape: tuple[int, int],
    sted: np.ndarray | None,
    sted_mask: np.ndarray | None,
) -> np.ndarray:
    """The live preset's extra G inputs: STED where acquired (−1 elsewhere) and the map.

    Without ``sted`` both channels are −1 everywhere (no STED acquired).
    """
    a = model.config.normalization.out_range[0]
    regions = np.full((2, *shape), a, dtype=np.float32)
    if sted is None:
        return regions
    sted = np.asarray(sted, np.float32)
    if sted.shape != shape:
        raise InputError(f"STED image of shape {sted.shape} does not match confocal {shape}")
    mask = np.ones(shape, bool) if sted_mask is None else np.asarray(sted_mask) != 0
    sted_norm, _ = normalize(sted[None], model.config.normalization)
    regions[0][mask] = sted_norm[0][mask]
    regions[1][mask] = 1.0
    return regions


def prepare_input(
    model: TAGANModel,
    image: Any,
    *,
    sted: np.ndarray | None = None,
    sted_mask: np.ndarray | None = None,
    stats: NormStats | None = None,
) -> tuple[np.ndarray, NormStats, bool]:
    """Validate and normalize a whole image; returns (G input (input_nc, Y, X), stats, was2d)."""
    chw, was_2d = as_channels_first(model, image)
    array = np.asarray(chw)
    check_finite(array)
    x, stats = normalize(array, model.config.normalization, stats)
    if model.config.sted_regions_input:
        x = np.concatenate([x, sted_region_channels(model, x.shape[1:], sted, sted_mask)], 0)
    return x, stats, was_2d


def padded_size(size: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is ≥ ``size``."""
    return -(-size // multiple) * multiple


def required_multiple(model: TAGANModel) -> int:
    """Side lengths the networks accept: multiples of their total stride."""
    archs = [model.config.generator]
    if model.config.segmenter is not None:
        archs.append(model.config.segmenter)
    return max(ARCH_STRIDE[a] for a in archs)


#: Smallest padded side a ResNet accepts: its 4× down-sampled map must be ≥ 2 pixels for
#: the residual blocks' reflection padding.
MIN_RESNET_SIDE = 8


def pad_to_multiple(
    x: torch.Tensor, multiple: int, minimum: int = MIN_RESNET_SIDE
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad the bottom/right of (N, C, Y, X) to multiples (≥ ``minimum``); returns it and (Y, X).

    Reflection padding where the image is large enough, edge replication otherwise.
    """
    h, w = x.shape[-2:]
    ph = max(padded_size(h, multiple), minimum) - h
    pw = max(padded_size(w, multiple), minimum) - w
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = nn.functional.pad(x, (0, pw, 0, ph), mode=mode)
    return x, (h, w)


@contextlib.contextmanager
def network_mode(model: TAGANModel, mode: Mode) -> Iterator[TAGANModel]:
    """Put G and S in the state ``mode`` needs, without changing the caller's model.

    ``original`` runs a copy in training mode, so BatchNorm's batch statistics do not leak
    into the caller's running statistics.
    """
    if mode not in MODES:
        raise InputError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    was_training = {name: net.training for name, net in model.networks().items()}
    if mode == "original":
        working = copy.deepcopy(model)
        for net in working.networks().values():
            net.train()
    else:
        working = model
        model.eval()
        if mode == "mc":
            for net in (model.generator, model.segmenter):
                for m in net.modules() if net is not None else ():
                    if isinstance(m, nn.Dropout):
                        m.train()
    try:
        yield working
    finally:
        for name, net in model.networks().items():
            net.train(was_training[name])


def forward(
    model: TAGANModel, x: torch.Tensor, *, segment: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """G (and S on G's output) on a normalized (N, C, Y, X) batch, in network units.

    The batch is padded to the networks' stride and cropped back. Call it inside
    :func:`network_mode` and ``torch.inference_mode``.
    """
    padded, (h, w) = pad_to_multiple(x, required_multiple(model))
    sted = model.generator(padded)
    seg = model.segmenter(sted) if segment and model.segmenter is not None else None
    return sted[..., :h, :w], (seg[..., :h, :w] if seg is not None else None)


def finish(
    model: TAGANModel,
    sted_net: np.ndarray,
    seg_net: np.ndarray | None,
    stats: NormStats,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Network units → intensity units (STED) and probabilities (segmentation)."""
    sted = denormalize(sted_net, model.config.normalization, stats)
    seg = target_to_probability(seg_net, model.config.mask_range) if seg_net is not None else None
    return sted, seg


@contextlib.contextmanager
def seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Seed torch's RNG for the body only (the caller's RNG state is restored)."""
    if seed is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


ProgressCallback = Callable[[int, int], None]


def predict(
    model: TAGANModel,
    image: Any,
    *,
    device: str | torch.device | None = None,
    mode: Mode = "eval",
    generations: int = 1,
    seed: int | None = 0,
    segment: bool = True,
    sted: np.ndarray | None = None,
    sted_mask: np.ndarray | None = None,
    progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> PredictionResult:
    """Enhance one whole 2D image (or channels-first multi-channel image).

    Parameters
    ----------
    model
        A loaded or freshly built :class:`TAGANModel`.
    image
        (Y, X) or (C, Y, X) array of any real dtype, in microscope intensity units.
    device
        ``auto``/``cpu``/``cuda``/``cuda:N``/``mps``, or None to stay where the model is.
    mode
        ``eval`` (deterministic), ``mc`` (dropout generations) or ``original``.
    generations
        Number of generations to average; > 1 also returns the variability (std) map.
    seed
        Seed of the stochastic modes; the same seed gives the same result.
    segment
        Run S on the synthetic STED (when the model has one).
    sted, sted_mask
        Live preset only: STED acquired in some regions and where (the decision map).
    progress, should_stop
        ``progress(done, total)`` after each generation; ``should_stop()`` → stop early
        (raises :class:`InterruptedError`).

    Returns
    -------
    PredictionResult
    """
    if generations < 1:
        raise InputError(f"generations must be ≥ 1, got {generations}")
    if mode == "eval" and generations > 1:
        raise InputError("eval mode is deterministic: use mode 'mc' for several generations")
    dev = model.device if device is None else resolve_device(device)
    model.to(dev)
    x, stats, was_2d = prepare_input(model, image, sted=sted, sted_mask=sted_mask)
    batch = torch.from_numpy(x)[None].to(dev)
    mean = m2 = seg_mean = None
    with network_mode(model, mode) as net, torch.inference_mode(), seeded(seed, dev):
        for g in range(generations):
            if should_stop is not None and should_stop():
                raise InterruptedError("prediction cancelled")
            s_out, seg_out = forward(net, batch, segment=segment)
            seg_np = None if seg_out is None else seg_out[0].float().cpu().numpy()
            sted_g, seg_g = finish(model, s_out[0].float().cpu().numpy(), seg_np, stats)
            # Welford's running mean and M2: identical generations give exactly zero std.
            if mean is None:
                mean, m2 = sted_g, np.zeros_like(sted_g)
            else:
                delta = sted_g - mean
                mean = mean + delta / np.float32(g + 1)
                m2 = m2 + delta * (sted_g - mean)
            if seg_g is not None:
                seg_mean = seg_g if seg_mean is None else seg_mean + (seg_g - seg_mean) / (g + 1)
            if progress is not None:
                progress(g + 1, generations)
    assert mean is not None and m2 is not None
    variability = np.sqrt(m2 / generations).astype(np.float32) if generations > 1 else None
    seg_mean = None if seg_mean is None else seg_mean.astype(np.float32)
    if was_2d:
        mean = mean[0]
        variability = None if variability is None else variability[0]
    return PredictionResult(
        synthetic_sted=mean.astype(np.float32),
        segmentation=seg_mean,
        variability=variability,
        class_names=model.config.class_names if seg_mean is not None else (),
        metadata={
            **model.describe(),
            "mode": mode,
            "generations": generations,
            "seed": seed,
            "device": str(dev),
            "normalization_stats": stats.to_dict(),
        },
    )
