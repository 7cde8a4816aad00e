"""The Train panel's job, run in a worker thread: the core's ``prepare_run``, then ``run``.

New, fine-tuned and resumed runs take the one decision tree the CLI uses too
(:func:`~napari_tagan.core.training.prepare.prepare_run`); the trainer's callbacks become
typed events for the panel (:mod:`._events`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._events import CheckpointSaved, IterationDone, Previewed, StatusChanged, Validated
from ._train_data import ImageSet, datasets_for


@dataclass(frozen=True)
class TrainRequest:
    """Everything a run needs from the panel, read on the main thread."""

    run_dir: Path
    resume: bool
    start: str  # "preset" or "file"
    preset: str
    filters: int
    model_path: str
    iterations: int
    batch_size: int
    crop_size: int
    device: str
    amp: bool
    seed: int
    preview_every: int
    validate_every: int
    checkpoint_every: int


def run_start(request: TrainRequest) -> Any:
    """The core's :class:`RunStart` for a new, fine-tuned or resumed run."""
    from napari_tagan.core.training.prepare import RunStart

    if request.resume:
        return RunStart(request.run_dir, resume=True)
    if request.start == "file":
        return RunStart(request.run_dir, from_model=request.model_path, seed=request.seed)
    width = request.filters
    return RunStart(
        request.run_dir,
        preset=request.preset,
        overrides={"ngf": width, "nsf": width, "ndf": width},
        seed=request.seed,
    )


def callbacks(job: Any) -> Any:
    """Trainer callbacks that send typed events to ``job``'s panel."""
    from napari_tagan.core.training import TrainerCallbacks

    started = time.monotonic()

    def iteration(it: int, total: int, losses: dict[str, float], lr: float) -> None:
        job.emit(IterationDone(it, total, dict(losses), time.monotonic() - started))

    return TrainerCallbacks(
        on_iteration=iteration,
        on_validation=lambda it, metrics: job.emit(Validated(it, dict(metrics))),
        on_preview=lambda it, image: job.emit(Previewed(it, image)),
        on_checkpoint=lambda it, path: job.emit(CheckpointSaved(it, str(path))),
        should_stop=job.should_stop,
    )


def make_trainer(
    request: TrainRequest, sets: list[ImageSet], valid_index: int | None, job: Any
) -> Any:
    """The :class:`Trainer` of ``request`` (runs in the worker thread)."""
    from napari_tagan.core.errors import InputError
    from napari_tagan.core.training.prepare import NothingToResumeError, prepare_run

    try:
        return prepare_run(
            run_start(request),
            datasets_for(sets, valid_index),
            device=request.device,
            amp=request.amp,
            iterations=request.iterations,
            batch_size=request.batch_size,
            crop_size=request.crop_size,
            validate_every=request.validate_every,
            checkpoint_every=request.checkpoint_every,
            preview_every=request.preview_every,
            preview_image=sets[0].confocal,
            callbacks=callbacks(job),
        )
    except NothingToResumeError as exc:
        raise InputError(
            f"Press Train to start a run: there is nothing to resume in {exc.output_dir}"
        ) from exc


def train(request: TrainRequest, sets: list[ImageSet], valid_index: int | None, job: Any) -> Any:
    """Prepare and run; returns ``(summary, preset)``. A stop saves ``latest.tagan``."""
    job.emit(StatusChanged("preparing data…"))
    trainer = make_trainer(request, sets, valid_index, job)
    job.trainer = trainer
    if job.should_stop():
        trainer.request_stop()
    job.emit(StatusChanged(f"training on {trainer.device}…"))
    summary = trainer.run()
    return summary, trainer.config.preset


def placeholder(shape: tuple[int, ...]) -> np.ndarray:
    """The preview layer's data before the first preview."""
    return np.zeros(shape, np.float32)
