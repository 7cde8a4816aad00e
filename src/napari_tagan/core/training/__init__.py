"""TA-GAN training: datasets, objectives, schedules and the :class:`Trainer` loop.

The CLI (``napari-tagan train``) and the napari Train widget both drive :class:`Trainer`.
"""

from ..checkpoints import load_pretrained_segmenter, model_for_fine_tuning
from .batches import Batch, BatchSampler
from .data import (
    TrainingDataset,
    TrainingSample,
    dataset_from_arrays,
    dataset_from_folder,
    labels_to_targets,
    split_channels,
)
from .losses import GANLoss, gradient_penalty, masked_mse, pixel_loss
from .schedules import LRSchedule
from .trainer import (
    BEST,
    LATEST,
    Trainer,
    TrainerCallbacks,
    TrainingSummary,
    periodic_name,
)

__all__ = [
    "BEST",
    "LATEST",
    "Batch",
    "BatchSampler",
    "GANLoss",
    "LRSchedule",
    "Trainer",
    "TrainerCallbacks",
    "TrainingDataset",
    "TrainingSample",
    "TrainingSummary",
    "dataset_from_arrays",
    "dataset_from_folder",
    "gradient_penalty",
    "labels_to_targets",
    "load_pretrained_segmenter",
    "masked_mse",
    "model_for_fine_tuning",
    "periodic_name",
    "pixel_loss",
    "split_channels",
]
