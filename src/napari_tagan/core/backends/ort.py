"""ONNX Runtime on the CPU: sessions of a network's export (eval mode, fp32)."""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from .export import onnx_bytes

_SESSIONS: OrderedDict[str, object] = OrderedDict()
_MAX_SESSIONS = 4
_ARENA: list[bool] = []
_ARENA_LOCK = threading.Lock()


def available() -> bool:
    """Whether ONNX Runtime (and the ``onnx`` package the exporter needs) can be imported."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _shared_arena() -> bool:
    """Register one CPU memory arena for all our sessions (once per process).

    An arena per session keeps each one's peak; no arena faults memory in afresh on every
    run; one shared arena, grown on demand and given back after a pass (``release``),
    holds the least with no page faults after the first run.
    """
    with _ARENA_LOCK:
        if _ARENA:
            return _ARENA[0]
        import onnxruntime as ort

        try:
            info = ort.OrtMemoryInfo(
                "Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
            )
            config = ort.OrtArenaCfg(
                {"arena_extend_strategy": 1, "initial_chunk_size_bytes": 1 << 20, "max_mem": 0}
            )
            ort.create_and_register_allocator(info, config)
            _ARENA.append(True)
        except Exception:  # pragma: no cover - an older runtime or one registered elsewhere
            _ARENA.append(False)
    return _ARENA[0]


def session(net: nn.Module, in_channels: int, stride: int, *, use_disk_cache: bool = True):
    """An ONNX Runtime session for ``net``, exported once per weights and cached."""
    import onnxruntime as ort

    key, data = _cached_or_export(net, in_channels, stride, use_disk_cache)
    if data is None:
        return _SESSIONS[key]
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = torch.get_num_threads()
    options.log_severity_level = 3
    if _shared_arena():
        options.add_session_config_entry("session.use_env_allocators", "1")
        # Per-tensor allocations from the shared arena, not one planned block per input
        # shape (which the arena would keep beside the first run's).
        options.enable_mem_pattern = False
    else:  # pragma: no cover - only when ONNX Runtime refuses the shared arena
        options.enable_cpu_mem_arena = False
    sess = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    _SESSIONS[key] = sess
    while len(_SESSIONS) > _MAX_SESSIONS:
        _SESSIONS.popitem(last=False)
    return sess


def _cached_or_export(
    net: nn.Module, in_channels: int, stride: int, use_disk_cache: bool
) -> tuple[str, bytes | None]:
    from .export import network_key

    key = network_key(net, in_channels)
    if key in _SESSIONS:
        _SESSIONS.move_to_end(key)
        return key, None
    return onnx_bytes(net, in_channels, stride, use_disk_cache=use_disk_cache)


def in_memory(key: str) -> bool:
    """Whether a session of the network with this key is open."""
    return key in _SESSIONS


def runner(net: nn.Module, in_channels: int, stride: int):
    """``run(batch, release=False)`` with ONNX Runtime; ``release`` shrinks its arena."""
    import onnxruntime as ort

    sess = session(net, in_channels, stride)
    shrink = ort.RunOptions()
    shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    def run_onnx(x: np.ndarray, release: bool = False) -> np.ndarray:
        inputs = {"x": np.ascontiguousarray(x, np.float32)}
        (y,) = sess.run(None, inputs, shrink if release and _shared_arena() else None)
        return np.array(y, np.float32)  # a copy: nothing of the arena outlives the run

    return run_onnx
