"""Data-parallel training across processes (``torchrun --nproc-per-node N ...``).

torchrun sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; :func:`init_distributed` joins
the process group (gloo on CPU, NCCL on CUDA) and the trainer wraps each network that is
being updated in :class:`torch.nn.parallel.DistributedDataParallel`. Only rank 0 writes
files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistributedContext:
    """Where the current process sits in a data-parallel run."""

    rank: int
    world_size: int
    local_rank: int
    backend: str


def launched_distributed() -> bool:
    """True when started by torchrun (or similar) with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: torch.device) -> DistributedContext | None:
    """Join the process group torchrun describes; None for a single-process run.

    The backend is NCCL for CUDA devices, gloo otherwise. A CUDA process uses the GPU of
    its local rank.
    """
    if not launched_distributed():
        return None
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistributedContext(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        backend=dist.get_backend(),
    )


def shutdown_distributed() -> None:
    """Leave the process group after a run that finished on every rank.

    All ranks meet at a barrier first: a rank that tears gloo down while another is still
    in its last collective aborts the other. Call it only after a successful run; after an
    error on one rank the barrier would wait for ever.
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm running statistics) to every rank."""
    for buf in module.buffers():
        dist.broadcast(buf.data, src)


def mean_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over all ranks (in place; a CPU tensor works with gloo)."""
    dist.all_reduce(values)
    values /= dist.get_world_size()
    return values


def any_rank(flag: bool, device: torch.device) -> bool:
    """Whether ``flag`` is true on any rank."""
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def data_parallel(net: nn.Module, device: torch.device) -> nn.Module:
    """``net`` wrapped for data-parallel training on ``device``."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(net, device_ids=ids)
