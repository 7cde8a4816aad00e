"""Ways to run one network on a batch of tiles: eager PyTorch or ONNX Runtime.

Every runner maps a float32 (N, C, Y, X) numpy batch in network units to a float32 numpy
output. ``eager`` is the reference (optionally under mixed precision on a GPU);
``channels_last`` is eager with NHWC memory layout; ``onnx`` runs an export of the network
with ONNX Runtime's CPU kernels, which were measured faster than eager on these networks
with the same output (``benchmarks/bench_predict.py``). Exports are cached in memory per
network and on disk per weights (``$NAPARI_TAGAN_CACHE`` or ``~/.cache/napari-tagan``).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch
from torch import nn

from .device import AmpUnavailableWarning, cpu_has_native_bf16
from .errors import InputError
from .io import atomic_output

BackendName = Literal["auto", "eager", "channels_last", "onnx"]
BACKENDS: tuple[str, ...] = get_args(BackendName)
Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)

#: With ``backend="auto"``, images of at least this many pixels use ONNX Runtime on the
#: CPU even when no export is cached yet (the export costs about as much as this much
#: eager work at full width).
ONNX_AUTO_MIN_PIXELS = 1 << 20

#: ``run(batch, release=False)``; ``release=True`` on a pass's last batch gives the memory
#: that the runs held back to the system (ONNX Runtime's arena; eager frees as it goes).
Runner = Callable[..., np.ndarray]

_SESSIONS: OrderedDict[str, object] = OrderedDict()
_MAX_SESSIONS = 4


def onnx_available() -> bool:
    """Whether ONNX Runtime (and the ``onnx`` package the exporter needs) can be imported."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def cache_dir() -> Path:
    """Folder of cached ONNX exports."""
    root = os.environ.get("NAPARI_TAGAN_CACHE")
    if root:
        return Path(root) / "onnx"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "napari-tagan" / "onnx"


def network_key(net: nn.Module, in_channels: int) -> str:
    """Hash of a network's structure and weights (what an export depends on)."""
    h = hashlib.sha256()
    h.update(repr(net).encode())
    h.update(f"in={in_channels};torch={torch.__version__}".encode())
    for name, tensor in net.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:32]


def export_onnx(net: nn.Module, in_channels: int, stride: int) -> bytes:
    """Export ``net`` (eval mode, float32, CPU) with dynamic batch and image size."""
    export_net = copy.deepcopy(net).float().cpu().eval()
    dummy = torch.zeros(1, in_channels, 16 * stride, 16 * stride)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            export_net,
            (dummy,),
            buf,
            dynamo=False,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}, "y": {0: "n", 2: "h", 3: "w"}},
            opset_version=17,
        )
    return buf.getvalue()


_ARENA: list[bool] = []
_ARENA_LOCK = threading.Lock()


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


def onnx_session(net: nn.Module, in_channels: int, stride: int, *, use_disk_cache: bool = True):
    """An ONNX Runtime session for ``net``, exported once per weights and cached."""
    import onnxruntime as ort

    key = network_key(net, in_channels)
    if key in _SESSIONS:
        _SESSIONS.move_to_end(key)
        return _SESSIONS[key]
    path = cache_dir() / f"{key}.onnx"
    data = None
    if use_disk_cache and path.is_file():
        data = path.read_bytes()
    if data is None:
        data = export_onnx(net, in_channels, stride)
        if use_disk_cache:
            with contextlib.suppress(OSError), atomic_output(path) as tmp:
                tmp.write_bytes(data)
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
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    _SESSIONS[key] = session
    while len(_SESSIONS) > _MAX_SESSIONS:
        _SESSIONS.popitem(last=False)
    return session


def has_cached_export(net: nn.Module, in_channels: int) -> bool:
    """Whether an export of ``net`` is already in memory or on disk (no export cost)."""
    key = network_key(net, in_channels)
    return key in _SESSIONS or (cache_dir() / f"{key}.onnx").is_file()


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


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
    """The backend ``requested`` names, or for ``auto`` the fastest one that fits the run.

    ``auto``: channels-last for bf16 on the CPU (oneDNN's bf16 convolutions want NHWC);
    ONNX Runtime for eval-mode fp32 on the CPU when installed and the work repays the
    export (``pixels`` ≥ :data:`ONNX_AUTO_MIN_PIXELS`, or ``net`` already exported);
    else eager.
    """
    if requested != "auto":
        return requested
    if device.type == "cpu" and precision == "bf16":
        return "channels_last"
    if device.type != "cpu" or mode != "eval" or precision != "fp32" or not onnx_available():
        return "eager"
    if pixels >= ONNX_AUTO_MIN_PIXELS or has_cached_export(net, in_channels):
        return "onnx"
    return "eager"


def check_precision(precision: str, device: torch.device) -> None:
    """Reject precisions the device cannot run (fp16 needs a GPU).

    bf16 on a CPU without bf16 hardware runs (oneDNN emulates it) but is slower than fp32:
    an :class:`~napari_tagan.core.device.AmpUnavailableWarning` says so.
    """
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; expected fp32, bf16 or fp16")
    if precision == "fp16" and device.type == "cpu":
        raise InputError("fp16 needs a GPU (cuda or mps); use bf16 or fp32 on the CPU")
    if precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        warnings.warn(
            "bf16 on this CPU is emulated (no AMX or AVX512-BF16) and slower than fp32; "
            "use fp32 here",
            AmpUnavailableWarning,
            stacklevel=3,
        )


def make_runner(
    net: nn.Module,
    *,
    backend: str,
    device: torch.device,
    precision: str = "fp32",
    in_channels: int = 1,
    stride: int = 4,
) -> Runner:
    """A function running ``net`` on float32 numpy batches (see the module docstring).

    Call it inside ``torch.inference_mode()`` and the network mode the caller wants;
    ``onnx`` always runs eval-mode weights (deterministic prediction only).
    """
    if backend == "onnx":
        import onnxruntime as ort

        session = onnx_session(net, in_channels, stride)
        shrink = ort.RunOptions()
        shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

        def run_onnx(x: np.ndarray, release: bool = False) -> np.ndarray:
            inputs = {"x": np.ascontiguousarray(x, np.float32)}
            (y,) = session.run(None, inputs, shrink if release and _shared_arena() else None)
            return np.array(y, np.float32)  # a copy: nothing of the arena outlives the run

        return run_onnx
    if backend not in ("eager", "channels_last"):
        raise InputError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    memory_format = torch.channels_last if backend == "channels_last" else torch.contiguous_format
    if backend == "channels_last":
        net.to(memory_format=memory_format)

    def run_eager(x: np.ndarray, release: bool = False) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(device)
        t = t.contiguous(memory_format=memory_format)
        with _autocast(device, precision):
            y = net(t)
        return y.float().contiguous().cpu().numpy()

    return run_eager
