"""The ONNX export of a network, which ONNX Runtime and OpenVINO both load.

Exported once per weights: cached in memory and on disk (``$NAPARI_TAGAN_CACHE`` or
``~/.cache/napari-tagan``), keyed by a hash of the network's structure and weights.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import os
import warnings
import weakref
from pathlib import Path

import torch
from torch import nn

from ..io import atomic_output

#: Hashes of networks seen in this process, per module and parameter versions (hashing
#: 10 M weights costs ~0.1 s, which a run should pay once, not per network call).
_KEYS: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, str]] = weakref.WeakKeyDictionary()


def cache_root() -> Path:
    """Folder of the package's caches (exports, measured halos)."""
    root = os.environ.get("NAPARI_TAGAN_CACHE")
    if root:
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "napari-tagan"


def cache_dir() -> Path:
    """Folder of cached ONNX exports."""
    return cache_root() / "onnx"


def _versions(net: nn.Module, in_channels: int) -> tuple | None:
    state = net.state_dict()
    if any(v.is_inference() for v in state.values()):
        return None  # inference tensors keep no version counter: hash every time
    return (in_channels, tuple((k, v.data_ptr(), v._version) for k, v in state.items()))


def network_key(net: nn.Module, in_channels: int) -> str:
    """Hash of a network's structure and weights (what an export depends on)."""
    versions = _versions(net, in_channels)
    known = _KEYS.get(net)
    if versions is not None and known is not None and known[0] == versions:
        return known[1]
    h = hashlib.sha256()
    h.update(repr(net).encode())
    h.update(f"in={in_channels};torch={torch.__version__}".encode())
    for name, tensor in net.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    key = h.hexdigest()[:32]
    if versions is not None:
        _KEYS[net] = (versions, key)
    return key


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


def onnx_bytes(
    net: nn.Module, in_channels: int, stride: int, *, use_disk_cache: bool = True
) -> tuple[str, bytes]:
    """(key, ONNX model) of ``net``: from the disk cache, else exported (and cached)."""
    key = network_key(net, in_channels)
    path = cache_dir() / f"{key}.onnx"
    if use_disk_cache and path.is_file():
        return key, path.read_bytes()
    data = export_onnx(net, in_channels, stride)
    if use_disk_cache:
        with contextlib.suppress(OSError), atomic_output(path) as tmp:
            tmp.write_bytes(data)
    return key, data


def has_disk_export(net: nn.Module, in_channels: int) -> bool:
    """Whether an export of ``net`` is on disk."""
    return (cache_dir() / f"{network_key(net, in_channels)}.onnx").is_file()
