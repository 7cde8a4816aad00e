"""What the Train panel's plot shows: losses per iteration and validation metrics.

A resumed run starts from its folder's ``losses.csv`` and ``metrics.csv``, so the curve
continues where it stopped.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: The engine's loss names and what the plot calls them.
PLOTTED_LOSSES = {
    "G": "generator",
    "D": "discriminator",
    "S": "segmenter",
    "G_seg": "generator's segmentation",
}
METRICS = {"dice": "Dice (segmentation)", "ssim": "SSIM (image)"}


@dataclass
class TrainingHistory:
    """Losses per iteration and validation metrics of one run."""

    iterations: list[int] = field(default_factory=list)
    losses: dict[str, list[float]] = field(default_factory=dict)
    validation: list[tuple[int, dict[str, float]]] = field(default_factory=list)

    def add_losses(self, iteration: int, losses: dict[str, float]) -> None:
        self.iterations.append(iteration)
        for name in PLOTTED_LOSSES:
            if name in losses:
                self.losses.setdefault(name, []).append(float(losses[name]))

    def clear(self) -> None:
        self.iterations.clear()
        self.losses.clear()
        self.validation.clear()

    @classmethod
    def from_run(cls, run_dir: str | Path) -> TrainingHistory:
        """The history a run folder's CSV logs hold (empty where they are missing)."""
        history = cls()
        for row in _rows(Path(run_dir) / "losses.csv"):
            history.add_losses(int(row.pop("iteration")), row)
        for row in _rows(Path(run_dir) / "metrics.csv"):
            history.validation.append((int(row.pop("iteration")), row))
        return history


def _rows(path: Path) -> list[dict[str, float]]:
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError:
        return []
    out = []
    for row in rows:
        try:
            out.append({k: float(v) for k, v in row.items() if k and v not in (None, "")})
        except ValueError:  # a row cut short by a killed process
            continue
    return [r for r in out if "iteration" in r]


def history_panels(history: TrainingHistory, validating: bool = True) -> list[Any]:
    """The two plot panels of a training history."""
    from ._plot import Curve, Panel, smooth

    its = np.asarray(history.iterations, np.float64)
    losses = Panel("losses (running mean)", log_y=True)
    for name, values in history.losses.items():
        n = min(its.size, len(values))
        label = f"{PLOTTED_LOSSES.get(name, name)}"
        losses.curves.append(Curve(name, its[:n], smooth(values[:n]), label=label))
    empty = "no data yet" if validating else "no validation: hold out a set to see metrics"
    validation = Panel("validation", empty=empty)
    if history.validation:
        x = np.asarray([i for i, _ in history.validation], np.float64)
        for key, label in METRICS.items():
            y = np.asarray([m.get(key, math.nan) for _, m in history.validation], np.float64)
            if np.isfinite(y).any():
                validation.curves.append(Curve(key, x, y, markers=True, label=label))
    return [losses, validation]
