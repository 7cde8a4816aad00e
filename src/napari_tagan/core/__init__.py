"""The headless TA-GAN engine: networks, configs, checkpoints, normalization, prediction.

Nothing here imports Qt, napari or magicgui (a test enforces it), so the CLI, scripts and
cluster jobs use the same code as the plugin. Names are imported on first use, so that
``napari_tagan.core.simulate`` (napari sample data) does not wait for torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    "Bundle": "checkpoints",
    "convert_original": "checkpoints",
    "load_model": "checkpoints",
    "load_original_checkpoint": "checkpoints",
    "read_bundle": "checkpoints",
    "save_bundle": "checkpoints",
    "PRESET_NAMES": "config",
    "PRESETS": "config",
    "ModelConfig": "config",
    "NormalizationSpec": "config",
    "preset_config": "config",
    "resolve_device": "device",
    "ArchitectureMismatchError": "errors",
    "InputError": "errors",
    "ModelLoadError": "errors",
    "TaganError": "errors",
    "Provenance": "model",
    "TAGANModel": "model",
    "NormStats": "normalization",
    "compute_stats": "normalization",
    "denormalize": "normalization",
    "legacy8": "normalization",
    "normalize": "normalization",
    "PredictionResult": "prediction",
    "predict": "prediction",
}

__all__ = [
    "PRESETS",
    "PRESET_NAMES",
    "ArchitectureMismatchError",
    "Bundle",
    "InputError",
    "ModelConfig",
    "ModelLoadError",
    "NormStats",
    "NormalizationSpec",
    "PredictionResult",
    "Provenance",
    "TAGANModel",
    "TaganError",
    "compute_stats",
    "convert_original",
    "denormalize",
    "legacy8",
    "load_model",
    "load_original_checkpoint",
    "normalize",
    "predict",
    "preset_config",
    "read_bundle",
    "resolve_device",
    "save_bundle",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:
    from .checkpoints import (
        Bundle,
        convert_original,
        load_model,
        load_original_checkpoint,
        read_bundle,
        save_bundle,
    )
    from .config import PRESET_NAMES, PRESETS, ModelConfig, NormalizationSpec, preset_config
    from .device import resolve_device
    from .errors import ArchitectureMismatchError, InputError, ModelLoadError, TaganError
    from .model import Provenance, TAGANModel
    from .normalization import NormStats, compute_stats, denormalize, legacy8, normalize
    from .prediction import PredictionResult, predict
