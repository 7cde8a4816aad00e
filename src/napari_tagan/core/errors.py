"""Exceptions with messages meant for the person who supplied the input.

The CLI prints ``str(error)`` as one line and exits non-zero; the napari widgets show it as
a notification. Messages say what was wrong and what was expected.
"""

from __future__ import annotations


class TaganError(Exception):
    """Base class of the errors napari-tagan reports to users."""


class ModelLoadError(TaganError):
    """A model file or checkpoint folder could not be read as a model."""


class ArchitectureMismatchError(ModelLoadError):
    """Checkpoint weights do not fit the architecture they were asked to load into."""


class InputError(TaganError, ValueError):
    """An image or argument does not fit what the model or command expects."""
