"""Device selection: ``auto`` means CUDA, then Apple MPS, then CPU."""

from __future__ import annotations

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

    There bf16 autocast runs convolutions about 4× faster than fp32 (measured on a
    2-core Xeon with AMX: 8×256×32² 3×3 convolution forward + backward, 0.109 → 0.027 s);
    without it oneDNN emulates bf16 and mixed precision is slower than fp32.
    """
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def cpu_prefers_channels_last() -> bool:
    """Whether fp32 training convolutions run faster channels-last on this CPU.

    Measured with ``benchmarks/bench_train.py`` (batch 8, crop 128): on a 2-core AVX512
    Xeon 8.20 s contiguous vs 6.56 s channels-last per iteration; on a 2-core AVX2 machine
    channels-last was 2–3× slower. So: where ATen runs its AVX512 kernels.
    """
    try:
        return "AVX512" in torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        return False
