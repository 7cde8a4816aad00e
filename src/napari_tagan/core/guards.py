"""Guards against bad input: finite data and weights, output paths, run-folder locks, disk space.

Each guard raises a :class:`~.errors.TaganError` subclass with one line saying what was
wrong and what to do, before any work is done or any file is written.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, ModelLoadError, NonFiniteError, TrainingDivergedError

LOCK_NAME = ".napari-tagan.lock"
_MB = 1024 * 1024


# ------------------------------------------------------------------------------ finite values


def check_finite(array: Any, what: str) -> None:
    """Raise :class:`NonFiniteError` if the float ``array`` holds NaN or infinite values."""
    a = np.asarray(array)
    if not np.issubdtype(a.dtype, np.floating):
        return
    finite = np.isfinite(a)
    if not finite.all():
        bad = int(a.size - np.count_nonzero(finite))
        raise NonFiniteError(
            f"{what} holds {bad} NaN or infinite value(s); replace them (e.g. with 0) first"
        )


def check_training_pair(name: str, *pairs: tuple[Any, Any]) -> None:
    """Refuse a training sample whose raw or normalized (raw, normalized) images are not finite.

    Raw NaN/inf pixels are named as such; finite raw values that normalize to NaN/inf are
    too large for the float32 network range (≥ 1e38).
    """
    for role, (raw, normed) in zip(("confocal", "STED"), pairs, strict=False):
        check_finite(raw, f"{name} ({role})")
        if not np.isfinite(np.asarray(normed)).all():
            peak = float(np.max(np.abs(np.asarray(raw, np.float64))))
            raise NonFiniteError(
                f"{name} ({role}) holds values up to {peak:.3g}, too large to normalize in "
                "float32; rescale the image (e.g. to 0..65535) first"
            )


def check_finite_range(lo: float, hi: float, what: str) -> None:
    """Refuse a (lo, hi) range that is not finite or not increasing (statistics, out_range)."""
    span = float(hi) - float(lo)
    if not (np.isfinite(lo) and np.isfinite(hi) and np.isfinite(span) and span > 0):
        raise NonFiniteError(
            f"{what} has range {lo!r}..{hi!r}; expected finite values with low < high"
        )


def check_losses(iteration: int, losses: Mapping[str, float]) -> None:
    """Raise :class:`TrainingDivergedError` naming the first NaN or infinite loss term."""
    for term, value in losses.items():
        if not np.isfinite(value):
            raise TrainingDivergedError(iteration, term, value)


def conform_weights(
    expected: Mapping[str, Any], state: Mapping[str, Any], origin: str
) -> dict[str, Any]:
    """``state`` with float tensors cast to the dtype of ``expected``'s; refuse the rest.

    Half- and double-precision weights are real (fp16 checkpoints) and cast; integer or
    boolean tensors where the network holds floats, and non-finite weights, are refused.
    """
    import torch

    out = dict(state)
    for key, value in state.items():
        target = expected.get(key)
        if not isinstance(value, torch.Tensor) or target is None:
            continue
        if not target.dtype.is_floating_point:
            continue
        if not value.dtype.is_floating_point:
            raise ModelLoadError(
                f"{origin}: weight {key} has dtype {str(value.dtype).removeprefix('torch.')}; "
                "expected floating-point weights"
            )
        if value.dtype != target.dtype:
            value = value.to(target.dtype)
        if not bool(torch.isfinite(value).all()):
            raise ModelLoadError(
                f"{origin}: weight {key} holds NaN or infinite values; the model is broken "
                "(use an earlier checkpoint)"
            )
        out[key] = value
    return out


def check_finite_weights(tensors: Mapping[str, Any], what: str) -> None:
    """Refuse to save weights holding NaN or infinite values."""
    import torch

    for key, value in tensors.items():
        if value.dtype.is_floating_point and not bool(torch.isfinite(value).all()):
            raise NonFiniteError(
                f"refusing to save {what}: weight {key} holds NaN or infinite values"
            )


# ------------------------------------------------------------------------------ output paths


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two paths name the same file or folder (following links)."""
    pa, pb = Path(a), Path(b)
    try:
        return pa.exists() and pb.exists() and os.path.samefile(pa, pb)
    except OSError:
        return pa.resolve() == pb.resolve()


def check_not_input(
    output: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str]], what: str = "output"
) -> None:
    """Refuse an ``output`` path that is one of ``inputs`` (a file or folder read)."""
    out = Path(output)
    for item in inputs:
        if same_file(out, item) or out.resolve() == Path(item).resolve():
            raise InputError(
                f"{what} {out} is also an input; choose another {what} so the input is kept"
            )


def check_overwrite(paths: Iterable[Path], overwrite: bool, flag: str = "--overwrite") -> None:
    """Refuse to replace existing files unless ``overwrite``; the message names them."""
    existing = [p for p in paths if p.exists()]
    if existing and not overwrite:
        shown = ", ".join(str(p) for p in existing[:3])
        more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
        raise InputError(
            f"{len(existing)} output file(s) already exist ({shown}{more}); "
            f"pass {flag} to replace them or choose another output"
        )


def check_disk_space(folder: str | os.PathLike[str], nbytes: int, what: str) -> None:
    """Refuse to start writing ``nbytes`` under ``folder`` when the device lacks the room."""
    p = Path(folder)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        free = shutil.disk_usage(p).free
    except OSError:
        return
    if nbytes > free:
        raise InputError(
            f"not enough space on the device for {what}: {nbytes / _MB:.0f} MB needed, "
            f"{free / _MB:.0f} MB free in {p}"
        )


def no_space_message(exc: OSError, path: str | os.PathLike[str] | None = None) -> str:
    """One line for a full disk: what was being written and how much room it wanted."""
    target = path or getattr(exc, "filename", None) or "the output"
    return f"no space left on device writing {target}; free some space and run again"


# ------------------------------------------------------------------------------ run locks


def _alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would terminate it there: assume it runs
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _holder(lock: Path) -> tuple[int, str] | None:
    try:
        pid_text, _, host = lock.read_text().partition("@")
        return int(pid_text), host.strip()
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def run_folder_lock(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold ``folder/.napari-tagan.lock`` while a run writes there.

    A second run on the same folder is refused, naming the process that holds it; a lock
    left by a process that is gone (killed) is taken over.
    """
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    lock = root / LOCK_NAME
    me = f"{os.getpid()}@{socket.gethostname()}"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(lock)
            if holder is not None and (holder[1] != socket.gethostname() or _alive(holder[0])):
                raise InputError(
                    f"another run (process {holder[0]} on {holder[1]}) is writing to {root}; "
                    f"wait for it or choose another output (delete {lock} if it is gone)"
                ) from None
            lock.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(me)
        break
    else:
        raise InputError(f"cannot take the lock {lock}; delete it if no run uses {root}")
    try:
        yield lock
    finally:
        if _holder(lock) == (os.getpid(), socket.gethostname()):
            lock.unlink(missing_ok=True)


__all__ = [
    "LOCK_NAME",
    "check_disk_space",
    "check_finite",
    "check_finite_range",
    "check_finite_weights",
    "check_losses",
    "check_not_input",
    "check_overwrite",
    "check_training_pair",
    "conform_weights",
    "no_space_message",
    "run_folder_lock",
    "same_file",
]
