"""Train / fine-tune panel: image sets from layers in, a model out.

The panel gathers image sets (confocal, STED and annotation layers), a starting point (a
preset or a model file to fine-tune) and settings; the job (:mod:`._train_job`) runs the
core trainer in a worker thread, owned by the viewer (:mod:`._jobs`), and reports typed
events: the progress bar and time left, the loss / metric plot (redrawn at most a few
times a second) and a preview layer of the synthetic STED. Stop keeps the last
checkpoint; Resume continues it; the trained model then goes to the Enhance panel.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    ComboBox,
    Container,
    Select,
)

from . import _train_settings as defaults
from ._common import (
    RememberedSettings,
    keep_choices_fresh,
    layers_of_type,
    put_layer,
    report_error,
    scrolling,
    side_by_side,
    spatial_kwargs,
)
from ._events import (
    CheckpointSaved,
    IterationDone,
    JobFailed,
    JobFinished,
    JobReturned,
    Previewed,
    StatusChanged,
    Validated,
)
from ._guess import guess_set
from ._jobs import (
    PROGRESS_STEPS,
    Job,
    running_job,
    start_job,
    stop_when_closed,
    stop_with_window,
)
from ._train_controls import TrainControls
from ._train_data import gather_sets, order_labels  # noqa: F401  (order_labels: public here)
from ._train_history import PLOTTED_LOSSES, TrainingHistory, history_panels
from ._train_job import TrainRequest, placeholder, train

if TYPE_CHECKING:
    import napari

#: Seconds between redraws of the loss plot.
PLOT_INTERVAL_S = 0.25
#: Controls remembered between sessions.
REMEMBERED = (  # preset and device first: they reset the sizes to their defaults
    "preset", "device", "iterations", "batch_size", "crop", "filters", "output", "amp",
    "seed", "preview_every", "validate_every", "checkpoint_every", "to_enhance",
)  # fmt: skip


class ImageSetRow(Container):
    """One image set: confocal, STED and its annotation layer(s), guessed until touched."""

    def __init__(self, owner: TrainWidget, number: int) -> None:
        super().__init__(layout="vertical", labels=True, label=f"set {number}")
        self.touched = False  # the user chose layers: no more guessing
        self._quiet = False
        self.confocal = ComboBox(
            label=f"set {number} confocal",
            choices=owner.image_choices,
            nullable=True,
            tooltip="The low-resolution image (confocal, or brightfield) the model learns "
            "to enhance.",
        )
        self.sted = ComboBox(
            label=f"set {number} STED",
            choices=owner.image_choices,
            nullable=True,
            tooltip="The high-resolution image of the same field (STED, or SIM): what the "
            "model should learn to produce.",
        )
        self.annotations = Select(
            label=f"set {number} annotations",
            choices=owner.labels_choices,
            allow_multiple=True,
            tooltip="Optional: Labels layers marking structures in this field (the Annotate "
            "panel makes them). 0 = not annotated, 1 = background, 2… the preset's classes.",
        )
        self.annotations.native.setMaximumHeight(70)
        self.extend([self.confocal, self.sted, self.annotations])
        for widget in (self.confocal, self.sted, self.annotations):
            widget.changed.connect(self._on_user_change)

    def _on_user_change(self, *_: Any) -> None:
        if not self._quiet:
            self.touched = True

    def refresh(self, taken: set[int]) -> None:
        """Refresh the layer lists and, until the user chose, guess this row's layers."""
        self._quiet = True
        try:
            self.reset_choices()
            if not self.touched:
                guess = guess_set(
                    list(self.confocal.choices), list(self.annotations.choices), taken
                )
                self.confocal.value = guess.confocal
                self.sted.value = guess.sted
                self.annotations.value = guess.labels
        finally:
            self._quiet = False


class TrainWidget(TrainControls, Container):
    """Train a new model from a preset, or fine-tune one, on layers in the viewer."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=False)
        self.viewer = viewer
        self.rows: list[ImageSetRow] = []
        self.job: Job | None = None
        self.history = TrainingHistory()
        self.summary: Any = None
        self.last_checkpoint: str | None = None
        self.run_dir: Path | None = None
        self._last_draw = 0.0
        self._first: tuple[int, float] | None = None
        self._preview: dict[str, Any] = {}
        self._settings = RememberedSettings("train")
        self._build()
        self._connect()
        keep_choices_fresh(viewer, self)
        self.add_set()
        self._on_preset()
        self._settings.restore(self._remembered())
        self._update_estimate()
        stop_when_closed(self, "train")
        self._attach(running_job(viewer, "train"))

    # --- building ---

    def _build(self) -> None:
        self._build_inputs()
        self._build_settings()
        self._build_run_controls()
        from ._plot import CurvePlot

        self.plot = CurvePlot()
        self.body = Container(labels=True)
        self.body.extend(
            [
                self.sets,
                side_by_side(self.add_set_button, self.remove_set_button),
                self.validation,
                self.start,
                self.preset,
                self.model_path,
                self.from_enhance,
                self.iterations,
                self.batch_size,
                self.crop,
                self.output,
                self.estimate,
                self.advanced_toggle,
                self.advanced,
                side_by_side(self.train_button, self.stop_button, self.resume_button),
                self.progress,
                self.status,
            ]
        )
        self.body.native.layout().addWidget(self.plot)
        scrolling(self, self.body)
        self._draw()

    def _connect(self) -> None:
        self.add_set_button.changed.connect(lambda *_: self.add_set())
        self.remove_set_button.changed.connect(lambda *_: self.remove_set())
        self.start.changed.connect(self._on_start)
        self.preset.changed.connect(self._on_preset)
        for widget in (self.iterations, self.batch_size, self.crop, self.filters, self.device):
            widget.changed.connect(self._update_estimate)
        self.from_enhance.changed.connect(self._use_enhance_model)
        self.train_button.changed.connect(lambda *_: self.train())
        self.stop_button.changed.connect(lambda *_: self.stop())
        self.resume_button.changed.connect(lambda *_: self.train(resume=True))

    def _remembered(self) -> dict[str, Any]:
        names = {"crop": self.crop}
        return {name: names.get(name) or getattr(self, name) for name in REMEMBERED}

    # --- layer lists and guesses ---

    def image_choices(self, _: Any = None) -> list[tuple[str, Any]]:
        return [(x.name, x) for x in layers_of_type(self.viewer, "image")]

    def labels_choices(self, _: Any = None) -> list[tuple[str, Any]]:
        return [(x.name, x) for x in layers_of_type(self.viewer, "labels")]

    def reset_choices(self, *_: Any) -> None:
        """Refresh every layer list; rows the user has not touched are guessed again."""
        self.validation.reset_choices()
        taken: set[int] = set()
        for row in self.rows:
            row.refresh(taken)
            if row.confocal.value is not None:
                taken.add(id(row.confocal.value))

    def _validation_choices(self, _: Any = None) -> list[tuple[str, Any]]:
        return [("nothing (train on all)", None)] + [
            (f"set {i + 1}", i) for i in range(len(self.rows))
        ]

    def add_set(self) -> ImageSetRow:
        row = ImageSetRow(self, len(self.rows) + 1)
        taken = {id(r.confocal.value) for r in self.rows if r.confocal.value is not None}
        row.refresh(taken)
        self.rows.append(row)
        self.sets.append(row)
        self.validation.reset_choices()
        return row

    def remove_set(self) -> None:
        if len(self.rows) > 1:
            self.sets.remove(self.rows.pop())
            self.validation.reset_choices()

    # --- settings reactions ---

    def _on_start(self, *_: Any) -> None:
        fine_tune = self.start.value == "file"
        self.model_path.enabled = fine_tune
        self.from_enhance.enabled = fine_tune
        self.filters.enabled = not fine_tune
        self.preset.enabled = not fine_tune

    def _on_preset(self, *_: Any) -> None:
        chosen = defaults.defaults_for(self.preset.value, self.device.value)
        self.iterations.value = chosen.iterations
        self.batch_size.value = chosen.batch_size
        self.crop.value = chosen.crop_size
        self.filters.value = chosen.filters

    def _update_estimate(self, *_: Any) -> None:
        seconds = defaults.estimate_seconds(
            self.iterations.value, self.batch_size.value, self.crop.value,
            self.filters.value, self.device.value,
        )  # fmt: skip
        self.estimate.value = f"{defaults.duration(seconds)} (estimate)"

    def _use_enhance_model(self, *_: Any) -> None:
        from napari.utils.notifications import show_info

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
                    self.status.value = report_error(exc, "Train")
                    return
            self.model_path.value = str(path)
            return
        show_info("Train: choose a model in the Enhance panel first (it has none)")

    # --- running ---

    @property
    def running(self) -> bool:
        return self.job is not None and self.job.running

    def _request(self, resume: bool, data_name: str) -> TrainRequest:
        parent = Path(str(self.output.value))
        if resume:
            run_dir = defaults.run_to_resume(parent, self.run_dir)
        else:
            preset = self.preset.value if self.start.value == "preset" else "fine-tune"
            run_dir = defaults.new_run_dir(parent, preset, data_name)
        return TrainRequest(
            run_dir=run_dir,
            resume=resume,
            start=self.start.value,
            preset=self.preset.value,
            filters=int(self.filters.value),
            model_path=str(self.model_path.value),
            iterations=int(self.iterations.value),
            batch_size=int(self.batch_size.value),
            crop_size=int(self.crop.value),
            device=self.device.value,
            amp=bool(self.amp.value),
            seed=int(self.seed.value),
            preview_every=int(self.preview_every.value),
            validate_every=int(self.validate_every.value),
            checkpoint_every=int(self.checkpoint_every.value),
        )

    def _refuse(self, text: str) -> None:
        from napari.utils.notifications import show_error

        show_error(f"Train: {text}")
        self.status.value = f"Train: {text}"

    def train(self, resume: bool = False) -> Any:
        """Start (or resume) training in a worker thread; returns the job (None if refused)."""
        from napari_tagan.core.errors import TaganError

        if self.running:
            return None
        try:
            sets = gather_sets(self.rows, tuple(self.viewer.dims.point))
        except TaganError as exc:
            self._refuse(str(exc))
            return None
        valid_index = self.validation.value
        if valid_index is not None and len(sets) < 2:
            self._refuse("add a second image set, or check on nothing: with one set there is "
                         "nothing left to train on")  # fmt: skip
            return None
        request = self._request(resume, sets[0].name)
        self.run_dir = request.run_dir
        self._settings.save(self._remembered())
        self.summary = None
        self.history = TrainingHistory.from_run(request.run_dir) if resume else TrainingHistory()
        self._first = None
        self._preview = {"layer": self.rows[0].confocal.value,
                         "name": f"{sets[0].name} training preview"}  # fmt: skip
        # Added now, hidden, then only updated: adding a layer is napari's costliest step.
        self._put_preview(placeholder(sets[0].confocal.shape), None).visible = False
        job = start_job(
            self.viewer, "train",
            lambda job: train(request, sets, valid_index, job),
            what="Train", listener=self._on_event,
        )  # fmt: skip
        job.state.update(history=self.history, preview=self._preview, run_dir=request.run_dir,
                         validating=valid_index is not None)  # fmt: skip
        self.job = job
        stop_with_window(self)
        self._attach(job)
        return job

    def _attach(self, job: Job | None) -> None:
        """Show ``job`` (started here, or by a panel closed since) in this panel."""
        if job is None:
            return
        if job is not self.job:
            job.subscribe(self._on_event)
            self.history = job.state.get("history", self.history)
            self._preview = job.state.get("preview", self._preview)
            self.run_dir = job.state.get("run_dir", self.run_dir)
        self.job = job
        self.train_button.enabled = self.resume_button.enabled = False
        self.stop_button.enabled = True
        self.progress.value = round(job.fraction * PROGRESS_STEPS)
        self.status.value = job.last_status.text
        self._draw()

    def stop(self) -> None:
        """Stop after the current iteration; the last checkpoint is saved."""
        if self.job is not None:
            self.job.stop()
        self.status.value = "stopping (saving the model)…"

    # --- events from the job (main thread) ---

    def _on_event(self, event: Any) -> None:
        handler = {
            IterationDone: self._on_iteration,
            Validated: self._on_validated,
            Previewed: self._on_preview,
            CheckpointSaved: self._on_checkpoint,
            StatusChanged: lambda e: setattr(self.status, "value", e.text),
            JobReturned: lambda e: self._on_done(*e.value),
            JobFailed: lambda e: setattr(self.status, "value", e.text),
            JobFinished: self._on_finished,
        }.get(type(event))
        if handler is not None:
            handler(event)

    def _on_iteration(self, event: IterationDone) -> None:
        it, total = event.iteration, event.total
        self.history.add_losses(it, event.losses)
        self.progress.value = round(PROGRESS_STEPS * it / max(total, 1))
        if self._first is None:
            self._first = (it, event.elapsed_s)
        left = defaults.remaining_seconds(self._first, (it, event.elapsed_s), total)
        if left == left:
            self.estimate.value = f"{defaults.duration(left)} left (measured)"
        losses = event.losses
        text = ", ".join(
            f"{PLOTTED_LOSSES[k]} {losses[k]:.3g}" for k in PLOTTED_LOSSES if k in losses
        )
        self.status.value = f"iteration {it}/{total}: {text}"
        self._draw(force=False)

    def _on_validated(self, event: Validated) -> None:
        self.history.validation.append((event.iteration, dict(event.metrics)))
        self._draw()

    def _on_preview(self, event: Previewed) -> None:
        layer = self._put_preview(event.image, event.iteration)
        if not layer.visible and layer.metadata["tagan"].get("first", False):
            layer.visible = True

    def _on_checkpoint(self, event: CheckpointSaved) -> None:
        self.last_checkpoint = event.path

    def _put_preview(self, image: np.ndarray, iteration: int | None) -> Any:
        """Show ``image`` in the preview layer (made visible by its first real preview)."""
        layer, name = self._preview["layer"], self._preview["name"]
        first = name in self.viewer.layers and (
            self.viewer.layers[name].metadata.get("tagan", {}).get("iteration", 0) is None
        )
        # A stack's preview is one plane: it takes the layer's in-plane scale and translate.
        lead = layer.ndim - image.ndim
        spatial = spatial_kwargs(layer, drop_axes=range(lead)) if lead >= 0 else {}
        meta = {"iteration": iteration, "input_layer": layer.name, "first": first}
        return put_layer(
            self.viewer,
            image,
            {**spatial, "name": name, "colormap": "magma", "metadata": {"tagan": meta}},
            "image",
        )

    def _draw(self, force: bool = True) -> None:
        now = time.monotonic()
        if force or now - self._last_draw >= PLOT_INTERVAL_S:
            self._last_draw = now
            validating = bool(self.job.state.get("validating")) if self.job else True
            self.plot.set_panels(history_panels(self.history, validating))

    def _on_done(self, summary: Any, preset: str) -> None:
        self.summary = summary
        self._draw()
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

    def _on_finished(self, event: JobFinished) -> None:
        self.job = None
        self.train_button.enabled = self.resume_button.enabled = True
        self.stop_button.enabled = False
        if event.stopped and self.summary is None:
            self.status.value = "stopped"
