"""Save image and Labels layers as TIFF, with pixel size and where the layer came from.

The TIFF gets resolution tags (pixels per centimetre, read by Fiji and most viewers) from
the layer's scale in micrometres, and a JSON description (``napari_tagan`` entry) holding
the layer's type, name, scale, translate, class names and metadata (for results: model,
preset, mode, generations, device), so a saved synthetic STED says how it was made and
:mod:`napari_tagan._reader` reopens it as the same layer. Files are written atomically.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from .core.tiff import TIFF_SUFFIXES, write_tagged_tiff


def write_image(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write one image layer (npe2 single-layer writer)."""
    return [str(write_layer(path, data, meta, "image"))]


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write one Labels layer (npe2 single-layer writer)."""
    return [str(write_layer(path, data, meta, "labels"))]


def write_layer(path: str | Path, data: Any, meta: dict[str, Any], layer_type: str) -> Path:
    """Write ``data`` with the layer state ``meta`` (as napari passes it) to a TIFF."""
    target = Path(path)
    if target.suffix.lower() not in TIFF_SUFFIXES:
        target = target.with_name(target.name + ".tif")
    if meta.get("multiscale") and isinstance(data, list | tuple):
        data = data[0]
    array = np.asarray(data)
    array = _labels_dtype(array) if layer_type == "labels" else _image_dtype(array)
    rgb = bool(meta.get("rgb")) and layer_type == "image"
    ndim = array.ndim - (1 if rgb else 0)
    scale = _floats(meta.get("scale"), ndim, 1.0)
    scale = [v * f for v, f in zip(scale, _to_um(meta.get("units"), ndim), strict=True)]
    translate = _floats(meta.get("translate"), ndim, 0.0)

    own: dict[str, Any] = {
        "layer_type": layer_type,
        "name": str(meta.get("name", target.stem)),
        "scale": scale,
        "translate": translate,
        "unit": "µm",
        "metadata": json_safe(meta.get("metadata") or {}),
    }
    if rgb:
        own["rgb"] = True
    if layer_type == "labels":
        classes = _class_names(meta)
        if classes:
            own["classes"] = classes
    else:
        colormap = meta.get("colormap")
        name = colormap.get("name") if isinstance(colormap, dict) else colormap
        if isinstance(name, str) and not name.startswith("["):
            own["colormap"] = name
        limits = meta.get("contrast_limits")
        if limits is not None and len(limits) == 2:
            own["contrast_limits"] = [float(limits[0]), float(limits[1])]
        if isinstance(meta.get("blending"), str):
            own["blending"] = meta["blending"]

    sy, sx = scale[-2], scale[-1]
    return write_tagged_tiff(
        target,
        array,
        axes=_axes(array.ndim, rgb),
        own=own,
        pixel_yx=(sy, sx) if (sy, sx) != (1.0, 1.0) else None,
        photometric="rgb" if rgb else "minisblack",
    )


def _axes(ndim: int, rgb: bool) -> str:
    spatial = "YXS" if rgb else "YX"
    return "Q" * (ndim - len(spatial)) + spatial


def _floats(value: Any, ndim: int, default: float) -> list[float]:
    values = [float(v) for v in value] if value is not None else []
    values = values[-ndim:] if len(values) >= ndim else [default] * (ndim - len(values)) + values
    return [v if math.isfinite(v) else default for v in values]


def _to_um(units: Any, ndim: int) -> list[float]:
    """Factors from the layer's units to µm (pixels and unknown units are taken as µm)."""
    from .core.tiff import UNIT_TO_UM

    if units is None or isinstance(units, str):
        units = [units] * ndim
    names = [str(u).lower() if u is not None else "" for u in list(units)[-ndim:]]
    names = [""] * (ndim - len(names)) + names
    return [UNIT_TO_UM.get(n, 1.0) for n in names]


def _image_dtype(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if array.dtype == np.float16:
        return array.astype(np.float32)
    return array


def _labels_dtype(array: np.ndarray) -> np.ndarray:
    """Smallest unsigned integer type that holds the labels (viewers prefer them)."""
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"labels must be integers, got {array.dtype}")
    if array.size == 0:
        return array
    lo, hi = int(array.min()), int(array.max())
    if lo < 0:
        return array.astype(np.int32) if hi < 2**31 and lo >= -(2**31) else array
    for dtype in (np.uint8, np.uint16, np.uint32):
        if hi <= np.iinfo(dtype).max:
            return array.astype(dtype, copy=False)
    return array


def _class_names(meta: dict[str, Any]) -> list[str]:
    tagan = (meta.get("metadata") or {}).get("tagan") or {}
    classes = tagan.get("classes")
    if isinstance(classes, list | tuple) and classes:
        return [str(c) for c in classes]
    return []


def json_safe(value: Any, *, max_list: int = 256) -> Any:
    """A JSON-able copy of ``value``: numpy scalars/small arrays converted, others as text."""
    if isinstance(value, dict):
        return {str(k): json_safe(v, max_list=max_list) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v, max_list=max_list) for v in value[:max_list]]
    if isinstance(value, np.ndarray):
        if value.size <= max_list:
            return json_safe(value.tolist(), max_list=max_list)
        return f"<array shape={value.shape} dtype={value.dtype}>"
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return str(value)
    return value


def save_layers(layers: list[Any], folder: str | Path) -> list[Path]:
    """Save napari layers as ``<folder>/<layer name>.tif`` (never over an existing file)."""
    import re

    folder = Path(folder)
    written = []
    for layer in layers:
        data, meta, layer_type = layer.as_layer_data_tuple()
        stem = re.sub(r"[^\w.-]+", "_", layer.name).strip("_") or "layer"
        target, n = folder / f"{stem}.tif", 1
        while target.exists():
            n += 1
            target = folder / f"{stem}-{n}.tif"
        written.append(write_layer(target, data, meta, layer_type))
    return written
