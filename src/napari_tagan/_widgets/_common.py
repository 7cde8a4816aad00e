"""Helpers shared by the widgets: layer choices, result layers, notifications, settings.

Imports Qt and napari (widgets only run inside a viewer) but not torch.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QObject, Signal

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer

log = logging.getLogger("napari_tagan")

CONFIG_DIR_ENV = "NAPARI_TAGAN_CONFIG_DIR"
MAX_RECENT = 8


# --- notifications ---------------------------------------------------------------------


def report_error(exc: BaseException, what: str) -> None:
    """Show a worker's exception as one napari notification (never a traceback dialog).

    Our own errors (:class:`~napari_tagan.core.errors.TaganError`) carry messages meant
    for users and are shown as they are; cancellation is an info, not an error; anything
    else is shown with its type and logged with its traceback.
    """
    from napari.utils.notifications import show_error, show_info

    from napari_tagan.core.errors import TaganError

    if isinstance(exc, InterruptedError):
        show_info(f"{what} cancelled")
    elif isinstance(exc, TaganError):
        show_error(f"{what}: {exc}")
    else:
        log.error("%s failed", what, exc_info=(type(exc), exc, exc.__traceback__))
        show_error(f"{what} failed: {type(exc).__name__}: {exc}")


def start_worker(
    job: Callable[[], Any],
    *,
    on_result: Callable[[Any], None],
    on_finished: Callable[[], None],
    what: str,
) -> Any:
    """Run ``job`` in a napari worker thread; its result or error comes back on the main thread.

    The job's exceptions are caught inside the thread and reported once by
    :func:`report_error` (napari would otherwise show them a second time, with a
    traceback); warnings the job raises from this package become warning notifications.
    ``on_finished`` runs in every case. The job's torch computations use all
    cores but one (:func:`leave_a_core_for_the_viewer`).
    """
    from napari.qt.threading import create_worker

    def guarded() -> tuple[bool, Any]:
        try:
            leave_a_core_for_the_viewer()
            return True, job()
        except Exception as exc:  # reported on the main thread, below
            return False, exc

    def returned(outcome: tuple[bool, Any]) -> None:
        ok, value = outcome
        if ok:
            on_result(value)
        else:
            report_error(value, what)

    shown: set[type] = set()

    def warned(args: tuple) -> None:
        # Our warnings (e.g. clipped intensities) as notifications, each kind once per job
        # (a stack's planes, a training's previews repeat them); libraries' are left out.
        from napari.utils.notifications import show_warning

        message, category, filename = args[:3]
        if "napari_tagan" in str(filename) and category not in shown:
            shown.add(category)
            show_warning(f"{what}: {message}")

    worker = create_worker(guarded, _start_thread=False, _ignore_errors=True)
    worker.returned.connect(returned)
    worker.warned.connect(warned)
    release = hold_full_collections()

    def finished(*_: Any) -> None:
        release()
        on_finished()

    worker.finished.connect(finished)
    try:
        worker.start()
    except BaseException:
        release()
        raise
    return worker


_gc_holds = 0


def hold_full_collections() -> Callable[[], None]:
    """Keep the objects that exist now out of Python's full garbage collections, until released.

    A full (generation 2) collection walks every object of the process with the GIL held:
    with napari, Qt and torch loaded, a pause in which neither the viewer nor a worker
    runs, set off again and again by a job's allocations. While a job runs, the objects
    that existed when it started (the viewer, its layers, the model) are frozen
    (:func:`gc.freeze`), so collections only walk what is new. Holds nest; the last
    release unfreezes, and cycles that became garbage meanwhile (a layer deleted during a
    long training) are collected then. Returns the release function (a second call does
    nothing).
    """
    global _gc_holds
    if _gc_holds == 0:
        gc.freeze()
    _gc_holds += 1
    released = False

    def release() -> None:
        global _gc_holds
        nonlocal released
        if released:
            return
        released = True
        _gc_holds -= 1
        if _gc_holds == 0:
            gc.unfreeze()

    return release


def leave_a_core_for_the_viewer() -> int:
    """Limit torch's intra-op threads *of the calling worker thread* to all cores but one.

    Called at the start of each worker job. Under OpenMP the thread count is per calling
    thread, so the viewer's own thread is untouched. A torch pool as wide as the machine
    competes with the Qt event loop and Mesa's renderer for every core; on small machines
    its spinning threads then stall each other. Returns the thread count set.
    """
    import torch

    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cores = os.cpu_count() or 1
    threads = max(1, min(torch.get_num_threads(), cores - 1))
    torch.set_num_threads(threads)
    return threads


class Relay(QObject):
    """Carries messages from a worker thread to the main thread (queued Qt signal)."""

    message = Signal(object)


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
                else:
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
        name = Path(entry["path"]).name
        return f"{name} ({', '.join(extra)})" if extra else name


# --- small things --------------------------------------------------------------------------


def side_by_side(*widgets: Any, label: str = "", labels: bool = False) -> Any:
    """Widgets side by side (buttons, small number boxes), to keep a widget short."""
    from magicgui.widgets import Container

    box = Container(layout="horizontal", labels=labels, label=label, widgets=widgets)
    box.margins = (0, 0, 0, 0)
    return box


def device_choices() -> list[str]:
    """``auto``, ``cpu`` and the accelerators torch sees on this machine."""
    import torch

    choices = ["auto", "cpu"]
    if torch.cuda.is_available():
        choices += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        choices.append("mps")
    return choices
