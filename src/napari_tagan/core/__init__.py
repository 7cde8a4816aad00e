"""The headless TA-GAN engine: networks, configs, checkpoints, normalization, prediction.

Nothing here imports Qt, napari or magicgui (a test enforces it), so the CLI, scripts and
cluster jobs use the same code as the plugin.
"""

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
from .predict import PredictionResult, predict

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
