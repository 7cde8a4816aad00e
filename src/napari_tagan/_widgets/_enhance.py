"""Enhance panel: confocal layer in; synthetic STED, segmentation and variability out.

The panel gathers a layer and settings; its job (owned by the viewer, :mod:`._jobs`)
loads the model (cached) and runs :func:`~._enhance_run.enhance_planes` in a worker
thread; the results come back as layers named after the input, with its scale and
translate, and "Save results…" writes them with our writer (pixel size, classes and
provenance kept).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    Container,
)

from ._common import (
    RecentModels,
    RememberedSettings,
    hold_full_collections,
    keep_choices_fresh,
    layers_of_type,
    put_layer,
    report_error,
    scrolling,
    side_by_side,
)
from ._enhance_controls import EnhanceControls
from ._enhance_run import (  # noqa: F401  (public here, for other panels)
    EnhanceOutput,
    ModelChoice,
    PlanePlan,
    enhance_planes,
    plan_planes,
    result_layers,
)
from ._events import JobFailed, JobFinished, JobReturned, Progressed, StatusChanged
from ._guess import guess_input, is_result
from ._jobs import (
    PROGRESS_STEPS,
    Job,
    running_job,
    start_job,
    stop_when_closed,
    stop_with_window,
)

log = logging.getLogger("napari_tagan")

if TYPE_CHECKING:
    import napari

    from napari_tagan.core.model import TAGANModel

REMEMBERED = ("device", "tile", "precision", "mode", "generations", "seed", "segmentation")

#: Enhance widgets alive per viewer, so that the Train widget can hand them a model.
_OPEN_WIDGETS: weakref.WeakSet[EnhanceWidget] = weakref.WeakSet()


# --- the widget ----------------------------------------------------------------------------


class EnhanceWidget(EnhanceControls, Container):
    """Pick a confocal layer and a model; get synthetic STED, segmentation, variability."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=False)
        self.viewer = viewer
        self.recent = RecentModels()
        self.job: Job | None = None
        self.results: list[Any] = []  # the layers the last run added or updated
        self._models: dict[tuple[Any, ...], TAGANModel] = {}
        self._pending: list[tuple[Any, dict[str, Any], str]] = []
        self._release_gc: Callable[[], None] = lambda: None
        self._done_text = ""
        self._image_touched = False
        self._quiet = False
        self._settings = RememberedSettings("enhance")
        self._build()
        self._connect()
        keep_choices_fresh(viewer, self)
        self.reset_choices()
        self._settings.restore({name: getattr(self, name) for name in REMEMBERED})
        self._on_image()
        stop_when_closed(self, "enhance")
        _OPEN_WIDGETS.add(self)
        self._attach(running_job(viewer, "enhance"))

    # --- building ---

    def _build(self) -> None:
        self._build_model_controls()
        self._build_run_controls()
        self.body = Container(labels=True)
        self.body.extend(
            [
                self.image,
                self.recent_box,
                self.model_path,
                self.folder_button,
                self.epoch,
                self.preset,
                self.mode,
                self.generations,
                self.scope,
                self.segmentation,
                self.advanced_toggle,
                self.advanced,
                side_by_side(self.run_button, self.cancel_button),
                self.save_button,
                self.progress,
                self.status,
            ]
        )
        scrolling(self, self.body)

    def _connect(self) -> None:
        self.recent_box.changed.connect(self._on_recent)
        self.model_path.changed.connect(self._on_path)
        self.folder_button.changed.connect(self._choose_folder)
        self.mode.changed.connect(self._on_mode)
        self.image.changed.connect(self._on_image)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self.save_button.changed.connect(lambda *_: self.save_results())

    # --- choices and reactions ---

    def _image_choices(self, _: Any = None) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in layers_of_type(self.viewer, "image")]

    def _recent_choices(self, _: Any = None) -> list[tuple[str, Any]]:
        return [(RecentModels.label(e), e) for e in self.recent.load()]

    def reset_choices(self, *_: Any) -> None:
        """Refresh the layer and model lists; guess the input until the user chose one."""
        self._quiet = True
        try:
            self.body.reset_choices() if hasattr(self, "body") else None
            if not self._image_touched:
                guess = guess_input(list(self.image.choices))
                if guess is not None:
                    self.image.value = guess
        finally:
            self._quiet = False

    def _on_recent(self, entry: dict[str, Any] | None) -> None:
        if not entry:
            return
        self.use_model(entry["path"], epoch=entry.get("epoch"), preset=entry.get("preset"))

    def _on_path(self, value: Any = None) -> None:
        from napari_tagan.core.checkpoints import original_epochs

        path = Path(str(self.model_path.value))
        folder = path if path.is_dir() else path.parent if path.suffix == ".pth" else None
        epochs = original_epochs(folder) if folder is not None and folder.is_dir() else []
        self.epoch.choices = ["auto", *epochs]
        self.epoch.enabled = bool(epochs)
        if self.epoch.value not in self.epoch.choices:
            self.epoch.value = "auto"

    def _choose_folder(self, *_: Any) -> None:
        from qtpy.QtWidgets import QFileDialog

        folder = QFileDialog.getExistingDirectory(
            self.native, "Original TA-GAN checkpoint folder (with *_net_G.pth files)"
        )
        if folder:
            self.model_path.value = folder

    def _on_mode(self, *_: Any) -> None:
        self.generations.enabled = self.mode.value != "eval"

    def _on_image(self, *_: Any) -> None:
        if not self._quiet:
            self._image_touched = True
        layer = self.image.value
        self.scope.enabled = layer is not None and layer.ndim > 2 + (1 if layer.rgb else 0)

    def use_model(
        self,
        path: str | Path,
        *,
        epoch: str | None = None,
        preset: str | None = None,
        model: TAGANModel | None = None,
    ) -> None:
        """Select a model (e.g. one just trained); ``model`` skips reloading it."""
        self.model_path.value = str(path)
        self._on_path()
        if epoch and epoch in self.epoch.choices:
            self.epoch.value = epoch
        self.preset.value = preset if preset in self.preset.choices else "auto"
        if model is not None:
            self._models[self.model_choice().key()] = model
        self.status.value = f"model: {Path(path).name}"

    def model_choice(self) -> ModelChoice:
        epoch = self.epoch.value if self.epoch.enabled and self.epoch.value != "auto" else None
        preset = None if self.preset.value == "auto" else self.preset.value
        return ModelChoice(str(self.model_path.value), epoch, preset)

    # --- running ---

    @property
    def running(self) -> bool:
        """A job is computing, or its results are still being added."""
        return (self.job is not None and self.job.running) or bool(self._pending)

    def _refuse(self, text: str) -> None:
        from napari.utils.notifications import show_error

        show_error(f"Enhance: {text}")
        self.status.value = f"Enhance: {text}"

    def _check(self, layer: Any, choice: ModelChoice) -> str | None:
        """Why Enhance cannot start (what to do), or None."""
        if layer is None:
            return "open or add a confocal image first (there is no image layer)"
        if not choice.path or choice.path == "." or not Path(choice.path).exists():
            return f"choose a model file or folder ({choice.path!r} does not exist)"
        if layer.rgb:
            return "choose a grey layer (RGB layers are not microscope images)"
        return None

    def run(self, *_: Any) -> Any:
        """Start enhancing in a worker thread; returns the job (None if not started)."""
        if self.running:
            return None
        layer = self.image.value
        choice = self.model_choice()
        problem = self._check(layer, choice)
        if problem is not None:
            self._refuse(problem)
            return None
        self._settings.save({name: getattr(self, name) for name in REMEMBERED})
        request = self._request(layer, choice)
        self.progress.value = 0
        self.status.value = "loading model…"
        job = start_job(
            self.viewer, "enhance", lambda job: self._work(job, request),
            what="Enhance", listener=self._on_event,
        )  # fmt: skip
        self.job = job
        stop_with_window(self)
        self._attach(job)
        return job

    def _request(self, layer: Any, choice: ModelChoice) -> dict[str, Any]:
        """What the job needs, read on the main thread."""
        from napari_tagan.core.prediction import RunOptions

        options = RunOptions(
            device=self.device.value,
            precision=self.precision.value,
            tile=int(self.tile.value) or None,
        )
        return {
            "layer": layer,
            "choice": choice,
            "data": layer.data[0] if layer.multiscale else layer.data,
            # The plane under the sliders, in the layer's own (data) coordinates.
            "current": tuple(int(np.rint(c)) for c in layer.world_to_data(self.viewer.dims.point)),
            "scope": self.scope.value if self.scope.enabled else "plane",
            "segmentation": self.segmentation.value,
            "predict": {
                "mode": self.mode.value,
                "generations": 1 if self.mode.value == "eval" else int(self.generations.value),
                "seed": int(self.seed.value),
                "segment": self.segmentation.value != "none",
                "options": options,
            },
        }

    def _work(self, job: Job, request: dict[str, Any]) -> tuple[list[Any], str]:
        """Load the model, enhance the planned planes, build the layer data (worker thread)."""
        model = self._load(request["choice"])
        image_axes = 3 if model.config.image_channels > 1 else 2
        plan = plan_planes(tuple(request["data"].shape), image_axes, request["scope"],
                           request["current"])  # fmt: skip
        job.emit(StatusChanged(f"enhancing {len(plan.indices)} plane(s)…"))
        settings = request["predict"]
        output = enhance_planes(
            model, request["data"], plan,
            progress=lambda f: job.emit(Progressed(f)), should_stop=job.should_stop,
            **settings,
        )  # fmt: skip
        choice, options = request["choice"], settings["options"]
        provenance = {
            "model": choice.path,
            "epoch": choice.epoch,
            "preset": model.config.preset,
            "mode": settings["mode"],
            "generations": settings["generations"],
            "device": output.metadata.get("device", options.device),
            "precision": options.precision,
        }
        if request["segmentation"] == "labels":
            # napari builds a Labels layer's class table with pandas: imported here,
            # in the worker, not on first use on the main thread.
            import pandas  # noqa: F401
        layers = result_layers(
            request["layer"], output, plan,
            image_channels=model.config.image_channels,
            segmentation=request["segmentation"], provenance=provenance,
        )  # fmt: skip
        return layers, model.config.preset

    def cancel(self, *_: Any) -> None:
        """Ask the running job to stop at its next tile/generation/plane."""
        if self.job is not None:
            self.job.stop()
        self.status.value = "cancelling…"

    def _load(self, choice: ModelChoice) -> TAGANModel:
        from napari_tagan.core.checkpoints import load_model

        key = choice.key()
        model = self._models.get(key)
        if model is None:
            model = load_model(choice.path, epoch=choice.epoch, preset=choice.preset)
            self._models = {key: model}  # keep one model: they can be large
            self.recent.add(choice.path, choice.epoch, choice.preset)
        return model

    def _attach(self, job: Job | None) -> None:
        """Show ``job`` (started here, or by a panel closed since) in this panel."""
        if job is None:
            return
        if job is not self.job:
            job.subscribe(self._on_event)
        self.job = job
        self.run_button.enabled = False
        self.cancel_button.enabled = True
        self.progress.value = round(job.fraction * PROGRESS_STEPS)
        self.status.value = job.last_status.text

    # --- events from the job (main thread) ---

    def _on_event(self, event: Any) -> None:
        if isinstance(event, Progressed):
            self.progress.value = round(float(event.fraction) * PROGRESS_STEPS)
        elif isinstance(event, StatusChanged):
            self.status.value = event.text
        elif isinstance(event, JobReturned):
            self._on_returned(*event.value)
        elif isinstance(event, JobFailed):
            self.status.value = event.text
        elif isinstance(event, JobFinished):
            self._on_finished(event)

    def _on_returned(self, layers: list[tuple[Any, dict[str, Any], str]], preset: str) -> None:
        self.cancel_button.enabled = False  # computed: what is left is adding the layers
        self._done_text = f"done ({preset} model, {len(layers)} layers)"
        self.status.value = "adding results…"
        try:
            self.recent_box.reset_choices()
        except Exception:  # the recent-models list must not keep the results out
            log.exception("could not refresh the recent models")
        self._pending = list(layers)
        self.results = []
        # adding layers allocates a lot on the main thread: keep full collections short
        self._release_gc = hold_full_collections()
        self._insert_next()

    def _insert_next(self) -> None:
        """Add one result layer, then let the event loop run before the next one.

        Adding a layer (its controls and GL visual) is napari's main-thread work; one per
        event-loop turn keeps the viewer painting and answering in between.
        """
        from qtpy.QtCore import QTimer

        if not self._pending:
            return
        data, kwargs, layer_type = self._pending.pop(0)
        try:
            self.results.append(put_layer(self.viewer, data, kwargs, layer_type))
        except Exception as exc:  # e.g. a layer the user changed meanwhile
            self._pending.clear()
            self.status.value = report_error(exc, f"Enhance: could not add {kwargs['name']!r}")
        if self._pending:
            QTimer.singleShot(5, self._insert_next)
        else:
            if self.status.value == "adding results…":
                self.status.value = self._done_text
            self._settle()

    def _on_finished(self, event: JobFinished) -> None:
        self.job = None
        if event.stopped:
            self.status.value = "cancelled"
            self.progress.value = 0
        self._settle()

    def _settle(self) -> None:
        if not self._pending:
            self._release_gc()
        if not self.running:
            self.run_button.enabled = True
            self.cancel_button.enabled = False
            self.save_button.enabled = bool(self.saveable())

    # --- saving ---

    def saveable(self) -> list[Any]:
        """The last results still in the viewer."""
        return [x for x in self.results if x in self.viewer.layers and is_result(x)]

    def save_results(self, folder: str | Path | None = None) -> list[Path]:
        """Save the last results as TIFFs through our writer (a folder dialog if none given)."""
        from napari_tagan._writer import save_layers

        layers = self.saveable()
        if not layers:
            self._refuse("run Enhance first (there are no results to save)")
            return []
        if folder is None:
            from qtpy.QtWidgets import QFileDialog

            folder = QFileDialog.getExistingDirectory(self.native, "Save results in folder")
            if not folder:
                return []
        try:
            written = save_layers(layers, folder)
        except OSError as exc:
            self._refuse(f"choose another folder: could not write there ({exc})")
            return []
        self.status.value = f"saved {len(written)} file(s) in {Path(folder).name}"
        return written


def open_enhance_widgets(viewer: napari.viewer.Viewer) -> list[EnhanceWidget]:
    """The Enhance widgets open in ``viewer``."""
    return [w for w in list(_OPEN_WIDGETS) if w.viewer is viewer]
