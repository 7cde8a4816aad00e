"""OpenVINO on the CPU: compiled models of a network's ONNX export (eval mode).

The export is read with ``Core.read_model`` (no conversion path, which would send
telemetry) and compiled for one input shape at a time, which is faster than a
dynamic-shape model and compiles in well under a second; compiled models are cached in
memory per weights, precision and shape. Exact runs set ``INFERENCE_PRECISION_HINT`` to
f32 explicitly: on CPUs with bf16 hardware OpenVINO's default is bf16.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from .export import network_key, onnx_bytes

#: OpenVINO's names of our precisions.
HINTS = {"fp32": "f32", "bf16": "bf16"}

_MODELS: OrderedDict[str, object] = OrderedDict()  # key → read (uncompiled) model
_COMPILED: OrderedDict[tuple, object] = OrderedDict()  # (key, precision, shape) → compiled
_MAX_MODELS, _MAX_COMPILED = 4, 8
_LOCK = threading.Lock()


def available() -> bool:
    """Whether OpenVINO can be imported and runs on this CPU."""
    return core() is not None


@functools.cache
def core():
    """The process's OpenVINO ``Core`` with a CPU device, or None."""
    try:
        import openvino as ov

        c = ov.Core()
        return c if "CPU" in c.available_devices else None
    except Exception:  # ImportError, or a runtime that does not load on this CPU
        return None


def supports(precision: str) -> bool:
    """Whether OpenVINO runs ``precision`` natively on this CPU (bf16: hardware)."""
    c = core()
    if c is None or precision not in HINTS:
        return False
    caps = c.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return precision == "fp32" or "BF16" in caps


def _model(net: nn.Module, in_channels: int, stride: int):
    key = network_key(net, in_channels)
    if key not in _MODELS:
        _, data = onnx_bytes(net, in_channels, stride)
        _MODELS[key] = core().read_model(data)
        while len(_MODELS) > _MAX_MODELS:
            _MODELS.popitem(last=False)
    _MODELS.move_to_end(key)
    return key, _MODELS[key]


def compiled(net: nn.Module, in_channels: int, stride: int, precision: str, shape: tuple):
    """``net`` compiled for input ``shape`` (N, C, H, W) in ``precision``, cached."""
    with _LOCK:
        key, model = _model(net, in_channels, stride)
        ck = (key, precision, tuple(shape))
        if ck not in _COMPILED:
            static = model.clone()
            static.reshape({static.input(0): list(shape)})
            config = {
                "INFERENCE_PRECISION_HINT": HINTS[precision],
                "INFERENCE_NUM_THREADS": torch.get_num_threads(),
                "PERFORMANCE_HINT": "LATENCY",
            }
            _COMPILED[ck] = core().compile_model(static, "CPU", config)
            while len(_COMPILED) > _MAX_COMPILED:
                _COMPILED.popitem(last=False)
        _COMPILED.move_to_end(ck)
        return _COMPILED[ck]


def compiled_precision(model) -> str:
    """The precision a compiled model really runs, read back: ``fp32`` or ``bf16``."""
    name = model.get_property("INFERENCE_PRECISION_HINT").to_string()
    return {v: k for k, v in HINTS.items()}.get(name, name)


def in_memory(key: str) -> bool:
    """Whether the export of the network with this key is loaded."""
    return key in _MODELS


def runner(net: nn.Module, in_channels: int, stride: int, precision: str):
    """``run(batch, release=False)`` with OpenVINO in ``precision`` (fp32 or bf16)."""
    _model(net, in_channels, stride)  # export/read now, not inside the first tile

    def run_openvino(x: np.ndarray, release: bool = False) -> np.ndarray:
        x = np.ascontiguousarray(x, np.float32)
        request = compiled(net, in_channels, stride, precision, x.shape).create_infer_request()
        y = request.infer({0: x})[0]
        return np.array(y, np.float32)  # a copy: the request's buffer is reused

    return run_openvino
