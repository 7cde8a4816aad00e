"""What a prediction will run on here, and why (``napari-tagan info --system``)."""

from __future__ import annotations

import warnings
from importlib import metadata

import torch

from ..device import autocast_dtype, cpu_has_native_bf16, resolve_device
from . import ONNX_AUTO_MIN_PIXELS, decide_backend, precision_name


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def system_report(device: str = "auto") -> list[str]:
    """Lines: the machine, the backends installed, and per precision the run's choice."""
    dev = resolve_device(device)
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):  # pragma: no cover - old torch
        capability = "unknown"
    lines = [
        f"torch:      {torch.__version__}, {torch.get_num_threads()} threads, "
        f"CPU {capability}, bf16 hardware: {'yes' if cpu_has_native_bf16() else 'no'}",
        f"device:     {dev} (from {device!r})",
        f"openvino:   {_version('openvino')}",
        f"onnxruntime: {_version('onnxruntime')}",
    ]
    for asked in ("fp32", "bf16"):
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            try:
                precision = precision_name(autocast_dtype(dev, asked))
            except ValueError as exc:  # InputError: e.g. fp16 on a CPU
                lines.append(f"{asked} run:   refused ({exc})")
                continue
        why = f" ({record[0].message})" if record else ""
        choice = decide_backend(
            "auto", device=dev, mode="eval", precision=precision, pixels=ONNX_AUTO_MIN_PIXELS
        )
        lines.append(
            f"{asked} run:   backend {choice.name}, precision {precision}{why} — {choice.reason}"
        )
    lines.append(
        "             (eval mode, images ≥ 1 MP or an exported network; "
        "smaller first runs and mc/original modes run eager)"
    )
    return lines
