"""Worker threads for the widgets: start one, report its errors, keep the viewer responsive.

Imports Qt and napari (widgets only run inside a viewer) but not torch.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QObject, Signal

log = logging.getLogger("napari_tagan")


# --- notifications ---------------------------------------------------------------------


def report_error(exc: BaseException, what: str) -> str:
    """Show a worker's exception as one napari notification (never a traceback dialog).

    Returns the text shown, for the widget's status line.

    Our own errors (:class:`~napari_tagan.core.errors.TaganError`) carry messages meant
    for users and are shown as they are; cancellation is an info, not an error; anything
    else is shown with its type and logged with its traceback.
    """
    from napari.utils.notifications import show_error, show_info

    from napari_tagan.core.errors import TaganError

    if isinstance(exc, InterruptedError):
        text = f"{what} cancelled"
        show_info(text)
        return text
    if isinstance(exc, TaganError):
        text = f"{what}: {exc}"
    else:
        log.error("%s failed", what, exc_info=(type(exc), exc, exc.__traceback__))
        text = f"{what} failed: {type(exc).__name__}: {exc}"
    show_error(text)
    return text


def start_worker(
    job: Callable[[], Any],
    *,
    on_result: Callable[[Any], None],
    on_finished: Callable[[], None],
    what: str,
    on_error: Callable[[str], None] | None = None,
) -> Any:
    """Run ``job`` in a napari worker thread; its result or error comes back on the main thread.

    The job's exceptions are caught inside the thread and reported once by
    :func:`report_error` (napari would otherwise show them a second time, with a
    traceback); warnings the job raises from this package become warning notifications.
    ``on_error`` gets the text shown; ``on_finished`` runs in every case. The job's torch
    computations use all cores but one (:func:`leave_a_core_for_the_viewer`).
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
            text = report_error(value, what)
            if on_error is not None:
                on_error(text)

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
