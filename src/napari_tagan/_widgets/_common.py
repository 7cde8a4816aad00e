"""Helpers shared by the widgets: layer choices, result layers, notifications, settings.

Imports Qt and napari (widgets only run inside a viewer) but not torch.
"""

from __future__ import annotations

import json
import logging
import os
import weakref
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer

log = logging.getLogger("napari_tagan")

CONFIG_DIR_ENV = "NAPARI_TAGAN_CONFIG_DIR"
MAX_RECENT = 8


# The worker helpers moved to ``_worker``; imported here for the widgets that still import
# them from this module.
from ._worker import (  # noqa: E402, F401
    Relay,
    hold_full_collections,
    leave_a_core_for_the_viewer,
    report_error,
    start_worker,
)

# --- layer choices -----------------------------------------------------------------------


def layers_of_type(viewer: napari.Viewer, kind: str) -> list[Layer]:
    """Layers of ``kind`` ("image" or "labels") in the viewer, top first."""
    from napari.layers import Image, Labels

    cls = {"image": Image, "labels": Labels}[kind]
    return [layer for layer in reversed(viewer.layers) if isinstance(layer, cls)]


def keep_choices_fresh(viewer: napari.Viewer, container: Any) -> None:
    """Refresh ``container``'s layer dropdowns whenever layers come, go or are renamed."""
    ref = weakref.ref(container)

    def refresh(*_: Any) -> None:
        widget = ref()
        if widget is not None:
            try:
                widget.reset_choices()
            except RuntimeError:  # the Qt side is already gone
                pass

    viewer.layers.events.inserted.connect(refresh)
    viewer.layers.events.removed.connect(refresh)
    viewer.layers.events.reordered.connect(refresh)
    viewer.layers.events.inserted.connect(lambda event: event.value.events.name.connect(refresh))
    for layer in viewer.layers:
        layer.events.name.connect(refresh)


# --- result layers -----------------------------------------------------------------------


def put_layer(viewer: napari.Viewer, data: Any, kwargs: dict[str, Any], layer_type: str) -> Layer:
    """Add a result layer, or replace the data of the one with the same name and type.

    Re-running a widget updates its result layers instead of piling up copies; the user's
    display settings (opacity, visibility, position in the list) stay as they were.
    """
    name = kwargs["name"]
    existing = viewer.layers[name] if name in viewer.layers else None
    if existing is not None and type(existing).__name__.lower() == layer_type:
        if existing.ndim == np.ndim(data):
            existing.data = data
            # Each transform change re-lays out the viewer's dims: only when they change.
            for key in ("scale", "translate"):
                if key in kwargs and not np.allclose(getattr(existing, key), kwargs[key]):
                    setattr(existing, key, kwargs[key])
            existing.metadata = kwargs.get("metadata", {})
            if layer_type == "image":
                if "contrast_limits" in kwargs:
                    existing.contrast_limits = kwargs["contrast_limits"]
                else:  # the range first: limits are clipped to the old data's range
                    existing.reset_contrast_limits_range()
                    existing.reset_contrast_limits()
            elif "colormap" in kwargs:
                existing.colormap = kwargs["colormap"]
                existing.features = kwargs.get("features", existing.features)
            return existing
    if existing is not None:
        viewer.layers.remove(existing)
    from napari.layers import Layer

    return viewer.add_layer(Layer.create(data, kwargs, layer_type))


def spatial_kwargs(layer: Layer, drop_axes: Iterable[int] = ()) -> dict[str, Any]:
    """``scale``, ``translate`` and ``units`` of ``layer`` without the axes in ``drop_axes``."""
    drop = {a % layer.ndim for a in drop_axes}
    keep = [i for i in range(layer.ndim) if i not in drop]
    out: dict[str, Any] = {
        "scale": tuple(float(layer.scale[i]) for i in keep),
        "translate": tuple(float(layer.translate[i]) for i in keep),
    }
    units = getattr(layer, "units", None)
    if units is not None:
        out["units"] = tuple(str(units[i]) for i in keep)
    return out


# --- settings ------------------------------------------------------------------------------


def settings_dir() -> Path:
    """Folder of the plugin's small settings files (``$NAPARI_TAGAN_CONFIG_DIR`` wins)."""
    env = os.environ.get(CONFIG_DIR_ENV)
    if env:
        return Path(env)
    from platformdirs import user_config_dir

    return Path(user_config_dir("napari-tagan", appauthor=False))


class RecentModels:
    """Recently used models (path, epoch, preset), newest first, kept in a JSON file."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or settings_dir() / "recent_models.json"

    def load(self) -> list[dict[str, Any]]:
        try:
            entries = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return []
        if not isinstance(entries, list):
            return []
        return [e for e in entries if isinstance(e, dict) and isinstance(e.get("path"), str)]

    def add(self, path: str, epoch: str | None = None, preset: str | None = None) -> None:
        entry = {"path": str(path), "epoch": epoch, "preset": preset}
        entries = [e for e in self.load() if e != entry]
        entries.insert(0, entry)
        try:
            from napari_tagan.core.io import atomic_write_bytes

            atomic_write_bytes(self.path, json.dumps(entries[:MAX_RECENT], indent=1).encode())
        except OSError as exc:  # remembering is a convenience, not worth an error
            log.warning("could not save recent models to %s: %s", self.path, exc)

    @staticmethod
    def label(entry: dict[str, Any]) -> str:
        extra = [f"epoch {entry['epoch']}"] if entry.get("epoch") else []
        extra += [entry["preset"]] if entry.get("preset") else []
        path = Path(entry["path"])
        # a run's models share file names (latest.tagan): its folder names the run
        name = f"{path.parent.name}/{path.name}" if path.suffix == ".tagan" else path.name
        return f"{name} ({', '.join(extra)})" if extra else name


class RememberedSettings:
    """A panel's settings between sessions: control name → value, in a JSON file."""

    def __init__(self, panel: str, path: Path | None = None) -> None:
        self.path = path or settings_dir() / f"{panel}.json"

    def save(self, controls: dict[str, Any]) -> None:
        values = {name: _plain(w.value) for name, w in controls.items()}
        try:
            from napari_tagan.core.io import atomic_write_bytes

            atomic_write_bytes(self.path, json.dumps(values, indent=1).encode())
        except OSError as exc:  # remembering is a convenience, not worth an error
            log.warning("could not save settings to %s: %s", self.path, exc)

    def restore(self, controls: dict[str, Any]) -> None:
        """Set the remembered values that still fit their control (others stay)."""
        try:
            values = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return
        if not isinstance(values, dict):
            return
        for name, widget in controls.items():
            if name in values:
                try:
                    widget.value = values[name]
                except (ValueError, TypeError):  # e.g. a device this machine lacks
                    log.debug("setting %s=%r no longer fits", name, values[name])


def _plain(value: Any) -> Any:
    return value if isinstance(value, (bool, int, float, str)) or value is None else str(value)


# --- small things --------------------------------------------------------------------------


def side_by_side(*widgets: Any, label: str = "", labels: bool = False) -> Any:
    """Widgets side by side (buttons, small number boxes), to keep a widget short."""
    from magicgui.widgets import Container

    box = Container(layout="horizontal", labels=labels, label=label, widgets=widgets)
    box.margins = (0, 0, 0, 0)
    return box


def scrolling(panel: Any, body: Any) -> None:
    """Show ``body`` (a Container) inside ``panel`` in a scroll area.

    napari docks a magicgui widget's ``native`` widget, so the scroll area goes inside it
    (magicgui's own ``scrollable`` would be left out of the dock).
    """
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QComboBox, QFrame, QScrollArea

    # Long layer names must not widen the panel past its dock: choices shrink, text elides.
    for combo in body.native.findChildren(QComboBox):
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(8)
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setWidget(body.native)
    panel.native.layout().addWidget(area)
    panel.margins = (0, 0, 0, 0)


def advanced_section(*widgets: Any) -> tuple[Any, Any]:
    """A checkbox that shows or hides ``widgets`` (rarely changed settings), and their box."""
    from magicgui.widgets import CheckBox, Container

    box = Container(labels=True, widgets=widgets, visible=False)
    box.margins = (0, 0, 0, 0)
    toggle = CheckBox(
        label="",
        text="show advanced settings",
        value=False,
        tooltip="Settings most people never change (speed, hardware, bookkeeping).",
    )
    toggle.changed.connect(lambda on: setattr(box, "visible", bool(on)))
    return toggle, box


def value_widgets(container: Any) -> list[Any]:
    """Every control (value widget or button) inside ``container``, however nested."""
    from magicgui.widgets import Container

    out = []
    for widget in container:
        out += value_widgets(widget) if isinstance(widget, Container) else [widget]
    return out


def device_choices() -> list[str]:
    """``auto``, ``cpu`` and the accelerators torch sees on this machine."""
    import torch

    choices = ["auto", "cpu"]
    if torch.cuda.is_available():
        choices += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        choices.append("mps")
    return choices
