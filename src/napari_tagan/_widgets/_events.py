"""What a job tells its widget: one small typed event per kind of news.

Workers emit these from their thread; :class:`~._jobs.Job` delivers them on the main
thread to whichever panel currently shows the job (careamics-napari's ``TrainUpdate``
is the model).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class StatusChanged:
    """A line for the status label (what the job is doing now)."""

    text: str


@dataclass(frozen=True)
class Progressed:
    """Fraction of the job done, 0–1."""

    fraction: float


@dataclass(frozen=True)
class IterationDone:
    """One training iteration: its number, the run's total, the losses, seconds since start."""

    iteration: int
    total: int
    losses: dict[str, float]
    elapsed_s: float = 0.0


@dataclass(frozen=True)
class Validated:
    """Validation metrics (``psnr``, ``ssim``, ``dice``, ...) after ``iteration``."""

    iteration: int
    metrics: dict[str, float]


@dataclass(frozen=True)
class Previewed:
    """The generator's output for the preview image after ``iteration``."""

    iteration: int
    image: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class CheckpointSaved:
    """A model file written after ``iteration``."""

    iteration: int
    path: str


@dataclass(frozen=True)
class JobReturned:
    """The job's result (on the main thread, before :class:`JobFinished`)."""

    value: Any


@dataclass(frozen=True)
class JobFailed:
    """The job raised; ``text`` is what the notification said."""

    text: str


@dataclass(frozen=True)
class JobFinished:
    """The job's thread is done (after a result, an error or a stop)."""

    stopped: bool
