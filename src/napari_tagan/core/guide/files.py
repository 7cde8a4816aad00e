"""Regions to and from CSV and JSON, in pixel and physical (µm) coordinates.

Both formats carry the pixel size and origin, so a microscope control script can use
the µm columns alone, and a file written by such a script (µm only) reads back. Writes
are atomic; a bad file raises :class:`~napari_tagan.core.errors.InputError` with one line.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..io import atomic_write_bytes
from .regions import Region, RegionSet, pixel_box_from_physical

FORMAT = "napari-tagan regions"
VERSION = 1
PIXEL_KEYS = ("y0_px", "x0_px", "y1_px", "x1_px")
UM_KEYS = ("y0_um", "x0_um", "y1_um", "x1_um")
SCORE_KEYS = ("score", "variability", "disagreement")
GEOMETRY_KEYS = (
    "pixel_size_y_um",
    "pixel_size_x_um",
    "origin_y_um",
    "origin_x_um",
    "image_height_px",
    "image_width_px",
)


def _short(value: float) -> float:
    """Nine significant digits: exact for µm positions written from pixels, no float noise."""
    return float(f"{value:.9g}")


def _row(regions: RegionSet, rank: int, r: Region) -> dict[str, Any]:
    row: dict[str, Any] = {"rank": rank}
    row.update(zip(PIXEL_KEYS, (r.y0, r.x0, r.y1, r.x1), strict=True))
    row.update(zip(UM_KEYS, (_short(v) for v in regions.physical(r)), strict=True))
    row.update({k: _short(getattr(r, k)) for k in SCORE_KEYS})
    for name, present, conf in zip(regions.class_names, r.present, r.confidence, strict=False):
        row[f"present_{name}"] = int(present)
        row[f"confidence_{name}"] = round(conf, 4)
    return row


def regions_to_json(regions: RegionSet) -> str:
    """The JSON text of ``regions`` (see :func:`write_regions`)."""
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "pixel_size_um": list(regions.pixel_size_um),
        "origin_um": list(regions.origin_um),
        "image_shape": list(regions.image_shape),
        "class_names": list(regions.class_names),
        "metadata": regions.metadata,
        "regions": [_row(regions, i, r) for i, r in enumerate(regions.regions, 1)],
    }
    return json.dumps(doc, indent=1, default=str) + "\n"


def regions_to_csv(regions: RegionSet) -> str:
    """The CSV text of ``regions``: one row per region, the geometry on every row."""
    geometry = dict(
        zip(
            GEOMETRY_KEYS,
            (*regions.pixel_size_um, *regions.origin_um, *regions.image_shape),
            strict=True,
        )
    )
    rows = [{**_row(regions, i, r), **geometry} for i, r in enumerate(regions.regions, 1)]
    fields = list(rows[0]) if rows else ["rank", *PIXEL_KEYS, *UM_KEYS, *GEOMETRY_KEYS]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_regions(regions: RegionSet, path: str | os.PathLike[str]) -> Path:
    """Write ``regions`` atomically as ``.csv`` or ``.json`` (chosen by the suffix)."""
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise InputError(f"{target}: regions are written as .csv or .json, not {suffix!r}")
    text = regions_to_csv(regions) if suffix == ".csv" else regions_to_json(regions)
    return atomic_write_bytes(target, text.encode("utf-8"))


def read_regions(path: str | os.PathLike[str]) -> RegionSet:
    """Read regions written by :func:`write_regions` (or a script using its columns)."""
    source = Path(path)
    suffix = source.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise InputError(f"{source}: expected a .csv or .json regions file")
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{source}: cannot read it ({exc})") from None
    try:
        return _parse_csv(text) if suffix == ".csv" else _parse_json(text)
    except InputError as exc:
        raise InputError(f"{source}: {exc}") from None


def _number(row: dict[str, Any], key: str, where: str) -> float:
    value = row.get(key)
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InputError(f"{where}: {key} is {value!r}, not a number") from None
    if not math.isfinite(number):
        raise InputError(f"{where}: {key} is {value!r}, not a finite number")
    return number


def _region(
    row: dict[str, Any], where: str, geometry: RegionSet, class_names: tuple[str, ...]
) -> Region:
    if all(row.get(k) not in (None, "") for k in PIXEL_KEYS):
        box = [_number(row, k, where) for k in PIXEL_KEYS]
        if any(b != int(b) for b in box):
            raise InputError(f"{where}: pixel coordinates must be whole numbers, got {box}")
        y0, x0, y1, x1 = (int(b) for b in box)
    elif all(row.get(k) not in (None, "") for k in UM_KEYS):
        box_um = [_number(row, k, where) for k in UM_KEYS]
        y0, x0, y1, x1 = pixel_box_from_physical(
            box_um, geometry.pixel_size_um, geometry.origin_um
        )
    else:
        raise InputError(f"{where}: needs {', '.join(PIXEL_KEYS)} or {', '.join(UM_KEYS)}")
    scores = {
        k: _number(row, k, where) if row.get(k) not in (None, "") else 0.0 for k in SCORE_KEYS
    }
    calls = [(f"present_{c}", f"confidence_{c}") for c in class_names]
    present = confidence = ()
    if calls and all(row.get(p) not in (None, "") for p, _ in calls):
        present = tuple(bool(_number(row, p, where)) for p, _ in calls)
        confidence = tuple(_number(row, c, where) for _, c in calls)
    return Region(y0, x0, y1, x1, present=present, confidence=confidence, **scores)


def _build(
    rows: list[dict[str, Any]], geometry: dict[str, Any], where: str = "region"
) -> RegionSet:
    base = RegionSet((), **geometry)  # validates pixel size, origin and shape
    regions = [
        _region(row, f"{where} {i}", base, base.class_names) for i, row in enumerate(rows, 1)
    ]
    return base.with_regions(regions)


def _parse_json(text: str) -> RegionSet:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise InputError(f'not a regions file (expected "format": "{FORMAT}")')
    if doc.get("version") != VERSION:
        raise InputError(f"regions file version {doc.get('version')!r}; this reads {VERSION}")
    missing = [k for k in ("pixel_size_um", "image_shape", "regions") if k not in doc]
    if missing:
        raise InputError(f"missing {', '.join(missing)}")
    if not isinstance(doc["regions"], list) or not all(
        isinstance(r, dict) for r in doc["regions"]
    ):
        raise InputError('"regions" must be a list of objects')
    try:
        geometry = {
            "image_shape": tuple(int(s) for s in doc["image_shape"]),
            "pixel_size_um": tuple(doc["pixel_size_um"]),
            "origin_um": tuple(doc.get("origin_um", (0.0, 0.0))),
            "class_names": tuple(str(c) for c in doc.get("class_names", ())),
            "metadata": dict(doc.get("metadata") or {}),
        }
    except (TypeError, ValueError):
        raise InputError(
            "image_shape, pixel_size_um and origin_um must be lists of numbers"
        ) from None
    if len(geometry["image_shape"]) != 2:
        raise InputError(f"image_shape must be (height, width), got {doc['image_shape']}")
    return _build(doc["regions"], geometry)


def _parse_csv(text: str) -> RegionSet:
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows:
        raise InputError("no regions (an empty file, or a header alone)")
    missing = [k for k in GEOMETRY_KEYS if k not in rows[0]]
    if missing:
        raise InputError(f"missing column(s) {', '.join(missing)}")
    first = rows[0]
    where = "row 1"
    g = {k: _number(first, k, where) for k in GEOMETRY_KEYS}
    for i, row in enumerate(rows[1:], 2):
        if any(_number(row, k, f"row {i}") != g[k] for k in GEOMETRY_KEYS):
            raise InputError(f"row {i}: pixel size, origin or image size differ from row 1")
    names = tuple(k[len("present_") :] for k in first if k and k.startswith("present_"))
    if any(h != int(h) for h in (g["image_height_px"], g["image_width_px"])):
        raise InputError("image_height_px and image_width_px must be whole numbers")
    geometry = {
        "image_shape": (int(g["image_height_px"]), int(g["image_width_px"])),
        "pixel_size_um": (g["pixel_size_y_um"], g["pixel_size_x_um"]),
        "origin_um": (g["origin_y_um"], g["origin_x_um"]),
        "class_names": names,
    }
    return _build(rows, geometry, "row")
