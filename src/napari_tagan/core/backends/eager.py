"""Eager PyTorch: the reference, optionally channels-last and under autocast."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..device import autocast


def runner(net: nn.Module, device: torch.device, amp: torch.dtype | None, channels_last: bool):
    """``run(batch, release=False)`` of ``net`` on ``device`` (``amp``: autocast dtype)."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    if channels_last:
        net.to(memory_format=memory_format)

    def run_eager(x: np.ndarray, release: bool = False) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(device)
        t = t.contiguous(memory_format=memory_format)
        with autocast(device, amp):
            y = net(t)
        return y.float().contiguous().cpu().numpy()

    return run_eager
