"""``napari-tagan`` command line: one subcommand per module, all calling the core.

Each subcommand module defines ``add_parser(subparsers)`` (which sets ``func`` on its
parser) and a ``run(args) -> int``. User errors (:class:`TaganError`, bad files) print one
line on stderr and exit with status 2; no traceback. Refused config values are worded as
the flags that set them (:func:`config_error_line`).

Building the parser imports neither torch nor the engine (a test checks it), so ``--help``
and argument errors are immediate: subcommand modules import what they need in ``run``.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from napari_tagan import __version__

from . import convert, info


def _subcommand_modules() -> list:
    # Imported here, not at module level: each may pull heavier dependencies.
    from . import demo, export, guide, models, predict, simulate, train

    return [convert, info, predict, guide, simulate, train, demo, models, export]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (used by ``main`` and by the docs/tests)."""
    parser = argparse.ArgumentParser(
        prog="napari-tagan",
        description="TA-GAN confocal → STED enhancement: predict, train, convert models.",
    )
    parser.add_argument("--version", action="version", version=f"napari-tagan {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _subcommand_modules():
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``napari-tagan`` script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # tifffile logs its parsing doubts about odd files; what matters reaches the user as
    # our one-line error, so its warnings would only add lines
    logging.getLogger("tifffile").setLevel(logging.CRITICAL)
    with warnings.catch_warnings():
        # our warnings are for the user: shown (once each), one line, no source line
        warnings.filterwarnings("default", module=r"napari_tagan\b")
        warnings.showwarning = functools.partial(_show_warning, args.command, warnings.showwarning)
        return _run(args)


def _show_warning(
    command: str, original: Any, message: Any, category: type, filename: str, *rest: Any
) -> None:
    if "napari_tagan" not in str(filename):  # libraries' warnings as Python shows them
        original(message, category, filename, *rest)
        return
    from tqdm import tqdm  # beside a progress bar, not through it

    tqdm.write(f"napari-tagan {command}: warning: {message}", file=sys.stderr)


def config_error_line(exc: Exception) -> str:
    """One line for a refused config (``ConfigError`` or pydantic's ``ValidationError``).

    Each problem is named by the flag that sets it: ``--set FIELD=VALUE: why`` (``--preset
    NAME: why`` for the preset); a rule about the config as a whole is its reason alone.
    """
    from pydantic import ValidationError

    from napari_tagan.core.config import config_error

    if isinstance(exc, ValidationError):
        if exc.title != "ModelConfig":  # not something a flag sets: the problems as they are
            return f"invalid {exc.title}: {config_error(exc)}"
        exc = config_error(exc)
    parts = []
    for problem in getattr(exc, "problems", ()):
        if problem.field == "preset":
            parts.append(f"--preset {problem.value}: {problem.reason}")
        else:
            parts.append(f"--set {problem}" if problem.field else str(problem))
    return "; ".join(parts) or str(exc)


def _run(args: Any) -> int:
    from pydantic import ValidationError

    from napari_tagan.core.errors import AmbiguousPresetError, ConfigError, TaganError

    try:
        return int(args.func(args) or 0)
    except (ConfigError, ValidationError) as exc:
        print(f"napari-tagan {args.command}: error: {config_error_line(exc)}", file=sys.stderr)
        return 2
    except AmbiguousPresetError as exc:
        print(f"napari-tagan {args.command}: error: {exc} with --preset", file=sys.stderr)
        return 2
    except TaganError as exc:
        print(f"napari-tagan {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"napari-tagan {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # unreadable/unwritable paths, full disks
        print(f"napari-tagan {args.command}: error: {os_error_line(exc)}", file=sys.stderr)
        return 2
    except MemoryError:
        print(
            f"napari-tagan {args.command}: error: out of memory; use smaller inputs or "
            "a smaller --memory-budget",
            file=sys.stderr,
        )
        return 2


def os_error_line(exc: OSError) -> str:
    """One line for an operating-system error: what failed on which file, without errno.

    A full disk shows as ENOSPC, or as numpy's short write ("N requested and M written").
    """
    import errno
    import re

    target = exc.filename or "the output"
    short = re.search(r"(\d+) requested and (\d+) written", str(exc))
    if exc.errno in (errno.ENOSPC, errno.EDQUOT) or short:
        need = f": {int(short[1]) / 2**20:.1f} MB needed" if short else ""
        return f"no space left on device writing {target}{need}; free some space and run again"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    reason = exc.strerror or text
    return f"{reason}: {exc.filename}" if exc.filename else reason


__all__ = ["build_parser", "config_error_line", "main", "os_error_line"]
