"""The Train panel's defaults, run folders and run-time estimates.

Defaults fit the machine: on a CPU the README's quick settings (a first model in a few
minutes), on a GPU the paper's sizes. Every Train press gets a fresh run folder named
after the run, so two trainings in a row never collide and their models tell apart.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass
from pathlib import Path

#: Seconds per iteration at the CPU quick settings (batch 4, crop 96, 8 filters) on 2 cores.
CPU_SECONDS_PER_ITERATION = 0.4
QUICK = {"iterations": 300, "batch_size": 4, "crop_size": 96, "filters": 8}


@dataclass(frozen=True)
class Defaults:
    """What the panel offers before the user changes anything."""

    iterations: int
    batch_size: int
    crop_size: int
    filters: int


def has_accelerator(device: str = "auto") -> bool:
    """Whether ``device`` (``auto``: the best one here) is a GPU."""
    if device == "cpu":
        return False
    if device != "auto":
        return True
    import torch

    mps = getattr(torch.backends, "mps", None)
    return torch.cuda.is_available() or (mps is not None and mps.is_available())


def defaults_for(preset: str, device: str = "auto") -> Defaults:
    """The CPU quick settings, or the preset's (the paper's) sizes on a GPU."""
    if not has_accelerator(device):
        return Defaults(**QUICK)
    from napari_tagan.core.config import preset_config

    cfg = preset_config(preset)
    return Defaults(500, cfg.batch_size, cfg.crop_size, cfg.ngf)


def estimate_seconds(iterations: int, batch: int, crop: int, filters: int, device: str) -> float:
    """Rough CPU run time (convolutions scale with pixels × filters²); NaN on a GPU."""
    if has_accelerator(device):
        return float("nan")
    side = crop if crop > 0 else 256
    scale = (batch / 4) * (side / 96) ** 2 * max(1.0, (filters / 8) ** 2)
    return iterations * CPU_SECONDS_PER_ITERATION * scale


def remaining_seconds(first: tuple[int, float], now: tuple[int, float], total: int) -> float:
    """Time left, from the rate measured between two ``(iteration, elapsed_s)`` points."""
    (i0, t0), (i1, t1) = first, now
    if i1 <= i0:
        return float("nan")
    return (t1 - t0) / (i1 - i0) * (total - i1)


def duration(seconds: float) -> str:
    """``"about 3 min"``, ``"about 40 s"``, ``"about 2.5 h"``."""
    if seconds != seconds:  # NaN
        return "unknown until the first iterations"
    if seconds < 90:
        return f"about {max(5, round(seconds / 5) * 5):.0f} s"
    if seconds < 5400:
        return f"about {seconds / 60:.0f} min"
    return f"about {seconds / 3600:.1f} h"


def slug(text: str) -> str:
    """``text`` as a file-name part (letters, digits, dashes)."""
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:40] or "data"


def new_run_dir(
    parent: str | Path, preset: str, data: str, now: _dt.datetime | None = None
) -> Path:
    """A fresh folder for one run: ``<parent>/<preset>-<data>-<date-time>`` (not yet made)."""
    stamp = (now or _dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    base = Path(parent) / f"{slug(preset)}-{slug(data)}-{stamp}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def run_to_resume(parent: str | Path, last: Path | None) -> Path:
    """The run Resume continues: the last one here, else the folder itself or its newest run."""
    from napari_tagan.core.training import LATEST

    parent = Path(parent)
    if last is not None and (last / LATEST).is_file():
        return last
    if (parent / LATEST).is_file():
        return parent
    runs = sorted(parent.glob(f"*/{LATEST}"), key=lambda p: p.stat().st_mtime)
    return runs[-1].parent if runs else parent


def default_runs_folder() -> str:
    return str(Path.home() / "napari-tagan-runs")
