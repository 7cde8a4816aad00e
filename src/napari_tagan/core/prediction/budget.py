"""Memory budgeting of a prediction: how much a tile may use, where buffers live, OOM."""

from __future__ import annotations

import gc
import os
import tempfile

import numpy as np
import torch

from ..tiff import available_memory

#: Results larger than this (bytes, all outputs together) go to disk-backed memmaps.
MEMMAP_THRESHOLD = 1 << 30


def _physical_memory() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 << 30


def _available_memory() -> int:
    free = available_memory()
    return free if free is not None else _physical_memory() // 2


def default_memory_budget(device: torch.device) -> int:
    """Bytes of network activations one tile (or batch of tiles) may use on ``device``.

    CPU/MPS: a quarter of physical memory, at most 1 GiB (which bounds the peak memory of
    a very large image with its outputs); CUDA: 60 % of the free device memory.
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.6)
    return int(min(1 << 30, _physical_memory() / 4))


def whole_image_budget(device: torch.device) -> int:
    """Bytes of activations under which an image is run whole (one exact tile, no halo).

    A whole-image forward computes no halo twice, so it is the fastest way when memory
    allows: on the CPU/MPS up to 40 % of the currently available memory (at least the
    tile budget); on CUDA the tile budget. Larger images are tiled with
    :func:`default_memory_budget`, which bounds the peak memory whatever their size.
    """
    tiles = default_memory_budget(device)
    if device.type == "cuda":
        return tiles
    return max(tiles, int(0.4 * _available_memory()))


def budgets(device: torch.device, memory_budget: int | None) -> tuple[int, int]:
    """(tile budget, whole-image budget) in bytes; a caller's budget bounds both."""
    if memory_budget is not None:
        return int(memory_budget), int(memory_budget)
    return default_memory_budget(device), whole_image_budget(device)


def activation_bytes_per_pixel(width: int, backend: str) -> float:
    """Peak activation memory of one ResNet/U-Net forward per input pixel (bytes).

    About 3.5 full-resolution feature maps of ``width`` float32 channels for eager
    PyTorch, 6 for ONNX Runtime (its blocked layouts and the arena's rounding), both
    measured as peak RSS growth of a forward, with a margin.
    """
    maps = 6.0 if backend == "onnx" else 3.5
    return 4.0 * maps * width + 64.0


def use_disk(nbytes: int, on_disk: bool | None) -> bool:
    """Whether results of ``nbytes`` go to memmaps (``on_disk``; None: when large)."""
    return nbytes > MEMMAP_THRESHOLD if on_disk is None else bool(on_disk)


def alloc(shape: tuple[int, ...], on_disk: bool, fill: float | None = None) -> np.ndarray:
    """float32 array in memory, or in an anonymous temporary file (freed on last use)."""
    if on_disk:
        with tempfile.TemporaryFile(prefix="napari-tagan-") as fh:
            array = np.memmap(fh, dtype=np.float32, mode="w+", shape=shape)
        if fill is not None:
            array[...] = fill
        return array
    if fill is None:
        return np.empty(shape, np.float32)
    return np.full(shape, fill, np.float32)


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` says the host or the device ran out of memory."""
    if isinstance(exc, MemoryError):
        return True
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", ())
    return isinstance(exc, oom) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


def free_device_memory(device: torch.device) -> None:
    """Give cached device memory back before a retry."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":  # pragma: no cover - Apple only
        torch.mps.empty_cache()
