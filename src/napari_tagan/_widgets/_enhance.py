"""Enhance widget: confocal layer in; synthetic STED, segmentation and variability out.

The widget gathers a layer and settings, then one worker thread loads the model (cached)
and calls :func:`napari_tagan.core.prediction.predict` plane by plane; the results come back
as layers named after the input, with its scale and translate. The functions before the
``EnhanceWidget`` class (planning planes, running them, building result layer data) take
no viewer or widget and are usable on their own.
"""

from __future__ import annotations

import itertools
import logging
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    ComboBox,
    Container,
    FileEdit,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
)

from ._common import (
    RecentModels,
    Relay,
    device_choices,
    hold_full_collections,
    keep_choices_fresh,
    layers_of_type,
    put_layer,
    report_error,
    side_by_side,
    spatial_kwargs,
    start_worker,
)
from ._labels import class_colour, probability_to_annotation

log = logging.getLogger("napari_tagan")

if TYPE_CHECKING:
    import napari
    from napari.layers import Image

    from napari_tagan.core.model import TAGANModel

MODE_CHOICES = [
    ("deterministic", "eval"),
    ("N generations (dropout)", "mc"),
    ("original (batch statistics)", "original"),
]
SEGMENTATION_CHOICES = [("labels", "labels"), ("probabilities", "probabilities"), ("none", "none")]
SCOPE_CHOICES = [("current plane", "plane"), ("whole stack", "stack")]
PRECISION_CHOICES = [
    ("fp32 (exact)", "fp32"),
    ("bf16 (mixed)", "bf16"),
    ("fp16 (mixed, GPU)", "fp16"),
]
PROGRESS_STEPS = 1000

#: Enhance widgets alive per viewer, so that the Train widget can hand them a model.
_OPEN_WIDGETS: weakref.WeakSet[EnhanceWidget] = weakref.WeakSet()


# --- plain computation -------------------------------------------------------------------


@dataclass
class ModelChoice:
    """Which model to use: a bundle or original folder, its epoch, and a preset hint."""

    path: str
    epoch: str | None = None
    preset: str | None = None

    def key(self) -> tuple[Any, ...]:
        p = Path(self.path)
        try:
            stamp = (
                p.stat().st_mtime_ns
                if p.is_file()
                else max((f.stat().st_mtime_ns for f in p.glob("*.pth")), default=0)
            )
        except OSError:
            stamp = 0
        return (str(p.resolve()), self.epoch, self.preset, stamp)


@dataclass
class PlanePlan:
    """Which planes of a layer to enhance and where the result sits.

    ``lead_shape`` are the layer's axes before the image axes ((C,) Y, X); ``indices`` the
    planes to process (tuples into ``lead_shape``); ``out_lead`` the result's leading
    shape and ``offset`` the index of its first plane in the layer (shifts ``translate``).
    """

    lead_shape: tuple[int, ...]
    indices: list[tuple[int, ...]]
    out_lead: tuple[int, ...]
    offset: tuple[int, ...]


def plan_planes(
    shape: tuple[int, ...], image_axes: int, scope: str, current: tuple[int, ...] = ()
) -> PlanePlan:
    """Plan the planes of a layer of ``shape`` whose last ``image_axes`` axes are an image.

    ``current`` is the layer-coordinate position of the sliders (the plane shown).
    """
    lead = tuple(shape[: max(0, len(shape) - image_axes)])
    if not lead:
        return PlanePlan((), [()], (), ())
    if scope == "stack":
        return PlanePlan(lead, list(itertools.product(*map(range, lead))), lead, (0,) * len(lead))
    given = tuple(current[: len(lead)]) + (0,) * max(0, len(lead) - len(current))
    position = tuple(int(min(max(c, 0), n - 1)) for c, n in zip(given, lead, strict=True))
    return PlanePlan(lead, [position], (1,) * len(lead), position)


@dataclass
class EnhanceOutput:
    """Results for the planned planes, stacked with ``out_lead`` leading axes."""

    synthetic_sted: np.ndarray
    segmentation: np.ndarray | None  # (n_classes, *out_lead, Y, X)
    variability: np.ndarray | None
    class_names: tuple[str, ...]
    metadata: dict[str, Any] = field(default_factory=dict)


def enhance_planes(
    model: TAGANModel,
    data: Any,
    plan: PlanePlan,
    *,
    progress: Callable[[float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    **predict_args: Any,
) -> EnhanceOutput:
    """Run :func:`~napari_tagan.core.prediction.predict` on each planned plane of ``data``.

    Planes are read one at a time (``np.asarray(data[index])``), so dask and zarr layers
    are never loaded whole. ``progress(fraction)`` follows the core's own progress.
    """
    from napari_tagan.core.prediction import predict

    n = len(plan.indices)
    sted = seg = var = None
    result = None
    for i, index in enumerate(plan.indices):
        if should_stop is not None and should_stop():
            raise InterruptedError("enhancement cancelled")
        plane = np.asarray(data[index]) if index else np.asarray(data)

        def plane_progress(done: int, total: int, i: int = i) -> None:
            if progress is not None:
                progress((i + done / max(total, 1)) / n)

        result = predict(
            model, plane, progress=plane_progress, should_stop=should_stop, **predict_args
        )
        out_index = tuple(idx - off for idx, off in zip(index, plan.offset, strict=True))
        if sted is None:
            sted = np.zeros(plan.out_lead + result.synthetic_sted.shape, np.float32)
            if result.variability is not None:
                var = np.zeros(plan.out_lead + result.variability.shape, np.float32)
            if result.segmentation is not None:
                n_classes, *yx = result.segmentation.shape
                seg = np.zeros((n_classes, *plan.out_lead, *yx), np.float32)
        sted[out_index] = result.synthetic_sted
        if var is not None:
            var[out_index] = result.variability
        if seg is not None:
            seg[(slice(None), *out_index)] = result.segmentation
        if progress is not None:
            progress((i + 1) / n)
    assert sted is not None and result is not None
    metadata = dict(result.metadata)
    if n > 1:  # per-plane statistics; the last plane's would mislead
        metadata.pop("normalization_stats", None)
    return EnhanceOutput(sted, seg, var, tuple(result.class_names), metadata)


def result_layers(
    layer: Image,
    output: EnhanceOutput,
    plan: PlanePlan,
    *,
    image_channels: int = 1,
    segmentation: str = "labels",
    provenance: dict[str, Any] | None = None,
) -> list[tuple[Any, dict[str, Any], str]]:
    """LayerData for the results of ``layer``: named after it, overlaying it exactly."""
    name = layer.name
    base = _shifted(spatial_kwargs(layer), plan.offset)
    meta = {"tagan": {**output.metadata, **(provenance or {}), "input_layer": name}}
    if plan.lead_shape:
        meta["tagan"]["planes"] = [list(i) for i in plan.indices][:64]

    colormap = getattr(layer.colormap, "name", "gray")
    layers: list[tuple[Any, dict[str, Any], str]] = [
        (
            output.synthetic_sted,
            {**base, "name": f"{name} synthetic STED", "metadata": meta, "colormap": colormap},
            "image",
        )
    ]
    if output.variability is not None:
        layers.append(
            (
                output.variability,
                {
                    **base,
                    "name": f"{name} variability",
                    "metadata": meta,
                    "colormap": "inferno",
                    "blending": "additive",
                },
                "image",
            )
        )
    if output.segmentation is not None and segmentation != "none":
        # The class maps have no channel axis: drop it from multi-channel inputs.
        seg_base = (
            _shifted(spatial_kwargs(layer, drop_axes=(-3,)), plan.offset)
            if image_channels > 1
            else base
        )
        classes = output.class_names
        for k, cls in enumerate(classes):
            label = f"{name} segmentation" if len(classes) == 1 else f"{name} segmentation {cls}"
            seg_meta = {"tagan": {**meta["tagan"], "classes": [cls]}}
            if segmentation == "labels":
                from ._labels import annotation_layer_kwargs

                style = annotation_layer_kwargs(cls)
                style["metadata"]["tagan"].update(seg_meta["tagan"])
                layers.append(
                    (
                        probability_to_annotation(output.segmentation[k]),
                        {**seg_base, **style, "name": label, "opacity": 0.5},
                        "labels",
                    )
                )
            else:
                layers.append(
                    (
                        output.segmentation[k],
                        {
                            **seg_base,
                            "name": label,
                            "metadata": seg_meta,
                            "colormap": class_colour(cls, k),
                            "contrast_limits": (0.0, 1.0),
                            "blending": "additive",
                        },
                        "image",
                    )
                )
    return layers


def _shifted(spatial: dict[str, Any], offset: tuple[int, ...]) -> dict[str, Any]:
    """Move the leading axes' translate by ``offset`` planes (a single-plane result)."""
    translate = list(spatial["translate"])
    for axis, planes in enumerate(offset):
        translate[axis] += planes * spatial["scale"][axis]
    return {**spatial, "translate": tuple(translate)}


# --- the widget ----------------------------------------------------------------------------


class EnhanceWidget(Container):
    """Pick a confocal layer and a model; get synthetic STED, segmentation, variability."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        from napari_tagan.core.config import PRESET_NAMES

        super().__init__(labels=True)
        self.viewer = viewer
        self.recent = RecentModels()
        self._models: dict[tuple[Any, ...], TAGANModel] = {}
        self._stop = threading.Event()
        self._worker: Any = None
        self._pending: list[tuple[Any, dict[str, Any], str]] = []
        self._release_gc: Callable[[], None] = lambda: None
        self._done_text = ""
        self._relay = Relay()
        self._relay.message.connect(self._on_progress)

        self.image = ComboBox(label="confocal", choices=self._image_choices, nullable=False)
        self.recent_box = ComboBox(label="recent", choices=self._recent_choices, nullable=True)
        self.model_path = FileEdit(
            label="model", mode="r", filter="Models (*.tagan *.pth);;All files (*)"
        )
        self.folder_button = PushButton(text="Checkpoint folder…")
        self.epoch = ComboBox(label="epoch", choices=["auto"], value="auto", enabled=False)
        self.preset = ComboBox(label="preset", choices=["auto", *PRESET_NAMES], value="auto")
        self.device = ComboBox(label="device", choices=device_choices(), value="auto")
        self.tile = SpinBox(
            label="tile (0 = auto)",
            min=0,
            max=16384,
            step=64,
            value=0,
            tooltip="Tile side in pixels for large images; 0 lets the core decide.",
        )
        self.precision = ComboBox(
            label="precision",
            choices=PRECISION_CHOICES,
            value="fp32",
            tooltip="fp32: exact. bf16/fp16: mixed precision, faster on GPUs (bf16 also on "
            "CPUs with AMX or AVX512-BF16), within about 1 % of the output range of fp32.",
        )
        self.mode = ComboBox(label="mode", choices=MODE_CHOICES, value="eval")
        self.generations = SpinBox(label="generations", min=2, max=256, value=8, enabled=False)
        self.seed = SpinBox(label="seed", min=0, max=2**31 - 1, value=0)
        self.scope = ComboBox(label="planes", choices=SCOPE_CHOICES, value="plane")
        self.segmentation = ComboBox(
            label="segmentation", choices=SEGMENTATION_CHOICES, value="labels"
        )
        self.run_button = PushButton(text="Enhance")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="progress", min=0, max=PROGRESS_STEPS, value=0)
        self.status = Label(label="", value="choose a model")
        self.status.native.setWordWrap(True)
        self.extend(
            [
                self.image,
                self.recent_box,
                self.model_path,
                self.folder_button,
                self.epoch,
                self.preset,
                self.device,
                self.tile,
                self.precision,
                self.mode,
                self.generations,
                self.seed,
                self.scope,
                self.segmentation,
                side_by_side(self.run_button, self.cancel_button),
                self.progress,
                self.status,
            ]
        )
        self.recent_box.changed.connect(self._on_recent)
        self.model_path.changed.connect(self._on_path)
        self.folder_button.changed.connect(self._choose_folder)
        self.mode.changed.connect(self._on_mode)
        self.image.changed.connect(self._on_image)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        keep_choices_fresh(viewer, self)
        self._on_image()
        _OPEN_WIDGETS.add(self)

    # --- choices and reactions ---

    def _image_choices(self, _: Any = None) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in layers_of_type(self.viewer, "image")]

    def _recent_choices(self, _: Any = None) -> list[tuple[str, Any]]:
        return [(RecentModels.label(e), e) for e in self.recent.load()]

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
        return self._worker is not None or bool(self._pending)

    def run(self, *_: Any) -> Any:
        """Start enhancing in a worker thread; returns the worker (None if not started)."""
        from napari.utils.notifications import show_error

        if self.running:
            return None
        layer = self.image.value
        if layer is None:
            show_error("Enhance: no image layer chosen; open or add a confocal image first")
            return None
        choice = self.model_choice()
        if not choice.path or choice.path == "." or not Path(choice.path).exists():
            show_error(f"Enhance: choose a model file or folder (got {choice.path!r})")
            return None
        if layer.rgb:
            show_error("Enhance: RGB layers are not microscope images; choose a grey layer")
            return None
        from napari_tagan.core.prediction import RunOptions

        options = RunOptions(
            device=self.device.value,
            precision=self.precision.value,
            tile=int(self.tile.value) or None,
        )
        settings = {
            "mode": self.mode.value,
            "generations": 1 if self.mode.value == "eval" else int(self.generations.value),
            "seed": int(self.seed.value),
            "segment": self.segmentation.value != "none",
            "options": options,
        }
        scope = self.scope.value if self.scope.enabled else "plane"
        data = layer.data[0] if layer.multiscale else layer.data
        # The plane under the sliders, in the layer's own (data) coordinates.
        current = tuple(int(np.rint(c)) for c in layer.world_to_data(self.viewer.dims.point))
        segmentation = self.segmentation.value

        self._stop.clear()
        self.progress.value = 0
        self.run_button.enabled = False
        self.cancel_button.enabled = True
        self.status.value = "loading model…"

        def job() -> tuple[list[tuple[Any, dict[str, Any], str]], str]:
            model = self._load(choice)
            image_axes = 3 if model.config.image_channels > 1 else 2
            plan = plan_planes(tuple(data.shape), image_axes, scope, current)
            self._relay.message.emit(("status", f"enhancing {len(plan.indices)} plane(s)…"))
            output = enhance_planes(
                model,
                data,
                plan,
                progress=lambda f: self._relay.message.emit(("progress", f)),
                should_stop=self._stop.is_set,
                **settings,
            )
            provenance = {
                "model": choice.path,
                "epoch": choice.epoch,
                "preset": model.config.preset,
                "mode": settings["mode"],
                "generations": settings["generations"],
                "device": output.metadata.get("device", options.device),
                "precision": options.precision,
            }
            if segmentation == "labels":
                # napari builds a Labels layer's class table with pandas: imported here,
                # in the worker, not on first use on the main thread.
                import pandas  # noqa: F401

            layers = result_layers(
                layer,
                output,
                plan,
                image_channels=model.config.image_channels,
                segmentation=segmentation,
                provenance=provenance,
            )
            return layers, model.config.preset

        self._worker = start_worker(
            job, on_result=self._on_returned, on_finished=self._on_finished, what="Enhance"
        )
        return self._worker

    def cancel(self, *_: Any) -> None:
        """Ask the running job to stop at its next tile/generation/plane."""
        self._stop.set()
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

    def _on_progress(self, message: tuple[str, Any]) -> None:
        kind, value = message
        if kind == "progress":
            self.progress.value = round(float(value) * PROGRESS_STEPS)
        else:
            self.status.value = str(value)

    def _on_returned(self, result: tuple[list[tuple[Any, dict[str, Any], str]], str]) -> None:
        layers, preset = result
        self.cancel_button.enabled = False  # computed: what is left is adding the layers
        self._done_text = f"done ({preset} model, {len(layers)} layers)"
        self.status.value = "adding results…"
        try:
            self.recent_box.reset_choices()
        except Exception:  # the recent-models list must not keep the results out
            log.exception("could not refresh the recent models")
        self._pending = list(layers)
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
            put_layer(self.viewer, data, kwargs, layer_type)
        except Exception as exc:  # e.g. a layer the user changed meanwhile
            self._pending.clear()
            self.status.value = f"could not add {kwargs['name']!r}; see the notification"
            report_error(exc, "Enhance")
        if self._pending:
            QTimer.singleShot(5, self._insert_next)
        else:
            if self.status.value == "adding results…":
                self.status.value = self._done_text
            self._settle()

    def _on_finished(self, *_: Any) -> None:
        self._worker = None
        if self._stop.is_set():
            self.status.value = "cancelled"
            self.progress.value = 0
        self._settle()

    def _settle(self) -> None:
        if not self._pending:
            self._release_gc()
        if not self.running:
            self.run_button.enabled = True
            self.cancel_button.enabled = False


def open_enhance_widgets(viewer: napari.viewer.Viewer) -> list[EnhanceWidget]:
    """The Enhance widgets open in ``viewer``."""
    return [w for w in list(_OPEN_WIDGETS) if w.viewer is viewer]
