"""Guide acquisition widget: where should the microscope take a real STED image?

One worker thread runs :func:`napari_tagan.core.guide.propose_regions`; the proposed
regions come back as an editable Shapes layer (rectangles, scores as features, the
image's scale and translate) and a table with each region's "structure present / absent"
call and its confidence. The regions as the user left them (moved, resized, added,
deleted) are what is exported and what a live-preset model predicts from.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
    Table,
)

from ._common import (
    RecentModels,
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
from ._enhance import ModelChoice

if TYPE_CHECKING:
    import napari
    from napari.layers import Image, Shapes

    from napari_tagan.core.guide import Region, RegionSet
    from napari_tagan.core.model import TAGANModel

BUDGET_KINDS = [("regions", "count"), ("% of the field", "percent")]
PROGRESS_STEPS = 1000
#: Columns of the Shapes layer's features that come from a region's scores.
SCORE_FEATURES = ("score", "variability", "disagreement")


# --- plain computation (no Qt) -------------------------------------------------------------


def image_geometry(layer: Image) -> tuple[tuple[float, float], tuple[float, float]]:
    """(pixel size, origin) in the layer's world units: origin = the top-left pixel's edge."""
    scale = tuple(float(s) for s in layer.scale[-2:])
    translate = tuple(float(t) for t in layer.translate[-2:])
    origin = (translate[0] - scale[0] / 2, translate[1] - scale[1] / 2)
    return scale, origin  # type: ignore[return-value]


def shapes_kwargs(regions: RegionSet, image: Image, name: str) -> dict[str, Any]:
    """Keyword arguments of the Shapes layer showing ``regions`` over ``image``."""
    features: dict[str, list[Any]] = {"rank": list(range(1, len(regions.regions) + 1))}
    for key in SCORE_FEATURES:
        features[key] = [getattr(r, key) for r in regions.regions]
    for i, cls in enumerate(regions.class_names):
        features[f"present_{cls}"] = [
            bool(r.present[i]) if r.present else False for r in regions.regions
        ]
        features[f"confidence_{cls}"] = [
            r.confidence[i] if r.confidence else np.nan for r in regions.regions
        ]
    spatial = spatial_kwargs(image, drop_axes=range(image.ndim - 2))
    return {
        "name": name,
        "shape_type": "rectangle",
        "edge_color": "yellow",
        "face_color": "transparent",
        "edge_width": 1,
        "features": features,
        "text": {"string": "{rank}", "color": "yellow", "size": 10, "anchor": "upper_left"},
        "metadata": {"tagan_guide": dict(regions.metadata)},
        **spatial,
    }


def regions_from_layer(
    shapes: Shapes, image: Image, class_names: tuple[str, ...] = ()
) -> RegionSet:
    """The regions as drawn in ``shapes`` (over ``image``), with the scores they still carry."""
    from napari_tagan.core.guide import Region, RegionSet
    from napari_tagan.core.guide.regions import boxes_from_shapes

    shape = tuple(int(s) for s in image.data.shape[-2:])
    pixel, origin = image_geometry(image)
    features = shapes.features
    regions: list[Region] = []
    for i, vertices in enumerate(shapes.data):
        boxes = boxes_from_shapes([vertices], shape)  # type: ignore[arg-type]
        if not boxes:
            continue
        scores = {k: _feature(features, k, i, 0.0) for k in SCORE_FEATURES}
        present = tuple(bool(_feature(features, f"present_{c}", i, False)) for c in class_names)
        confidence = tuple(
            float(_feature(features, f"confidence_{c}", i, np.nan)) for c in class_names
        )
        known = all(np.isfinite(confidence))
        b = boxes[0]
        regions.append(
            Region(
                b.y0,
                b.x0,
                b.y1,
                b.x1,
                present=present if known else (),
                confidence=confidence if known else (),
                **{k: float(v) for k, v in scores.items()},
            )
        )
    meta = dict(shapes.metadata.get("tagan_guide", {}))
    return RegionSet(tuple(regions), shape, pixel, origin, class_names, metadata=meta)


def _feature(features: Any, key: str, row: int, default: Any) -> Any:
    if key not in features or row >= len(features):
        return default
    value = features[key].iloc[row]
    return default if value is None or (isinstance(value, float) and np.isnan(value)) else value


def table_value(regions: RegionSet) -> dict[str, Any]:
    """The regions table (rows numbered by rank), in a biologist's words."""
    headers = ["y (µm)", "x (µm)", "uncertainty"]
    for cls in regions.class_names:
        headers += [cls, "agree"]
    rows = []
    for r in regions.regions:
        y0, x0, y1, x1 = regions.physical(r)
        row: list[Any] = [f"{(y0 + y1) / 2:.2f}", f"{(x0 + x1) / 2:.2f}", f"{r.score:.2f}"]
        for present, conf in zip(r.present, r.confidence, strict=True):
            row += ["present" if present else "absent", f"{conf:.0%}"]
        row += [""] * (len(headers) - len(row))
        rows.append(row)
    return {"data": rows, "index": list(range(1, len(rows) + 1)), "columns": headers}


# --- the widget ------------------------------------------------------------------------------


class GuideWidget(Container):
    """Propose where to acquire real STED, let the user edit it, export it, use it."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=False)  # labelled sub-panels; the table spans the width
        self.viewer = viewer
        self.recent = RecentModels()
        self._models: dict[tuple[Any, ...], TAGANModel] = {}
        self._worker: Any = None
        self._class_names: tuple[str, ...] = ()
        self._relay = Relay()
        self._relay.message.connect(self._on_progress)

        self._make_inputs()
        self._make_outputs()
        budget_row = side_by_side(self.budget, self.budget_kind, label="real STED budget")
        budget_row.tooltip = "How much real STED you can afford: regions, or % of the field."
        settings = Container(
            labels=True,
            widgets=[
                self.image,
                self.recent_box,
                self.model_path,
                budget_row,
                self.block_um,
                self.generations,
                self.only_uncertain,
                self.agreement,
                self.device,
            ],
        )
        live = Container(labels=True, widgets=[self.sted])
        for box in (settings, live):
            box.margins = (0, 0, 0, 0)
        self.extend(
            [
                settings,
                self.propose_button,
                self.progress,
                self.heading,
                self.table,
                self.export_button,
                live,
                self.predict_button,
                self.status,
            ]
        )
        self.recent_box.changed.connect(self._on_recent)
        self.only_uncertain.changed.connect(lambda v: setattr(self.agreement, "enabled", bool(v)))
        self.budget_kind.changed.connect(self._on_budget_kind)
        self.propose_button.changed.connect(self.propose)
        self.export_button.changed.connect(self._export_dialog)
        self.predict_button.changed.connect(self.predict)
        keep_choices_fresh(viewer, self)

    def _make_inputs(self) -> None:
        """The settings a user chooses before proposing."""
        self.image = ComboBox(
            label="confocal image",
            choices=self._image_choices,
            nullable=False,
            tooltip="The confocal image of the field the microscope is looking at.",
        )
        self.recent_box = ComboBox(
            label="recent models",
            choices=lambda _: [(RecentModels.label(e), e) for e in self.recent.load()],
            nullable=True,
            tooltip="Models used recently in any TA-GAN panel.",
        )
        self.model_path = FileEdit(
            label="model",
            mode="r",
            filter="Models (*.tagan *.pth);;All files (*)",
            tooltip="A trained TA-GAN model (.tagan bundle) for this kind of sample.",
        )
        self.budget = SpinBox(
            label="how many",
            min=1,
            max=1000,
            value=8,
            tooltip="How many regions to image with real STED (or which percentage of the "
            "field, see the next choice): the photobleaching and time you can afford.",
        )
        self.budget_kind = ComboBox(
            label="counted as",
            choices=BUDGET_KINDS,
            value="count",
            tooltip="Count regions, or limit the real STED to a percentage of the field.",
        )
        self.block_um = FloatSpinBox(
            label="region size (µm)",
            min=0.05,
            max=1000.0,
            step=0.25,
            value=2.0,
            tooltip="Side of the square regions the field is divided into, in the image's "
            "units (µm when the image carries its pixel size).",
        )
        self.generations = SpinBox(
            label="generations",
            min=2,
            max=256,
            value=8,
            tooltip="How many synthetic STED images to draw (dropout): regions where they "
            "disagree are the ones worth a real acquisition. More is steadier but slower.",
        )
        self.only_uncertain = CheckBox(
            text="only regions whose call is uncertain",
            value=False,
            tooltip="Skip regions where the generations agree that the structure is there "
            "(or is not) at least as often as the agreement threshold.",
        )
        self.agreement = FloatSpinBox(
            label="agreement threshold",
            min=0.55,
            max=1.0,
            step=0.05,
            value=0.9,
            enabled=False,
            tooltip="A call is trusted when at least this fraction of generations agree.",
        )
        self.device = ComboBox(
            label="device",
            choices=device_choices(),
            value="auto",
            tooltip="Where to compute: auto picks a GPU when there is one.",
        )

    def _make_outputs(self) -> None:
        """Buttons, progress, the regions table and the live-cell controls."""
        from napari_tagan.core.guide import RegionSet

        self.propose_button = PushButton(
            text="Propose regions", tooltip="Compute the generations and propose regions."
        )
        self.progress = ProgressBar(min=0, max=PROGRESS_STEPS, value=0)
        self.progress.tooltip = "Synthetic STED images drawn so far."
        self.heading = Label(value="Proposed regions, most informative first:")
        self.table = Table(value=table_value(RegionSet((), (1, 1))))
        self.table.tooltip = (
            "Proposed regions, most informative first: position of the centre (µm), how "
            "unsure the model is (1 = the most unsure region of this image), and for each "
            "structure whether it is present or absent and the fraction of generations "
            "that agree."
        )
        self.table.read_only = True
        self.export_button = PushButton(
            text="Export regions…",
            tooltip="Save the regions (as edited) as CSV or JSON, in pixels and µm, for the "
            "microscope's control script.",
        )
        self.sted = ComboBox(
            label="real STED (live)",
            choices=self._image_choices,
            nullable=True,
            tooltip="Live-cell models: the STED image acquired in the regions (same field "
            "and size as the confocal; only the pixels inside the regions are used).",
        )
        self.predict_button = PushButton(
            text="Predict with these regions",
            tooltip="Live-cell models: predict the whole field from the confocal and the "
            "real STED acquired in the regions.",
        )
        self.status = Label(label="", value="choose a confocal image and a model")
        self.status.native.setWordWrap(True)

    # --- choices ---

    def _image_choices(self, _: Any = None) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in layers_of_type(self.viewer, "image")]

    def _on_recent(self, entry: dict[str, Any] | None) -> None:
        if entry:
            self.model_path.value = entry["path"]

    def _on_budget_kind(self, kind: str) -> None:
        self.budget.max = 100 if kind == "percent" else 1000
        self.budget.tooltip = (
            "Percentage of the field to image with real STED."
            if kind == "percent"
            else "How many regions to image with real STED."
        )

    def budget_value(self) -> int | float:
        """The budget as ``propose_regions`` takes it (int: regions; float: fraction)."""
        if self.budget_kind.value == "percent":
            return float(self.budget.value) / 100.0
        return int(self.budget.value)

    def shapes_name(self) -> str:
        """Name of the regions layer of the chosen image."""
        layer = self.image.value
        return f"{layer.name if layer is not None else 'image'} STED regions"

    # --- running ---

    @property
    def running(self) -> bool:
        """A job is computing."""
        return self._worker is not None

    def _checked_inputs(self, what: str) -> tuple[Image, ModelChoice] | None:
        from napari.utils.notifications import show_error

        layer = self.image.value
        if layer is None:
            show_error(f"{what}: open or add a confocal image first")
            return None
        path = str(self.model_path.value)
        if not path or path == "." or not Path(path).exists():
            show_error(f"{what}: choose a model file (got {path!r})")
            return None
        if layer.rgb or layer.multiscale or layer.ndim not in (2, 3):
            show_error(f"{what}: choose a single 2D grey image (or channels, Y, X)")
            return None
        return layer, ModelChoice(path)

    def propose(self, *_: Any) -> Any:
        """Start proposing regions in a worker thread; returns the worker (None if not)."""
        from napari_tagan.core.guide import propose_regions

        checked = None if self.running else self._checked_inputs("Guide acquisition")
        if checked is None:
            return None
        layer, choice = checked
        pixel, origin = image_geometry(layer)
        data = np.asarray(layer.data)
        options = {
            "budget": self.budget_value(),
            "block_um": float(self.block_um.value),
            "pixel_size_um": pixel,
            "origin_um": origin,
            "generations": int(self.generations.value),
            "uncertain_below": float(self.agreement.value) if self.only_uncertain.value else None,
            "device": self.device.value,
        }

        def job() -> Any:
            model = self._load(choice)
            return propose_regions(
                model,
                data,
                progress=lambda d, t: self._relay.message.emit(("progress", d / t)),
                **options,
            )

        self.status.value = f"drawing {options['generations']} synthetic STED images…"
        return self._start(job, self._on_proposed, "Guide acquisition")

    def _start(self, job: Any, on_result: Any, what: str) -> Any:
        self.progress.value = 0
        for button in (self.propose_button, self.predict_button):
            button.enabled = False
        self._worker = start_worker(
            job, on_result=on_result, on_finished=self._finished, what=what
        )
        return self._worker

    def _finished(self) -> None:
        self._worker = None
        for button in (self.propose_button, self.predict_button):
            button.enabled = True

    def _load(self, choice: ModelChoice) -> TAGANModel:
        from napari_tagan.core.checkpoints import load_model

        key = choice.key()
        if key not in self._models:
            self._models = {key: load_model(choice.path)}  # one model: they can be large
            self.recent.add(choice.path)
        return self._models[key]

    def _on_progress(self, message: tuple[str, Any]) -> None:
        self.progress.value = round(float(message[1]) * PROGRESS_STEPS)

    def _on_proposed(self, proposal: Any) -> None:
        try:
            self._show_proposal(proposal)
        except Exception as exc:  # e.g. the image layer was deleted meanwhile
            report_error(exc, "Guide acquisition")

    def _show_proposal(self, proposal: Any) -> None:
        from napari_tagan.core.guide import rectangles

        layer = self.image.value
        regions = proposal.regions
        self._class_names = regions.class_names
        name = self.shapes_name()
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        kwargs = shapes_kwargs(regions, layer, name)
        shapes = self.viewer.add_shapes(rectangles(regions.regions), **kwargs)
        shapes.events.data.connect(lambda *_: self.refresh_table())
        self.refresh_table()
        self.status.value = (
            f"{len(regions.regions)} region(s), {regions.fraction():.1%} of the field; move, "
            "resize, add or delete rectangles before exporting"
        )

    def regions(self) -> RegionSet | None:
        """The regions as they are now in the Shapes layer (None without one)."""
        name = self.shapes_name()
        layer = self.image.value
        if layer is None or name not in self.viewer.layers:
            return None
        return regions_from_layer(self.viewer.layers[name], layer, self._class_names)

    def refresh_table(self) -> None:
        """Show the current regions (after the user's edits) in the table."""
        regions = self.regions()
        if regions is None:
            return
        self.table.value = table_value(regions)
        self.table.native.resizeColumnsToContents()

    def export(self, path: str | Path) -> Path | None:
        """Write the current regions to ``path`` (.csv or .json); returns it."""
        from napari.utils.notifications import show_error

        from napari_tagan.core.errors import TaganError
        from napari_tagan.core.guide import write_regions

        regions = self.regions()
        if regions is None:
            show_error("Export regions: propose regions first")
            return None
        try:
            written = write_regions(regions, path)
        except (TaganError, OSError) as exc:
            show_error(f"Export regions: {exc}")
            return None
        self.status.value = f"wrote {len(regions.regions)} region(s) to {written}"
        return written

    def _export_dialog(self, *_: Any) -> None:
        from qtpy.QtWidgets import QFileDialog

        path, _ = QFileDialog.getSaveFileName(
            self.native, "Export regions", "regions.csv", "CSV (*.csv);;JSON (*.json)"
        )
        if path:
            self.export(path)

    def predict(self, *_: Any) -> Any:
        """Live models: predict the field from the STED in the regions (worker thread)."""
        from napari.utils.notifications import show_error

        from napari_tagan.core.guide import predict_with_regions

        checked = None if self.running else self._checked_inputs("Predict with regions")
        regions = self.regions()
        if checked is None:
            return None
        if regions is None or not regions.regions or self.sted.value is None:
            show_error("Predict with regions: propose (or draw) regions and choose the real STED")
            return None
        layer, choice = checked
        confocal, sted = np.asarray(layer.data), np.asarray(self.sted.value.data)
        device = self.device.value

        def job() -> Any:
            model = self._load(choice)
            return predict_with_regions(model, confocal, sted, regions, device=device)

        self.status.value = "predicting the field from the acquired regions…"
        return self._start(job, self._on_predicted, "Predict with regions")

    def _on_predicted(self, result: Any) -> None:
        layer = self.image.value
        kwargs = {
            "name": f"{layer.name} synthetic STED (from regions)",
            "metadata": {"tagan": dict(result.metadata)},
            **spatial_kwargs(layer),
        }
        put_layer(self.viewer, result.synthetic_sted, kwargs, "image")
        self.status.value = "predicted the field from the acquired regions"
