"""How a run starts: new, fine-tuned or resumed; the one decision tree of CLI and widget."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..checkpoints import (
    load_pretrained_segmenter,
    model_for_fine_tuning,
    read_bundle,
)
from ..config import ModelConfig, preset_config
from ..errors import InputError
from ..model import TAGANModel
from .data import TrainingDataset
from .trainer import LATEST, Trainer

#: Builds the training and (optional) validation data for the run's config.
DatasetsFor = Callable[[ModelConfig], tuple[TrainingDataset, TrainingDataset | None]]


class NothingToResumeError(InputError):
    """The output folder holds no run (``latest.tagan``) to resume."""

    def __init__(self, output_dir: Path) -> None:
        self.output_dir = output_dir
        super().__init__(f"nothing to resume in {output_dir} (no {LATEST})")


class ResumeConflictError(InputError):
    """A resumed run continues as it was; ``given`` names the settings that would change it."""

    def __init__(self, given: tuple[str, ...]) -> None:
        self.given = given
        super().__init__(f"a resumed run continues as it was; it takes no {', '.join(given)}")


class PresetRequiredError(InputError):
    """A new model needs a preset (or a model to fine-tune from)."""

    def __init__(self) -> None:
        super().__init__("a new model needs a preset (or a model to fine-tune from)")


@dataclass(frozen=True)
class RunStart:
    """Where a run's model comes from.

    Attributes
    ----------
    output_dir
        The run's folder; with ``resume``, the run in it is continued.
    preset
        Preset of a new model (or, with ``from_model``, the preset an original checkpoint
        is read as).
    from_model
        A ``.tagan`` bundle or original checkpoint to fine-tune (``epoch`` picks one of a
        checkpoint folder's).
    overrides
        Config fields to change (a fine-tune may change training fields only).
    segmenter
        A pretrained S to load (the live preset trains with it frozen).
    seed
        Seeds a new model's initialisation (torch is seeded before the networks are
        built) and the run; None: 0, or a resumed run's own.
    """

    output_dir: str | os.PathLike[str]
    resume: bool = False
    preset: str | None = None
    from_model: str | os.PathLike[str] | None = None
    epoch: str | int | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    segmenter: str | os.PathLike[str] | None = None
    seed: int | None = None


def new_model(preset: str, overrides: Mapping[str, Any], seed: int) -> TAGANModel:
    """A freshly initialised model (with D); torch is seeded with ``seed`` first."""
    config = preset_config(preset, **overrides)
    torch.manual_seed(seed)
    return TAGANModel.from_config(config, with_discriminator=True)


def start_model(start: RunStart) -> TAGANModel:
    """The model a new or fine-tuned run starts from (not for a resumed run)."""
    if start.from_model is not None:
        model = model_for_fine_tuning(
            start.from_model, preset=start.preset, epoch=start.epoch,
            overrides=dict(start.overrides),
        )  # fmt: skip
    elif start.preset:
        model = new_model(start.preset, start.overrides, 0 if start.seed is None else start.seed)
    else:
        raise PresetRequiredError
    if start.segmenter is not None:
        load_pretrained_segmenter(model, start.segmenter)
    return model


def resumed_config(start: RunStart) -> ModelConfig:
    """The config of the run to resume in ``start.output_dir``."""
    given = {
        "preset": start.preset, "model to fine-tune": start.from_model,
        "overrides": start.overrides or None, "segmenter": start.segmenter,
    }  # fmt: skip
    conflicts = tuple(name for name, value in given.items() if value is not None)
    if conflicts:
        raise ResumeConflictError(conflicts)
    latest = Path(start.output_dir) / LATEST
    if not latest.is_file():
        raise NothingToResumeError(Path(start.output_dir))
    return read_bundle(latest, with_discriminator=False).model.config


def prepare_run(start: RunStart, datasets: DatasetsFor, **trainer_options: Any) -> Trainer:
    """The :class:`Trainer` of a new, fine-tuned or resumed run.

    ``datasets`` builds the data for the model's config (the config fixes channels,
    classes and normalization); ``trainer_options`` are :class:`Trainer`'s keyword
    arguments (length, sizes, device, intervals, callbacks, ...).
    """
    if start.resume:
        train, valid = datasets(resumed_config(start))
        return Trainer.from_checkpoint(
            start.output_dir, train, valid, seed=start.seed, **trainer_options
        )
    model = start_model(start)
    train, valid = datasets(model.config)
    seed = 0 if start.seed is None else start.seed
    return Trainer(model, train, valid, output_dir=start.output_dir, seed=seed, **trainer_options)
