"""Exceptions with messages meant for the person who supplied the input.

The CLI prints ``str(error)`` as one line and exits non-zero; the napari widgets show it as
a notification. Messages say what was wrong and what was expected, in the engine's terms
(config field names, not command-line flags or widget labels): each front end words the
data an error carries (e.g. :attr:`ConfigError.problems`) for its own controls.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


class TaganError(Exception):
    """Base class of the errors napari-tagan reports to users."""


class ModelLoadError(TaganError):
    """A model file or checkpoint folder could not be read as a model."""


class ArchitectureMismatchError(ModelLoadError):
    """Checkpoint weights do not fit the architecture they were asked to load into."""


class AmbiguousPresetError(ModelLoadError):
    """Several presets (``candidates``) fit the weights at ``origin``: the user picks one."""

    def __init__(self, origin: str, candidates: Sequence[str]) -> None:
        self.origin = str(origin)
        self.candidates = tuple(candidates)
        super().__init__(
            f"several presets fit {self.origin} ({', '.join(self.candidates)}); they differ "
            "in normalization, so the preset must be given"
        )


class InputError(TaganError, ValueError):
    """An image or argument does not fit what the model or command expects."""


class NonFiniteError(InputError):
    """Data, statistics or weights hold NaN or infinite values (refused, never used)."""


class TrainingDivergedError(TaganError):
    """A training loss became NaN or infinite; the last good checkpoint is kept."""

    def __init__(self, iteration: int, term: str, value: float) -> None:
        self.iteration, self.term, self.value = int(iteration), str(term), float(value)
        super().__init__(
            f"training diverged at iteration {self.iteration}: loss {self.term} is "
            f"{self.value}; the last saved checkpoint is kept (lower the learning rate or "
            "check the data)"
        )


@dataclass(frozen=True)
class ConfigProblem:
    """One refused config value: the dotted ``field`` ("" for the config as a whole)."""

    field: str
    value: Any
    reason: str

    def __str__(self) -> str:
        if not self.field:
            return self.reason
        shown = self.value if isinstance(self.value, str) else repr(self.value)
        return f"{self.field}={shown}: {self.reason}"


class ConfigError(InputError):
    """A model configuration was refused; :attr:`problems` names each field and why."""

    def __init__(self, problems: Sequence[ConfigProblem], message: str | None = None) -> None:
        self.problems = tuple(problems)
        super().__init__(message or "; ".join(map(str, self.problems)) or "invalid config")


class UnknownPresetError(ConfigError):
    """``name`` is not one of the presets in ``choices``."""

    def __init__(self, name: str, choices: Sequence[str]) -> None:
        self.name = name
        self.choices = tuple(choices)
        expected = f"expected one of {', '.join(self.choices)}"
        super().__init__(
            [ConfigProblem("preset", name, f"unknown preset; {expected}")],
            f"unknown preset {name!r}; {expected}",
        )


class ArchitectureChangeError(ConfigError):
    """A fine-tune asked to change fields that the loaded weights fix (field → value)."""

    def __init__(self, changes: Mapping[str, Any]) -> None:
        self.fields = tuple(changes)
        reason = "cannot change when fine-tuning: the loaded weights fix the architecture"
        super().__init__(
            [ConfigProblem(f, v, reason) for f, v in changes.items()],
            f"cannot change {', '.join(self.fields)} when fine-tuning: the loaded weights "
            "fix the architecture",
        )
