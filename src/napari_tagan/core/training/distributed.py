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


@dataclass(frozen=True)
class DistributedContext:
    """Where the current process sits in a data-parallel run."""

    rank: int
    world_size: int
    local_rank: int
    backend: str

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes checkpoints, CSV files and reports."""
        return self.rank == 0


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

    All ranks meet at a barrier first: a rank that tore gloo down while another was still
    in its last collective aborted with "terminate called without an active exception"
    (3 of 21 runs of the two-process test without the barrier, 0 of 15 with it).
    Call it only after a successful run; after an error on one rank the barrier would wait
    for ever.
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm running statistics) to every rank."""
    for buf in module.buffers():
        dist.broadcast(buf.data, src)


def all_reduce_mean(value: float, device: torch.device) -> float:
    """Mean of a Python float over ranks (for reported losses)."""
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()
