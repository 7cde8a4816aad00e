"""Train / fine-tune widget: layers in, the core trainer in a worker thread, a model out.

The widget gathers image sets (confocal, STED and annotation layers), a starting point (a
preset or a model file to fine-tune) and settings; one worker thread builds the dataset
(:func:`~napari_tagan.core.training.dataset_from_arrays`) and runs
:class:`~napari_tagan.core.training.Trainer`. The trainer's callbacks reach the main
thread through a queued Qt signal: the progress bar, a small loss / metric plot (redrawn
at most a few times a second), and a preview layer of the synthetic STED. Stop keeps the
last checkpoint; Resume continues it; the trained model then goes to the Enhance widget.
"""

from __future__ import annotations

import datetime as _dt
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    Label,
    ProgressBar,
    PushButton,
    Select,
    SpinBox,
)

from ._common import (
    Relay,
    device_choices,
    keep_choices_fresh,
    layers_of_type,
    put_layer,
    report_error,
    side_by_side,
    spatial_kwargs,
    start_worker,
)

if TYPE_CHECKING:
    import napari
    from napari.layers import Image, Labels

PROGRESS_STEPS = 1000
#: Seconds between redraws of the loss plot.
PLOT_INTERVAL_S = 0.25
PLOTTED_LOSSES = ("G", "D", "S", "G_seg")
#: Layer-name endings of the low- and high-resolution images of a pair.
PAIR_NAMES = (("confocal", "STED"), ("brightfield", "SIM"))


# --- plain helpers -------------------------------------------------------------------------


def current_plane(layer: Any, point: tuple[float, ...]) -> np.ndarray:
    """The 2D (or channels-first) plane of ``layer`` under the viewer's sliders."""
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    if data.ndim <= 2:
        return np.asarray(data)
    position = layer.world_to_data(point)
    index = tuple(
        int(min(max(np.rint(c), 0), n - 1))
        for c, n in zip(position[: data.ndim - 2], data.shape, strict=False)
    )
    return np.asarray(data[index])


def order_labels(layers: list[Labels], class_names: tuple[str, ...]) -> list[Labels]:
    """Per-class annotation layers in the model's class order (by their class metadata)."""
    if len(layers) <= 1:
        return layers
    by_class = {}
    for layer in layers:
        classes = (layer.metadata.get("tagan") or {}).get("classes") or []
        if len(classes) != 1:  # else by name: "<image> annotations <class>", "<sample> <class>"
            classes = [c for c in class_names if layer.name.endswith(f" {c}")]
        if len(classes) == 1:
            by_class[classes[0]] = layer
    if set(by_class) >= set(class_names):
        return [by_class[c] for c in class_names]
    return layers


def _dataset(config: Any, chosen: list[dict[str, Any]]) -> Any:
    """The training data of the chosen image sets, labels in the model's class order."""
    from napari_tagan.core.training import dataset_from_arrays

    labels = []
    for s in chosen:
        planes = s["label_planes"]
        if not planes:
            labels.append(None)
        elif len(planes) == 1:
            labels.append(planes[0])
        else:
            ordered = order_labels(s["labels"], config.class_names)
            index = [s["labels"].index(x) for x in ordered]
            labels.append([planes[i] for i in index])
    return dataset_from_arrays(
        config,
        [s["confocal"] for s in chosen],
        [s["sted"] for s in chosen],
        labels,
        names=[s["name"] for s in chosen],
    )


@dataclass
class TrainingHistory:
    """What the plot shows: losses per iteration and validation metrics."""

    iterations: list[int] = field(default_factory=list)
    losses: dict[str, list[float]] = field(default_factory=dict)
    validation: list[tuple[int, dict[str, float]]] = field(default_factory=list)

    def add_losses(self, iteration: int, losses: dict[str, float]) -> None:
        self.iterations.append(iteration)
        for name in PLOTTED_LOSSES:
            if name in losses:
                self.losses.setdefault(name, []).append(float(losses[name]))

    def clear(self) -> None:
        self.iterations.clear()
        self.losses.clear()
        self.validation.clear()


class LossPlot:
    """Loss curves (smoothed, log scale) and validation metrics, docked in the widget."""

    def __init__(self) -> None:
        from ._plot import CurvePlot

        self.canvas = CurvePlot()
        self.draw(TrainingHistory())

    def draw(self, history: TrainingHistory) -> None:
        """Schedule a repaint showing ``history`` (cheap: painting happens once, later)."""
        self.canvas.set_panels(history_panels(history))


def history_panels(history: TrainingHistory) -> list[Any]:
    """The two plot panels of a training history."""
    from ._plot import Curve, Panel, smooth

    its = np.asarray(history.iterations, np.float64)
    losses = Panel("losses (running mean)", log_y=True)
    for name, values in history.losses.items():
        n = min(its.size, len(values))
        losses.curves.append(Curve(name, its[:n], smooth(values[:n])))
    validation = Panel("validation")
    if history.validation:
        x = np.asarray([i for i, _ in history.validation], np.float64)
        for key in ("dice", "ssim"):
            y = np.asarray([m.get(key, math.nan) for _, m in history.validation], np.float64)
            if np.isfinite(y).any():
                validation.curves.append(Curve(key, x, y, markers=True))
    return [losses, validation]


# --- the widget ----------------------------------------------------------------------------


class ImageSetRow(Container):
    """One image set: confocal, STED and its annotation layer(s)."""

    def __init__(self, owner: TrainWidget, number: int) -> None:
        super().__init__(layout="vertical", labels=True, label=f"set {number}")
        viewer = owner.viewer
        self.confocal = ComboBox(
            label=f"set {number} confocal",
            choices=lambda _: [(x.name, x) for x in layers_of_type(viewer, "image")],
        )
        self.sted = ComboBox(
            label=f"set {number} STED",
            choices=lambda _: [(x.name, x) for x in layers_of_type(viewer, "image")],
        )
        self.labels = Select(
            label=f"set {number} labels",
            choices=lambda _: [(x.name, x) for x in layers_of_type(viewer, "labels")],
            allow_multiple=True,
        )
        self.labels.native.setMaximumHeight(70)
        self.extend([self.confocal, self.sted, self.labels])
        self.guess()

    def guess(self) -> None:
        """Pre-select layers by name: ``* confocal``, ``* STED`` and annotations.

        (or ``* brightfield`` and ``* SIM``, as the S. aureus sample).
        """
        images = list(self.confocal.choices)
        for low, _ in PAIR_NAMES:
            conf = next((x for x in images if x.name.lower().endswith(low)), None)
            if conf is not None:
                break
        if conf is not None:
            self.confocal.value = conf
            stem = conf.name[: -len(low)]
            high = dict(PAIR_NAMES)[low]
            sted = next((x for x in images if x.name.lower() == f"{stem}{high}".lower()), None)
            if sted is not None:
                self.sted.value = sted
            labels = [x for x in self.labels.choices if x.name.startswith(stem)]
            if labels:
                self.labels.value = labels


class TrainWidget(Container):
    """Train a new model from a preset, or fine-tune one, on layers in the viewer."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        from napari_tagan.core.config import PRESET_NAMES

        super().__init__(labels=True)
        self.viewer = viewer
        self.rows: list[ImageSetRow] = []
        self._trainer: Any = None
        self._worker: Any = None
        self._stop = threading.Event()
        self._relay = Relay()
        self._relay.message.connect(self._on_message)
        self.history = TrainingHistory()
        self._last_draw = 0.0
        self.summary: Any = None
        self.last_checkpoint: str | None = None

        self.sets = Container(labels=False, layout="vertical")
        self.add_set_button = PushButton(text="Add image set")
        self.remove_set_button = PushButton(text="Remove last set")
        self.validation = ComboBox(
            label="validation",
            choices=self._validation_choices,
            tooltip="Hold one set out to compute validation metrics (PSNR, SSIM, Dice)",
        )
        self.start = ComboBox(
            label="start from",
            choices=[("a preset (new model)", "preset"), ("a model file (fine-tune)", "file")],
            value="preset",
        )
        self.preset = ComboBox(label="preset", choices=list(PRESET_NAMES), value="axons")
        self.filters = SpinBox(
            label="filters",
            min=2,
            max=128,
            value=64,
            tooltip="ngf = nsf = ndf of a new model (64 as the original; smaller is faster)",
        )
        self.model_path = FileEdit(
            label="model", mode="r", filter="Models (*.tagan *.pth);;All files (*)", enabled=False
        )
        self.from_enhance = PushButton(text="Use Enhance's model", enabled=False)
        self.iterations = SpinBox(label="iterations", min=1, max=1_000_000, value=500)
        self.batch_size = SpinBox(label="batch size", min=1, max=512, value=8)
        self.crop = SpinBox(label="crop (0 = whole)", min=0, max=4096, step=16, value=128)
        self.device = ComboBox(label="device", choices=device_choices(), value="auto")
        self.amp = CheckBox(
            label="",
            text="mixed precision",
            value=False,
            tooltip="bf16/fp16 on a GPU, bf16 on CPUs with AMX or AVX512-BF16 (several times "
            "faster there); weights stay fp32. Elsewhere it is ignored, with a warning.",
        )
        self.output = FileEdit(label="output folder", mode="d", value=self._default_output())
        self.preview_every = SpinBox(
            label="preview",
            min=1,
            max=100_000,
            value=25,
            tooltip="Update the preview layer every this many iterations",
        )
        self.validate_every = SpinBox(
            label="validate",
            min=1,
            max=100_000,
            value=50,
            tooltip="Validation metrics every this many iterations (with a held-out set)",
        )
        self.checkpoint_every = SpinBox(
            label="save",
            min=1,
            max=1_000_000,
            value=250,
            tooltip="Save a checkpoint every this many iterations (Stop saves one too)",
        )
        self.to_enhance = CheckBox(label="", text="load into Enhance when done", value=True)
        self.train_button = PushButton(text="Train")
        self.stop_button = PushButton(text="Stop", enabled=False)
        self.resume_button = PushButton(text="Resume")
        self.progress = ProgressBar(label="progress", min=0, max=PROGRESS_STEPS, value=0)
        self.status = Label(label="", value="add image sets, then Train")
        self.status.native.setWordWrap(True)
        self.extend(
            [
                self.sets,
                side_by_side(self.add_set_button, self.remove_set_button),
                self.validation,
                self.start,
                self.preset,
                self.filters,
                self.model_path,
                self.from_enhance,
                self.iterations,
                self.batch_size,
                self.crop,
                self.device,
                self.amp,
                self.output,
                side_by_side(
                    self.preview_every,
                    self.validate_every,
                    self.checkpoint_every,
                    label="every",
                    labels=True,
                ),
                self.to_enhance,
                side_by_side(self.train_button, self.stop_button, self.resume_button),
                self.progress,
                self.status,
            ]
        )
        self.plot = LossPlot()
        self.native.layout().addWidget(self.plot.canvas)

        self.add_set_button.changed.connect(lambda *_: self.add_set())
        self.remove_set_button.changed.connect(lambda *_: self.remove_set())
        self.start.changed.connect(self._on_start)
        self.preset.changed.connect(self._on_preset)
        self.from_enhance.changed.connect(self._use_enhance_model)
        self.train_button.changed.connect(lambda *_: self.train())
        self.stop_button.changed.connect(lambda *_: self.stop())
        self.resume_button.changed.connect(lambda *_: self.train(resume=True))
        keep_choices_fresh(viewer, self)
        self.add_set()
        self._on_preset()

    # --- layout reactions ---

    @staticmethod
    def _default_output() -> str:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        return str(Path.home() / "napari-tagan-runs" / f"run-{stamp}")

    def _validation_choices(self, _: Any = None) -> list[tuple[str, Any]]:
        return [("none", None)] + [(f"set {i + 1}", i) for i in range(len(self.rows))]

    def add_set(self) -> ImageSetRow:
        row = ImageSetRow(self, len(self.rows) + 1)
        self.rows.append(row)
        self.sets.append(row)
        self.validation.reset_choices()
        return row

    def remove_set(self) -> None:
        if len(self.rows) > 1:
            self.sets.remove(self.rows.pop())
            self.validation.reset_choices()

    def _on_start(self, *_: Any) -> None:
        fine_tune = self.start.value == "file"
        self.model_path.enabled = fine_tune
        self.from_enhance.enabled = fine_tune
        self.filters.enabled = not fine_tune
        self.preset.enabled = not fine_tune

    def _on_preset(self, *_: Any) -> None:
        from napari_tagan.core.config import preset_config

        cfg = preset_config(self.preset.value)
        self.batch_size.value = min(cfg.batch_size, 8)
        self.crop.value = cfg.crop_size

    def _use_enhance_model(self, *_: Any) -> None:
        from napari_tagan.core.errors import TaganError

        from ._enhance import open_enhance_widgets

        for widget in open_enhance_widgets(self.viewer):
            choice = widget.model_choice()
            path = Path(choice.path)
            if choice.path in ("", ".") or not path.exists():
                continue  # this Enhance widget has no model yet
            if path.is_dir():  # an original checkpoint folder: the chosen epoch's G file
                from napari_tagan.core.checkpoints import find_original_checkpoint

                try:
                    path = find_original_checkpoint(path, choice.epoch)["generator"]
                except TaganError as exc:
                    report_error(exc, "Train")
                    return
            self.model_path.value = str(path)
            return
        from napari.utils.notifications import show_info

        show_info("Train: no model chosen in an open Enhance widget")

    # --- gathering ---

    def _gather(self) -> tuple[list[dict[str, Any]], Image]:
        """Arrays of each image set, read on the main thread (the current plane)."""
        from napari_tagan.core.errors import InputError

        point = tuple(self.viewer.dims.point)
        sets = []
        for i, row in enumerate(self.rows):
            conf, sted = row.confocal.value, row.sted.value
            if conf is None or sted is None:
                raise InputError(f"set {i + 1}: choose a confocal and a STED layer")
            if conf is sted:
                raise InputError(f"set {i + 1}: the confocal and STED layers are the same layer")
            labels = list(row.labels.value or [])
            sets.append(
                {
                    "name": conf.name,
                    "confocal": current_plane(conf, point),
                    "sted": current_plane(sted, point),
                    "labels": labels,
                    "label_planes": [current_plane(x, point) for x in labels],
                }
            )
        if not sets:
            raise InputError("add at least one image set")
        return sets, self.rows[0].confocal.value

    # --- running ---

    @property
    def running(self) -> bool:
        return self._worker is not None

    def train(self, resume: bool = False) -> Any:
        """Start (or resume) training in a worker thread; returns the worker."""
        from napari.utils.notifications import show_error

        from napari_tagan.core.errors import TaganError

        if self.running:
            return None
        try:
            sets, preview_layer = self._gather()
        except TaganError as exc:
            show_error(f"Train: {exc}")
            return None
        valid_index = self.validation.value
        if valid_index is not None and len(sets) < 2:
            show_error("Train: with one image set there is nothing left to train on")
            return None
        settings = {
            "start": self.start.value,
            "preset": self.preset.value,
            "filters": int(self.filters.value),
            "model_path": str(self.model_path.value),
            "iterations": int(self.iterations.value),
            "batch_size": int(self.batch_size.value),
            "crop_size": int(self.crop.value),
            "device": self.device.value,
            "amp": bool(self.amp.value),
            "output": str(self.output.value),
            "preview_every": int(self.preview_every.value),
            "validate_every": int(self.validate_every.value),
            "checkpoint_every": int(self.checkpoint_every.value),
        }
        preview = sets[0]["confocal"]
        preview_target = (preview_layer, f"{sets[0]['name']} training preview")

        self._stop.clear()
        self.history.clear()
        self.plot.draw(self.history)
        self.progress.value = 0
        self.summary = None
        for button in (self.train_button, self.resume_button):
            button.enabled = False
        self.stop_button.enabled = True
        self.status.value = "preparing data…"
        emit = self._relay.message.emit

        def job() -> Any:
            trainer = self._make_trainer(sets, valid_index, settings, preview, resume, emit)
            self._trainer = trainer
            if self._stop.is_set():
                trainer.request_stop()
            emit(("status", f"training on {trainer.device}…"))
            summary = trainer.run()
            return summary, trainer.config.preset

        self._preview_target = preview_target
        # The preview layer is added now, hidden, and only updated during training: adding
        # a layer is napari's costliest main-thread step, updating it is not.
        self._preview_layer(np.zeros(preview.shape, np.float32), None).visible = False
        self._worker = start_worker(
            job, on_result=self._on_done, on_finished=self._on_finished, what="Train"
        )
        return self._worker

    def _make_trainer(
        self,
        sets: list[dict[str, Any]],
        valid_index: int | None,
        settings: dict[str, Any],
        preview: np.ndarray,
        resume: bool,
        emit: Any,
    ) -> Any:
        """Build the model, datasets and :class:`Trainer` (runs in the worker thread)."""
        from napari_tagan.core.errors import InputError
        from napari_tagan.core.training import TrainerCallbacks
        from napari_tagan.core.training.prepare import (
            NothingToResumeError,
            RunStart,
            prepare_run,
        )

        def datasets(config: Any) -> tuple[Any, Any]:
            train_sets = [s for i, s in enumerate(sets) if i != valid_index]
            valid = _dataset(config, [sets[valid_index]]) if valid_index is not None else None
            return _dataset(config, train_sets), valid

        callbacks = TrainerCallbacks(
            on_iteration=lambda it, total, losses, lr: emit(("iteration", it, total, losses)),
            on_validation=lambda it, metrics: emit(("validation", it, metrics)),
            on_preview=lambda it, image: emit(("preview", it, image)),
            on_checkpoint=lambda it, path: emit(("checkpoint", it, str(path))),
            should_stop=self._stop.is_set,
        )
        width = settings["filters"]
        if resume:
            start = RunStart(settings["output"], resume=True)
        elif settings["start"] == "file":
            start = RunStart(settings["output"], from_model=settings["model_path"])
        else:
            overrides = {"ngf": width, "nsf": width, "ndf": width}
            start = RunStart(settings["output"], preset=settings["preset"], overrides=overrides)
        try:
            return prepare_run(
                start,
                datasets,
                device=settings["device"],
                amp=settings["amp"],
                iterations=settings["iterations"],
                batch_size=settings["batch_size"],
                crop_size=settings["crop_size"],
                validate_every=settings["validate_every"],
                checkpoint_every=settings["checkpoint_every"],
                preview_every=settings["preview_every"],
                preview_image=preview,
                callbacks=callbacks,
            )
        except NothingToResumeError as exc:
            raise InputError(
                f"nothing to resume in {exc.output_dir}: press Train to start"
            ) from exc

    def stop(self) -> None:
        """Stop after the current iteration; the last checkpoint is saved."""
        self._stop.set()
        if self._trainer is not None:
            self._trainer.request_stop()
        self.status.value = "stopping (saving the last checkpoint)…"

    # --- main-thread handlers ---

    def _on_message(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "iteration":
            _, it, total, losses = message
            self.history.add_losses(it, losses)
            self.progress.value = round(PROGRESS_STEPS * it / max(total, 1))
            text = ", ".join(f"{k} {losses[k]:.3g}" for k in PLOTTED_LOSSES if k in losses)
            self.status.value = f"iteration {it}/{total}: {text}"
            self._redraw()
        elif kind == "validation":
            _, it, metrics = message
            self.history.validation.append((it, dict(metrics)))
            self._redraw(force=True)
        elif kind == "preview":
            _, it, image = message
            first = self._preview_layer(image, it)
            if first is not None:
                first.visible = True
        elif kind == "checkpoint":
            self.last_checkpoint = message[2]
        elif kind == "status":
            self.status.value = str(message[1])

    def _preview_layer(self, image: np.ndarray, iteration: int | None) -> Any:
        """Show ``image`` in the preview layer; returns the layer if it was a placeholder."""
        layer, name = self._preview_target
        placeholder = name in self.viewer.layers and (
            self.viewer.layers[name].metadata.get("tagan", {}).get("iteration", 0) is None
        )
        # A stack's preview is one plane: it takes the layer's in-plane scale and translate.
        lead = layer.ndim - image.ndim
        spatial = spatial_kwargs(layer, drop_axes=range(lead)) if lead >= 0 else {}
        result = put_layer(
            self.viewer,
            image,
            {
                **spatial,
                "name": name,
                "colormap": "magma",
                "metadata": {"tagan": {"iteration": iteration, "input_layer": layer.name}},
            },
            "image",
        )
        return result if placeholder or iteration is None else None

    def _redraw(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_draw >= PLOT_INTERVAL_S:
            self._last_draw = now
            self.plot.draw(self.history)

    def _on_done(self, result: tuple[Any, str]) -> None:
        summary, preset = result
        self.summary = summary
        self.plot.draw(self.history)
        state = "stopped" if summary.stopped_early else "done"
        latest = Path(summary.latest)
        self.status.value = (
            f"{state} after {summary.iterations} iterations; model saved as "
            f"{latest.parent.name}/{latest.name}"
        )
        self.status.tooltip = str(latest)
        if self.to_enhance.value:
            self._send_to_enhance(summary.latest, preset)

    def _send_to_enhance(self, path: Path, preset: str) -> None:
        from ._enhance import open_enhance_widgets

        widgets = open_enhance_widgets(self.viewer)
        if not widgets and hasattr(self.viewer, "window"):
            try:
                _, widget = self.viewer.window.add_plugin_dock_widget("napari-tagan", "Enhance")
                widgets = [widget]
            except Exception:  # no plugin registry (e.g. a bare test viewer)
                widgets = []
        for widget in widgets:
            widget.use_model(path, preset=preset)

    def _on_finished(self) -> None:
        self._worker = None
        self._trainer = None
        self.train_button.enabled = True
        self.resume_button.enabled = True
        self.stop_button.enabled = False
