"""What a run reports: callbacks, the CSV logs (``losses.csv``, ``metrics.csv``), the summary."""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: ``metrics.csv``: one row per validation (the first at iteration 0, before any update).
METRIC_COLUMNS = ("iteration", "psnr", "ssim", "dice", "iou", "epoch")


@dataclass
class TrainerCallbacks:
    """Optional hooks; each is called on the training thread (rank 0 only under DDP).

    Attributes
    ----------
    on_iteration
        ``(iteration, total, losses, lr)`` after every update; ``losses`` maps each loss
        term (``D_real``, ``D_fake``, ``D``, ``G_GAN``, ``G_seg``, ``G``, ``S``, ...) to
        its value.
    on_validation
        ``(iteration, metrics)`` after every validation (``psnr``, ``ssim``, ``dice``,
        ``iou``; NaN where not defined).
    on_preview
        ``(iteration, synthetic_sted)``: G's output for the preview image, in its
        intensity units.
    on_checkpoint
        ``(iteration, path)`` after a bundle is written.
    should_stop
        Polled after every iteration; True stops training (``latest`` is saved).
    """

    on_iteration: Callable[[int, int, dict[str, float], float], None] | None = None
    on_validation: Callable[[int, dict[str, float]], None] | None = None
    on_preview: Callable[[int, np.ndarray], None] | None = None
    on_checkpoint: Callable[[int, Path], None] | None = None
    should_stop: Callable[[], bool] | None = None


@dataclass
class TrainingSummary:
    """What :meth:`Trainer.run` did."""

    iterations: int
    stopped_early: bool
    latest: Path
    best: Path | None
    metrics: list[dict[str, float]] = field(default_factory=list)


def loss_columns(loss_names: tuple[str, ...]) -> tuple[str, ...]:
    """``losses.csv``'s columns for a run logging ``loss_names``."""
    return ("iteration", *loss_names, "lr", "epoch")


class CsvLog:
    """Append-only CSV with a header; resuming drops rows past the resumed iteration.

    A disabled log (DDP ranks other than 0) writes nothing.
    """

    def __init__(self, path: Path, columns: tuple[str, ...], enabled: bool = True) -> None:
        self.path, self.columns, self.enabled = path, columns, enabled

    def start(self, keep_until: int | None) -> None:
        """Write the header, keeping the rows up to ``keep_until`` (None: none)."""
        if not self.enabled:
            return
        rows = self._rows_until(keep_until) if keep_until is not None else []
        with open(self.path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(self.columns)
            writer.writerows(rows)

    def _rows_until(self, last: int) -> list[list[str]]:
        if not self.path.is_file():
            return []
        with open(self.path, newline="") as fh:
            reader = csv.reader(fh)
            if next(reader, None) != list(self.columns):
                return []
            # A row cut short by a killed process has too few fields: dropped.
            n = len(self.columns)
            rows = [r for r in reader if len(r) == n and r[0].isdigit()]
        return [r for r in rows if int(r[0]) <= last]

    def append(self, row: dict[str, Any]) -> None:
        """One row; missing columns are NaN."""
        if not self.enabled:
            return
        with open(self.path, "a", newline="") as fh:
            csv.writer(fh).writerow([_fmt(row.get(c, float("nan"))) for c in self.columns])


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
