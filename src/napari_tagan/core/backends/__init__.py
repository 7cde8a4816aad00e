"""Ways to run one network on a batch of tiles, and the one place that picks among them.

Every runner maps a float32 (N, C, Y, X) numpy batch in network units to a float32 numpy
output. ``eager`` is the reference (under autocast for mixed precision);
``channels_last`` is eager with NHWC memory layout; ``openvino`` and ``onnx`` run the
network's ONNX export (eval mode) with OpenVINO or ONNX Runtime on the CPU, which were
measured faster than eager on these networks with the same fp32 output
(``benchmarks/bench_predict.py``). :func:`decide_backend` picks one: OpenVINO, then ONNX
Runtime, then eager.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch
from torch import nn

from ..device import prefers_channels_last
from ..errors import InputError
from . import eager, ort, ov
from .export import cache_dir, export_onnx, has_disk_export, network_key

__all__ = [
    "BACKENDS",
    "PRECISIONS",
    "BackendChoice",
    "amp_dtype",
    "cache_dir",
    "choose_backend",
    "decide_backend",
    "export_onnx",
    "has_cached_export",
    "make_runner",
    "network_key",
    "onnx_available",
    "openvino_available",
    "precision_name",
]

BackendName = Literal["auto", "eager", "channels_last", "onnx", "openvino"]
BACKENDS: tuple[str, ...] = get_args(BackendName)
Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)

#: With ``backend="auto"``, images of at least this many pixels run on an exported
#: network on the CPU even when no export is cached yet (the export costs about as
#: much as this much eager work at full width).
ONNX_AUTO_MIN_PIXELS = 1 << 20

#: ``run(batch, release=False)``; ``release=True`` on a pass's last batch gives the memory
#: that the runs held back to the system (ONNX Runtime's arena; the others free as they go).
Runner = Callable[..., np.ndarray]

onnx_available = ort.available
openvino_available = ov.available


@dataclass(frozen=True)
class BackendChoice:
    """A backend and why it was chosen (``napari-tagan info --system`` prints both)."""

    name: str
    reason: str


_AMP: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def precision_name(amp: torch.dtype | None) -> str:
    """``fp32`` for no autocast, else ``bf16``/``fp16``."""
    return next(name for name, dtype in _AMP.items() if dtype == amp)


def amp_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of an effective precision (None for fp32)."""
    return _AMP[precision]


def has_cached_export(net: nn.Module, in_channels: int) -> bool:
    """Whether an export of ``net`` is already in memory or on disk (no export cost)."""
    key = network_key(net, in_channels)
    return ort.in_memory(key) or ov.in_memory(key) or has_disk_export(net, in_channels)


def _check_requested(name: str, device: torch.device, mode: str, precision: str) -> None:
    if name not in BACKENDS:
        raise InputError(f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")
    if name == "onnx":
        if mode != "eval" or precision != "fp32" or device.type != "cpu":
            raise InputError("the onnx backend runs eval mode in fp32 on the CPU only")
        if not onnx_available():
            raise InputError("the onnx backend needs onnxruntime and onnx: pip install them")
    if name == "openvino":
        if mode != "eval" or precision not in ov.HINTS or device.type != "cpu":
            raise InputError("the openvino backend runs eval mode in fp32 or bf16 on the CPU only")
        if not openvino_available():
            raise InputError("the openvino backend needs openvino: pip install openvino")
        if not ov.supports(precision):
            raise InputError(f"OpenVINO has no {precision} on this CPU; use fp32")


def decide_backend(
    requested: str,
    *,
    device: torch.device,
    mode: str,
    precision: str,
    pixels: int,
    exported: Callable[[], bool] = lambda: False,
) -> BackendChoice:
    """The backend ``requested`` names (checked), or for ``auto`` the fastest that fits.

    ``precision`` is the effective one (after :func:`~napari_tagan.core.device.autocast_dtype`);
    ``exported()`` says whether the network's export is cached. ``auto`` on the CPU in eval
    mode, for images of ≥ :data:`ONNX_AUTO_MIN_PIXELS` or a cached export: OpenVINO
    (fp32, or bf16 on bf16 hardware), else ONNX Runtime (fp32); otherwise eager,
    channels-last where :func:`~napari_tagan.core.device.prefers_channels_last`.
    """
    if requested != "auto":
        _check_requested(requested, device, mode, precision)
        return BackendChoice(requested, "asked for")
    if device.type != "cpu":
        return BackendChoice("eager", f"eager PyTorch on {device.type}")
    plain = "channels_last" if prefers_channels_last(device, amp_dtype(precision)) else "eager"
    if mode != "eval":
        return BackendChoice(plain, f"{mode} mode runs the PyTorch networks (dropout/BN)")
    if pixels < ONNX_AUTO_MIN_PIXELS and not exported():
        return BackendChoice(plain, "small image and no cached export (exporting costs more)")
    if openvino_available() and ov.supports(precision):
        return BackendChoice("openvino", f"OpenVINO installed, {precision} on this CPU")
    if precision == "fp32" and onnx_available():
        why = "OpenVINO not installed" if not openvino_available() else "no OpenVINO bf16"
        return BackendChoice("onnx", f"{why}; ONNX Runtime installed")
    return BackendChoice(plain, "neither OpenVINO nor ONNX Runtime runs it here")


def choose_backend(
    requested: str,
    net: nn.Module,
    in_channels: int,
    *,
    device: torch.device,
    mode: str,
    precision: str,
    pixels: int,
) -> str:
    """The name :func:`decide_backend` picks for ``net`` (its export cache consulted)."""
    return decide_backend(
        requested,
        device=device,
        mode=mode,
        precision=precision,
        pixels=pixels,
        exported=lambda: has_cached_export(net, in_channels),
    ).name


def make_runner(
    net: nn.Module,
    *,
    backend: str,
    device: torch.device,
    amp: torch.dtype | None = None,
    in_channels: int = 1,
    stride: int = 4,
) -> Runner:
    """A function running ``net`` on float32 numpy batches (see the module docstring).

    Call it inside ``torch.inference_mode()`` and the network mode the caller wants;
    ``onnx`` and ``openvino`` always run eval-mode weights (deterministic prediction).
    """
    if backend == "onnx":
        return ort.runner(net, in_channels, stride)
    if backend == "openvino":
        return ov.runner(net, in_channels, stride, precision_name(amp))
    if backend not in ("eager", "channels_last"):
        raise InputError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    return eager.runner(net, device, amp, channels_last=backend == "channels_last")
