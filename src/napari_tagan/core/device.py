"""Device selection: ``auto`` means CUDA, then Apple MPS, then CPU."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch

from .errors import InputError


class AmpUnavailableWarning(UserWarning):
    """Mixed precision was asked for where it would not help; the work runs in fp32."""


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn ``auto``/``cpu``/``cuda``/``cuda:N``/``mps`` into an available torch device.

    Raises
    ------
    InputError
        If the device is malformed or not available on this machine.
    """
    if isinstance(device, torch.device):
        return device
    name = (device or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise InputError(
            f"unknown device {device!r}; expected auto, cpu, cuda, cuda:N or mps"
        ) from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {device!r} asked for, but CUDA is not available here")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(
                f"device {device!r} asked for, but only {torch.cuda.device_count()} "
                "CUDA device(s) exist"
            )
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"device {device!r} asked for, but Apple MPS is not available here")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"unsupported device {device!r}; expected auto, cpu, cuda, cuda:N or mps")
    return dev


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AMX tiles or AVX512-BF16).

    Without it oneDNN emulates bf16 and mixed precision is slower than fp32.
    """
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def cpu_prefers_channels_last() -> bool:
    """Whether fp32 convolutions run faster channels-last on this CPU.

    True where ATen runs its AVX512 kernels; on AVX2 CPUs channels-last is slower
    (``benchmarks/bench_train.py``).
    """
    try:
        return "AVX512" in torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        return False


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype for ``precision`` (``fp32``, ``bf16``, ``fp16``, ``auto``) on ``device``.

    The one precision policy of training and prediction. ``auto`` is the fastest mixed
    precision the device has: on CUDA bf16 where supported, else fp16; on a CPU bf16 where
    it has bf16 hardware. Returns None for fp32, and falls back to fp32 with one
    :class:`AmpUnavailableWarning` where the precision would not help: a CPU without bf16
    hardware (emulated bf16 is slower than fp32), MPS for ``auto``.

    Raises
    ------
    InputError
        Unknown precision, or fp16 on a CPU.
    """
    if precision not in ("fp32", "bf16", "fp16", "auto"):
        raise InputError(f"unknown precision {precision!r}; expected fp32, bf16, fp16 or auto")
    if precision == "fp32":
        return None
    if precision == "fp16" and device.type == "cpu":
        raise InputError("fp16 needs a GPU (cuda or mps); use bf16 or fp32 on the CPU")
    if device.type == "cuda":
        if precision == "auto":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if precision == "bf16" else torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    if device.type == "mps" and precision != "auto":
        return torch.bfloat16 if precision == "bf16" else torch.float16
    why = (
        "this CPU has no bf16 hardware (AMX or AVX512-BF16), where bf16 is slower"
        if device.type == "cpu"
        else f"not available on {device.type}"
    )
    warnings.warn(
        f"mixed precision is off: {why}; running in fp32", AmpUnavailableWarning, stacklevel=2
    )
    return None


def dtype_name(dtype: torch.dtype | None) -> str | None:
    """``bfloat16``/``float16`` for an autocast dtype; None for fp32."""
    return str(dtype).removeprefix("torch.") if dtype is not None else None


def prefers_channels_last(device: torch.device, amp_dtype: torch.dtype | None) -> bool:
    """The memory format policy: channels-last on CUDA, with bf16 and on AVX512 CPUs.

    Contiguous for fp32 on AVX2 CPUs, where channels-last convolutions are slower.
    """
    return (
        device.type == "cuda"
        or amp_dtype is not None
        or (device.type == "cpu" and cpu_prefers_channels_last())
    )


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager[Any]:
    """``torch.autocast`` for ``dtype``; a no-op context for fp32 (None)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[None]:
    """Deterministic algorithms and no cuDNN autotuning (``enabled``) within the block."""
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0])
        torch.backends.cudnn.deterministic = previous[1]
        torch.backends.cudnn.benchmark = previous[2]


@dataclass(frozen=True)
class Placement:
    """Where and how networks run: device, autocast dtype (None: fp32), memory format."""

    device: torch.device
    amp_dtype: torch.dtype | None
    memory_format: torch.memory_format

    @classmethod
    def choose(
        cls, device: torch.device, *, amp: bool, channels_last: bool | None = None
    ) -> Placement:
        """The policy: ``auto`` autocast if ``amp``, :func:`prefers_channels_last`."""
        dtype = autocast_dtype(device, "auto") if amp else None
        if channels_last is None:
            channels_last = prefers_channels_last(device, dtype)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        return cls(device, dtype, fmt)

    def autocast(self) -> AbstractContextManager[Any]:
        """Autocast for :attr:`amp_dtype` on :attr:`device`."""
        return autocast(self.device, self.amp_dtype)
