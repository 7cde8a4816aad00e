"""Jobs that belong to a viewer, not to the panel that started them.

One :class:`Job` per kind ("train", "enhance") and viewer, kept in a small registry: a
reopened panel finds the job still running and shows it (with a working Stop); closing
the panel stops its job at the next tile or iteration; closing the viewer's window stops
every job and waits for it (training saves ``latest.tagan`` on the way out), so that napari
exits within seconds. Progress also appears in napari's activity dock, cancellable
there. Events from the worker reach the panel on the main thread (:mod:`._events`).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QEvent, QObject

from ._events import IterationDone, JobFailed, JobFinished, JobReturned, Progressed, StatusChanged
from ._worker import Relay, start_worker

log = logging.getLogger("napari_tagan")

PROGRESS_STEPS = 1000
#: Longest wait for a job to stop when its viewer closes (one iteration or tile).
CLOSE_WAIT_S = 60.0

_JOBS: dict[tuple[int, str], Job] = {}


class Job:
    """A worker thread's job: stop flag, events to the panel, activity-dock progress."""

    def __init__(self, viewer: Any, kind: str, what: str) -> None:
        self.kind = kind
        self.what = what
        self.viewer_ref = weakref.ref(viewer)
        self.stop_requested = threading.Event()
        self.done = threading.Event()  # set by the worker thread as it leaves the job
        self.running = True  # until the finished signal reached the main thread
        self.trainer: Any = None
        self.state: dict[str, Any] = {}  # the panel's own bookkeeping (e.g. the loss history)
        self.last_status = StatusChanged(f"{what}…")
        self.fraction = 0.0
        self.worker: Any = None
        self._listeners: list[weakref.WeakMethod] = []
        self._relay = Relay()  # no Qt parent: outlives the panel that started the job
        self._relay.message.connect(self._deliver)
        self._pbar = _activity_progress(what, self.stop)

    # --- worker side (any thread) ---

    def emit(self, event: Any) -> None:
        """Send ``event`` to the panel showing this job (queued to the main thread)."""
        self._relay.message.emit(event)

    def should_stop(self) -> bool:
        """Whether to stop now: Stop, a closed panel or viewer, or the activity dock's Cancel."""
        if self._pbar is not None and self._pbar.is_canceled:
            self.stop_requested.set()  # napari's progress calls back only when iterated
        return self.stop_requested.is_set()

    # --- main thread ---

    def subscribe(self, handler: Callable[[Any], None]) -> None:
        """Deliver this job's events to ``handler`` (a bound method, held weakly)."""
        self._listeners = [ref for ref in self._listeners if ref() is not None]
        self._listeners.append(weakref.WeakMethod(handler))  # type: ignore[arg-type]

    def stop(self) -> None:
        """Stop at the next tile or iteration (training saves its last checkpoint)."""
        self.stop_requested.set()
        if self.trainer is not None:
            self.trainer.request_stop()

    def stop_and_wait(self, timeout: float = CLOSE_WAIT_S) -> bool:
        """Stop and wait for the worker to leave the job (training saves on the way out)."""
        self.stop()
        stopped = self.done.wait(timeout)
        if not stopped:
            log.warning("%s did not stop within %.0f s", self.what, timeout)
        return stopped

    def _deliver(self, event: Any) -> None:
        if isinstance(event, StatusChanged):
            self.last_status = event
        elif isinstance(event, (Progressed, IterationDone)):
            self._set_fraction(
                event.fraction
                if isinstance(event, Progressed)
                else event.iteration / max(event.total, 1)
            )
        for ref in list(self._listeners):
            handler = ref()
            if handler is None:
                continue
            try:
                handler(event)
            except RuntimeError as exc:  # the panel's Qt side was deleted meanwhile
                log.debug("a closed panel missed %s: %s", type(event).__name__, exc)

    def _set_fraction(self, fraction: float) -> None:
        self.fraction = fraction
        if self._pbar is not None:
            steps = round(fraction * PROGRESS_STEPS)
            if steps > self._pbar.n:
                self._pbar.update(steps - self._pbar.n)

    def _finished(self) -> None:
        self.running = False
        if _JOBS.get(self._key()) is self:
            del _JOBS[self._key()]
        if self._pbar is not None:
            self._pbar.close()
        self._deliver(JobFinished(stopped=self.should_stop()))

    def _key(self) -> tuple[int, str]:
        return (id(self.viewer_ref()), self.kind)


def running_job(viewer: Any, kind: str) -> Job | None:
    """The job of ``kind`` running in ``viewer``, if any."""
    job = _JOBS.get((id(viewer), kind))
    return job if job is not None and job.running else None


def start_job(
    viewer: Any, kind: str, work: Callable[[Job], Any], *, what: str, listener: Callable
) -> Job:
    """Run ``work(job)`` in a worker thread as ``viewer``'s job of ``kind``.

    ``listener`` (a bound method of the panel) receives the job's events, ending with
    :class:`JobReturned` or :class:`JobFailed`, then :class:`JobFinished`.
    """
    job = Job(viewer, kind, what)
    job.subscribe(listener)

    def run() -> Any:
        try:
            return work(job)
        finally:
            job.done.set()

    _JOBS[job._key()] = job
    try:
        job.worker = start_worker(
            run,
            on_result=lambda value: job._deliver(JobReturned(value)),
            on_error=lambda text: job._deliver(JobFailed(text)),
            on_finished=job._finished,
            what=what,
        )
    except BaseException:
        job._finished()
        raise
    return job


def stop_when_closed(widget: Any, kind: str) -> None:
    """Stop ``viewer``'s job of ``kind`` when ``widget``'s panel is closed.

    napari's close button takes the panel out of its dock (its parent becomes None);
    hiding the panel leaves the job running.
    """
    watcher = _ClosedWatcher(widget.native, lambda: _stop(widget.viewer, kind))
    widget.native.installEventFilter(watcher)


def stop_with_window(widget: Any) -> None:
    """Stop and wait for ``widget.viewer``'s jobs when the window holding the panel closes.

    Called as a job starts (the panel is docked by then); once per window. The window is
    found through Qt (the panel's top-level widget), not napari's private attributes.
    """
    window = widget.native.window()
    if window is widget.native or window.property(_HOOKED):
        return
    window.setProperty(_HOOKED, True)
    window.installEventFilter(_WindowWatcher(window, widget.viewer))


_HOOKED = "napari_tagan_stops_jobs"


class _WindowWatcher(QObject):
    def __init__(self, window: Any, viewer: Any) -> None:
        super().__init__(window)
        self._viewer = weakref.ref(viewer)

    def eventFilter(self, obj: Any, event: Any) -> bool:
        if event.type() == QEvent.Type.Close:
            viewer = self._viewer()
            for key, job in list(_JOBS.items()):
                if viewer is not None and key[0] == id(viewer) and job.running:
                    job.stop_and_wait()
        return False


def _stop(viewer: Any, kind: str) -> None:
    job = running_job(viewer, kind)
    if job is not None:
        job.stop()


class _ClosedWatcher(QObject):
    def __init__(self, target: Any, on_closed: Callable[[], None]) -> None:
        super().__init__(target)  # lives as long as the panel's widget
        self._on_closed = on_closed

    def eventFilter(self, obj: Any, event: Any) -> bool:
        if event.type() == QEvent.Type.ParentChange and obj.parent() is None:
            self._on_closed()
        return False


# --- napari's activity dock ------------------------------------------------------------------


def _activity_progress(what: str, cancel: Callable[[], None]) -> Any:
    try:
        from napari.utils import cancelable_progress

        return cancelable_progress(total=PROGRESS_STEPS, desc=what, cancel_callback=cancel)
    except Exception:  # the activity dock is a convenience: never worth failing the job
        log.debug("no activity-dock progress", exc_info=True)
        return None
