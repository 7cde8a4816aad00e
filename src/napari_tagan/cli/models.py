"""``napari-tagan models``: list, fetch and hash registered models."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:  # noqa: D103
    p = sub.add_parser(
        "models",
        help="list and fetch shared models (the model registry)",
        description=(
            "Named models from the registry shipped with napari-tagan, extended by the "
            "files or URLs in NAPARI_TAGAN_REGISTRY (separated by ';'). Fetched models "
            "are verified by SHA-256 and kept in NAPARI_TAGAN_CACHE (default: the "
            "platform cache); any command's --model accepts a registry name."
        ),
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="the registered models and whether they are cached")
    fetch = actions.add_parser("fetch", help="download a model into the cache (once)")
    fetch.add_argument("name", help="registry name (see `models list`)")
    fetch.add_argument("--no-progress", action="store_true", help="no progress bar")
    digest = actions.add_parser("hash", help="SHA-256 and size of a file, for a registry entry")
    digest.add_argument("file")
    p.set_defaults(func=run)


def _size(n: int | None) -> str:
    return "?" if n is None else f"{n / 1e6:.1f} MB"


def _list() -> int:
    from napari_tagan.core.registry import cache_dir, is_cached, load_registry

    entries = load_registry()
    rows = [("NAME", "KIND", "PRESET", "SIZE", "STATUS", "DESCRIPTION")]
    for e in entries.values():
        status = "cached" if is_cached(e) else ("download" if e.available else "no address")
        rows.append((e.name, e.kind, e.preset or "-", _size(e.size), status, e.description))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row[:5], widths, strict=True)), row[5])
    print(f"cache: {cache_dir()}")
    return 0


def run(args: argparse.Namespace) -> int:  # noqa: D103
    if args.action == "list":
        return _list()
    if args.action == "hash":
        from pathlib import Path

        from napari_tagan.core.registry import file_sha256

        print(f"sha256: {file_sha256(args.file)}\nsize: {Path(args.file).stat().st_size}")
        return 0
    from napari_tagan.core.registry import fetch

    path = fetch(args.name, progress=not args.no_progress)
    print(path)
    return 0
