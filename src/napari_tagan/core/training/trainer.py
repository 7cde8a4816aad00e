"""The TA-GAN training loop: iterations, validation, checkpoints, resume.

One :class:`Trainer` serves the CLI, the napari widget and scripts; the updates of one
iteration are :class:`~.steps.UpdateSteps`'.
"""

from __future__ import annotations

import contextlib
import math
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoints import read_bundle, save_bundle
from ..device import Placement, deterministic_algorithms, dtype_name, resolve_device
from ..errors import InputError
from ..guards import check_losses, run_folder_lock
from ..model import Provenance, TAGANModel
from . import distributed
from .batches import Batch, BatchSampler, crop_shape, make_batch
from .data import TrainingDataset
from .reporting import METRIC_COLUMNS, CsvLog, TrainerCallbacks, TrainingSummary, loss_columns
from .schedules import LRSchedule
from .state import ImagePool, TrainingState
from .steps import UpdateSteps, check_objectives, loss_names, new_discriminator, set_requires_grad
from .validation import choose_best_metric, evaluate

LATEST = "latest.tagan"
BEST = "best.tagan"
DEFAULT_CHECKPOINT_EVERY = 500


def periodic_name(iteration: int) -> str:
    """File name of the periodic checkpoint at ``iteration``."""
    return f"iter_{iteration:06d}.tagan"


def _check_settings(iterations: int | None, epochs: int | None, **values: int | None) -> None:
    if iterations is not None and epochs is not None:
        raise InputError("give iterations or epochs, not both")
    for name, value in {"iterations": iterations, "epochs": epochs, **values}.items():
        if value is not None and value < (0 if name == "crop_size" else 1):
            raise InputError(f"{name} must be ≥ {0 if name == 'crop_size' else 1}, got {value}")


class Trainer:
    """Train (or fine-tune) a :class:`TAGANModel` on paired data.

    Parameters
    ----------
    model
        The model to train, fresh (:meth:`TAGANModel.from_config`) or loaded (fine-tune;
        see :func:`model_for_fine_tuning`). A missing discriminator is built and
        initialised. Its config's training fields (losses, lr, schedule, pool) are used.
    train_data, valid_data
        Datasets from :func:`dataset_from_arrays` / :func:`dataset_from_folder`.
        Without ``valid_data`` there is no validation and no ``best`` bundle.
    output_dir
        Where ``latest.tagan``, ``best.tagan``, ``iter_NNNNNN.tagan``, ``losses.csv`` and
        ``metrics.csv`` go. A folder holding a run already is refused (use
        :meth:`from_checkpoint`) unless ``overwrite``.
    iterations, epochs
        Length of training (at most one). Without either: the config's
        ``niter + niter_decay`` epochs, as the original. An epoch is one pass over the
        training samples (``ceil(n / (batch × processes))`` iterations).
    batch_size, crop_size
        Override the config's (``crop_size=0``: whole images).
    device
        ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (under torchrun: the local
        rank's GPU).
    seed
        Seeds data order, augmentation, initialisation of a new D and dropout.
    validate_every, checkpoint_every, preview_every
        In iterations; validation defaults to once per epoch, checkpoints to every 500
        iterations, previews to every validation.
    preview_image
        Raw confocal image (as for :func:`~napari_tagan.core.prediction.predict`) whose
        synthetic STED is passed to ``callbacks.on_preview``.
    callbacks
        :class:`TrainerCallbacks`.
    amp
        Mixed precision, as :func:`~napari_tagan.core.device.autocast_dtype` decides for
        ``auto`` (float16 with loss scaling). Weights, optimizer state, BatchNorm and the
        losses stay float32.
    deterministic
        Deterministic algorithms (and no cuDNN autotuning) during :meth:`run`: with the
        same seed, a run and a stopped-and-resumed run give identical weights on CPU.
    channels_last
        Memory format of the networks' activations. Default (None):
        :func:`~napari_tagan.core.device.prefers_channels_last`.
    best_metric
        Validation metric that selects ``best``: ``dice`` (default when S is evaluated)
        or ``psnr``/``ssim``; all are higher-is-better.
    overwrite
        Start afresh in a folder that holds a previous run.
    """

    def __init__(
        self,
        model: TAGANModel,
        train_data: TrainingDataset,
        valid_data: TrainingDataset | None = None,
        *,
        output_dir: str | Path,
        iterations: int | None = None,
        epochs: int | None = None,
        batch_size: int | None = None,
        crop_size: int | None = None,
        device: str | torch.device = "auto",
        seed: int = 0,
        validate_every: int | None = None,
        checkpoint_every: int | None = None,
        preview_every: int | None = None,
        preview_image: np.ndarray | None = None,
        callbacks: TrainerCallbacks | None = None,
        amp: bool = False,
        deterministic: bool = True,
        channels_last: bool | None = None,
        best_metric: str = "auto",
        overwrite: bool = False,
    ) -> None:
        every = {"validate_every": validate_every, "checkpoint_every": checkpoint_every}
        _check_settings(
            iterations, epochs, batch_size=batch_size, crop_size=crop_size,
            preview_every=preview_every, **every,
        )  # fmt: skip
        if len(train_data) == 0:
            raise InputError("the training dataset is empty")
        sizes = {"batch_size": batch_size, "crop_size": crop_size}
        if any(v is not None for v in sizes.values()):
            model.config = model.config.with_overrides(
                **{k: v for k, v in sizes.items() if v is not None}
            )
        self.model, self.config = model, model.config
        self.train_data, self.valid_data = train_data, valid_data
        self.output_dir = Path(output_dir)
        self.callbacks = callbacks or TrainerCallbacks()
        self.seed, self.deterministic, self.preview_image = int(seed), deterministic, preview_image
        self._stop = threading.Event()
        self._continuing = False
        self.uses_labels, self.train_segmenter = check_objectives(model, train_data, valid_data)
        self._place(device, amp, channels_last)
        if self.is_main and (self.output_dir / LATEST).exists() and not overwrite:
            raise InputError(
                f"{self.output_dir} already holds a training run ({LATEST}); resume it "
                "or choose another output folder"
            )
        self._build_networks()
        self._build_optimization()
        self._plan(iterations, epochs, preview_every, best_metric, **every)
        torch.manual_seed(self.seed + self.rank)

    # ------------------------------------------------------------------ construction

    def _place(self, device: str | torch.device, amp: bool, channels_last: bool | None) -> None:
        """Device, process group, autocast dtype and memory format."""
        self.device = resolve_device(device)
        self.dist = distributed.init_distributed(self.device)
        if self.dist is not None and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        self.world = self.dist.world_size if self.dist else 1
        self.rank = self.dist.rank if self.dist else 0
        self.is_main = self.rank == 0
        self.placement = Placement.choose(self.device, amp=amp, channels_last=channels_last)
        self.amp_dtype, self.memory_format = self.placement.amp_dtype, self.placement.memory_format

    def _build_networks(self) -> None:
        """A new D if the model has none; networks on the device, in the memory format."""
        model = self.model
        if model.discriminator is None:
            model.discriminator = new_discriminator(model.config, self.seed)
        model.to(self.device)
        for net in model.networks().values():
            net.to(memory_format=self.memory_format)
        if not self.train_segmenter:
            set_requires_grad(model.segmenter, False)

    def _build_optimization(self) -> None:
        """Schedule and the update steps (with the optimizers of the trained networks)."""
        model, cfg = self.model, self.config
        trained = {"generator": model.generator, "discriminator": model.discriminator}
        if self.train_segmenter:
            trained["segmenter"] = model.segmenter
        self.schedule = LRSchedule.from_config(cfg)
        self.loss_names = loss_names(model, self.train_segmenter)
        self.steps = UpdateSteps(
            model, trained, self.placement,
            loss_names=self.loss_names, uses_labels=self.uses_labels,
            pool=ImagePool(cfg.pool_size, self.seed + 1), dist=self.dist,
        )  # fmt: skip
        self.optimizers, self.scaler = self.steps.optimizers, self.steps.scaler

    def _plan(
        self,
        iterations: int | None,
        epochs: int | None,
        preview_every: int | None,
        best_metric: str,
        *,
        validate_every: int | None,
        checkpoint_every: int | None,
    ) -> None:
        """Length, intervals, sampler, best-model selection and logs."""
        cfg, data = self.config, self.train_data
        self.crop = crop_shape(data, cfg.crop_size)
        self.sampler = BatchSampler(data, self.seed)
        self.iters_per_epoch = max(1, math.ceil(len(data) / (cfg.batch_size * self.world)))
        if iterations is None:
            n_epochs = epochs if epochs is not None else max(1, cfg.niter + cfg.niter_decay)
            iterations = n_epochs * self.iters_per_epoch
        self.total, self.iteration = int(iterations), 0
        self.validate_every = validate_every or self.iters_per_epoch
        self.checkpoint_every = checkpoint_every or DEFAULT_CHECKPOINT_EVERY
        self.preview_every = preview_every or self.validate_every
        self.metrics: list[dict[str, float]] = []
        self.best_metric = choose_best_metric(
            best_metric, self.model, self.valid_data, uses_labels=self.uses_labels
        )
        self.best_value, self.best_iteration = -math.inf, None
        self._origin = self.model.source
        out = self.output_dir
        columns = loss_columns(self.loss_names)
        self.losses_csv = CsvLog(out / "losses.csv", columns, self.is_main)
        self.metrics_csv = CsvLog(out / "metrics.csv", METRIC_COLUMNS, self.is_main)

    # ------------------------------------------------------------------ state

    @classmethod
    def from_checkpoint(
        cls,
        output_dir: str | Path,
        train_data: TrainingDataset,
        valid_data: TrainingDataset | None = None,
        **kwargs: Any,
    ) -> Trainer:
        """A trainer that continues the run saved in ``output_dir/latest.tagan``.

        Weights, optimizer and schedule states, iteration, data order and RNG states are
        restored, so the continued run equals an uninterrupted one (bitwise on CPU with
        ``deterministic``). Settings not given (batch and crop size, seed, length,
        intervals) are taken from the saved run; ``iterations``/``epochs`` may extend it.
        """
        path = Path(output_dir) / LATEST
        if not path.is_file():
            raise InputError(f"nothing to resume: {path} does not exist")
        bundle = read_bundle(path, with_discriminator=True)
        state = TrainingState.from_dict(bundle.training_state, str(path))
        options = state.resume_options(kwargs)
        bundle.model.source = state.origin
        trainer = cls(bundle.model, train_data, valid_data, output_dir=output_dir, **options)
        trainer._restore(state)
        return trainer

    @property
    def amp_name(self) -> str | None:
        """The mixed-precision dtype's name (``bfloat16``, ``float16``); None in fp32."""
        return dtype_name(self.amp_dtype)

    def training_state(self) -> TrainingState:
        """Everything :meth:`from_checkpoint` needs besides the weights."""
        cuda = self.device.type == "cuda"
        return TrainingState(
            iteration=self.iteration, total=self.total, seed=self.seed,
            batch_size=self.config.batch_size, crop_size=self.config.crop_size,
            validate_every=self.validate_every, checkpoint_every=self.checkpoint_every,
            channels_last=self.memory_format == torch.channels_last,
            device_type=self.device.type, amp_dtype=self.amp_name, world_size=self.world,
            **self.steps.state_dict(), torch_rng=torch.get_rng_state(),
            schedule=self.schedule.state_dict(), sampler=self.sampler.state_dict(),
            metrics=list(self.metrics), best_metric=self.best_metric,
            best_value=self.best_value, best_iteration=self.best_iteration,
            origin=self._origin, training_data_fingerprint=self.train_data.fingerprint,
            cuda_rng=torch.cuda.get_rng_state(self.device) if cuda else None,
        )  # fmt: skip

    def _restore(self, state: TrainingState) -> None:
        self.iteration = int(state.iteration)
        self.steps.load_state(state)
        self.schedule.load_state_dict(state.schedule)
        self.sampler.load_state_dict(state.sampler)
        torch.set_rng_state(state.torch_rng)
        if state.cuda_rng is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state.cuda_rng, self.device)
        self.metrics = [dict(m) for m in state.metrics]
        if state.best_metric == self.best_metric and state.best_value is not None:
            self.best_value, self.best_iteration = float(state.best_value), state.best_iteration
        self._continuing = True

    # ------------------------------------------------------------------ control

    def request_stop(self) -> None:
        """Ask the loop to stop after the current iteration; ``latest`` is saved.

        Thread-safe: the napari widget calls it from the main thread.
        """
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        """Whether :meth:`request_stop` was called."""
        return self._stop.is_set()

    def _should_stop(self) -> bool:
        should = self.callbacks.should_stop
        stop = self._stop.is_set() or bool(should is not None and should())
        return distributed.any_rank(stop, self.device) if self.dist is not None else stop

    # ------------------------------------------------------------------ the loop

    def run(self) -> TrainingSummary:
        """Train until the planned iteration count or a stop request; returns a summary.

        Validation runs first at iteration 0 (before any update) on a fresh run, then
        every ``validate_every`` iterations and at the end. The output folder is locked
        while it runs (a second run there is refused).
        """
        with run_folder_lock(self.output_dir) if self.is_main else contextlib.nullcontext():
            return self._run()

    def _run(self) -> TrainingSummary:
        self._begin()
        stopped = False
        with deterministic_algorithms(self.deterministic):
            self.steps.train_mode()
            if not self.metrics and self.valid_data is not None:
                self._validate()
                self._preview()
            while self.iteration < self.total:
                if self._should_stop():
                    stopped = True
                    break
                self._iterate()
            latest = self._save(self.output_dir / LATEST)
        best = self.output_dir / BEST
        return TrainingSummary(
            iterations=self.iteration,
            stopped_early=stopped,
            latest=latest,
            best=best if best.is_file() else None,
            metrics=list(self.metrics),
        )

    def _begin(self) -> None:
        """Output folder and logs; a continued run keeps its rows up to now."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if self.is_main:
            # Temporary files of bundle writes that a killed process left behind.
            for stale in self.output_dir.glob(".*.tagan.*.part"):
                stale.unlink(missing_ok=True)
        keep = self.iteration if self._continuing else None
        self._continuing = True
        self.losses_csv.start(keep)
        self.metrics_csv.start(keep)

    def _iterate(self) -> None:
        """One iteration: lr, update, logs, then validation, preview and checkpoints due."""
        lr = self.config.lr * self.schedule.factor(self.iteration // self.iters_per_epoch)
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group["lr"] = lr
        losses = self.train_step(self._next_batch())
        self.iteration += 1
        i = self.iteration
        self._log_losses(losses, lr)
        if self.valid_data is not None and (i % self.validate_every == 0 or i == self.total):
            self._validate()
        if i % self.preview_every == 0:
            self._preview()
        if i % self.checkpoint_every == 0 and i < self.total:
            self._save(self.output_dir / periodic_name(i))
            self._save(self.output_dir / LATEST)

    def _next_batch(self) -> Batch[torch.Tensor]:
        """The slice for this rank of of the next global batch, on the device."""
        b = self.config.batch_size
        crops = self.sampler.draw(b * self.world, self.crop)
        mine = crops[self.rank * b : (self.rank + 1) * b]
        return make_batch(self.train_data, mine, self.crop).map(
            lambda a: (
                torch.from_numpy(a)
                .to(self.device, non_blocking=True)
                .contiguous(memory_format=self.memory_format)
            )
        )

    def train_step(self, batch: Batch[torch.Tensor]) -> dict[str, float]:
        """One D, G and S update; returns each loss term as a float (mean over ranks).

        A NaN or infinite loss stops training (:class:`TrainingDivergedError`) before
        anything is saved, so the last checkpoint on disk stays the last good one.
        """
        losses = self.steps.train_step(batch)
        check_losses(self.iteration + 1, losses)
        return losses

    # ------------------------------------------------------------------ reporting

    def _log_losses(self, losses: dict[str, float], lr: float) -> None:
        if not self.is_main:
            return
        epoch = self.iteration / self.iters_per_epoch
        self.losses_csv.append({"iteration": self.iteration, "epoch": epoch, **losses, "lr": lr})
        if self.callbacks.on_iteration is not None:
            self.callbacks.on_iteration(self.iteration, self.total, losses, lr)

    def _sync_buffers(self) -> None:
        if self.dist is not None:
            for net in self.model.networks().values():
                distributed.broadcast_buffers(net)

    def evaluate(self, dataset: TrainingDataset | None = None) -> dict[str, float]:
        """Validation metrics (:func:`~.validation.evaluate`) on ``dataset`` or the run's."""
        data = self.valid_data if dataset is None else dataset
        if data is None:
            raise InputError("no validation data")
        self._sync_buffers()
        return evaluate(self.model, data, self.placement, uses_labels=self.uses_labels)

    def _validate(self) -> None:
        metrics = self.evaluate()
        row = {"iteration": self.iteration, "epoch": self.iteration / self.iters_per_epoch}
        self.metrics.append({**row, **metrics})
        score = metrics.get(self.best_metric, math.nan)
        self.schedule.observe(score)
        if self.is_main:
            self.metrics_csv.append({**row, **metrics})
            if self.callbacks.on_validation is not None:
                self.callbacks.on_validation(self.iteration, dict(metrics))
        if self.iteration > 0 and math.isfinite(score) and score > self.best_value:
            self.best_value, self.best_iteration = score, self.iteration
            self._save(self.output_dir / BEST, with_state=False)

    def _preview(self) -> None:
        if self.preview_image is None or self.callbacks.on_preview is None or not self.is_main:
            return
        from ..prediction import predict

        result = predict(self.model, self.preview_image, mode="eval", seed=None, segment=False)
        self.callbacks.on_preview(self.iteration, result.synthetic_sted)

    def _save(self, path: Path, *, with_state: bool = True) -> Path:
        self._sync_buffers()
        if not self.is_main:
            return path
        extra = {"fine_tuned_from": self._origin} if self._origin else {}
        self.model.provenance = Provenance.new(
            iterations=self.iteration,
            epochs=self.iteration / self.iters_per_epoch,
            training_data_fingerprint=self.train_data.fingerprint,
            source=f"napari-tagan training ({self.output_dir})",
            **extra,
        )
        state = self.training_state().to_dict() if with_state else None
        save_bundle(self.model, path, training_state=state)
        if self.callbacks.on_checkpoint is not None:
            self.callbacks.on_checkpoint(self.iteration, path)
        return path


__all__ = ["BEST", "LATEST", "Trainer", "TrainerCallbacks", "TrainingSummary", "periodic_name"]
