"""Drag-and-drop TIFF reader: plain images with their pixel size, TA-GAN layouts as layers.

What a dropped TIFF becomes (the rules a user can rely on):

* **A file written by this plugin** (its description holds a ``napari_tagan`` entry) opens
  as the layer it was saved from: same type (image or labels), name, scale, translate and
  metadata.
* **A TA-GAN training/test file** (channels first, see
  :data:`napari_tagan.core.layouts.LAYOUTS`) opens as separate named layers: ``<stem>
  confocal`` and ``<stem> STED`` as images, each mask as a Labels layer ``<stem> <class>``
  in the annotation convention (1 = background, 2 = the class: a mask file is annotated
  everywhere). A layout is recognised by its plane count *and* by its mask planes: binary
  (0 and one "on" value: 1, 255, 32768 or 65535), or for synprot graded (mostly 0, a few
  grey values; any non-zero is the class), while the image planes are not binary. The
  two-plane live layout (confocal, STED) has no mask to check: a two-plane TIFF without a
  stated Z/T/C axis opens as confocal and STED. Every layer's ``metadata["tagan"]`` names
  the recognised ``layout``, its ``mask_encoding`` and the ``source`` file.
* **Anything else** opens as napari would: one image layer (a stack gets a slider), split
  into one layer per channel when the file states a channel axis (ImageJ/OME) or is a
  16-bit "RGB" page, and as an RGB layer for 8-bit RGB(A).

Pixel sizes come from, in order: this plugin's own metadata, OME ``PhysicalSize*``,
ImageJ ``unit`` + resolution tags (+ ``spacing`` for Z), plain TIFF resolution tags in
inch or centimetre. They become the layers' ``scale`` in micrometres; without any, the
scale is 1 (pixels).

Non-TIFF, missing or unreadable files make :func:`napari_get_reader` return None quickly
(without importing torch), so napari can offer the file to another reader.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .core.layouts import FileLayout, recognise
from .core.tiff import TIFF_SUFFIXES, check_memory, tiff_pixel_size

LayerData = tuple[Any, dict[str, Any], str]
ReaderFunction = Callable[[str | Sequence[str]], list[LayerData]]

TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
#: Files larger than this open as lazy dask arrays (read plane by plane on demand).
LAZY_BYTES = 1 << 30


def napari_get_reader(path: str | Sequence[str]) -> ReaderFunction | None:
    """Return :func:`read_layers` if every path is a readable TIFF, else None."""
    paths = [path] if isinstance(path, str | os.PathLike) else list(path)
    if not paths or not all(_looks_like_tiff(p) and _readable_tiff(p) for p in paths):
        return None
    return read_layers


def _readable_tiff(path: str | os.PathLike[str]) -> bool:
    """Whether the TIFF's structure parses and its image data lies inside the file.

    A truncated or malformed file is declined here (so another reader may try) rather than
    accepted and failing inside :func:`read_layers`.
    """
    import tifffile

    p = Path(path)
    try:
        size = p.stat().st_size
        with tifffile.TiffFile(p) as tif:
            if not tif.series or not tif.series[0].shape:
                return False
            for page in tif.pages:
                ends = np.add(page.dataoffsets, page.databytecounts, dtype=np.int64)
                if ends.size and int(ends.max()) > size:
                    return False
            first = tif.pages.first
            check_memory(int(np.prod(first.chunks)) * first.dtype.itemsize, p.name)
    except Exception:  # tifffile raises many types on malformed files: "not ours to read"
        return False
    return True


def _looks_like_tiff(path: str | os.PathLike[str]) -> bool:
    p = Path(path)
    if p.suffix.lower() not in TIFF_SUFFIXES:
        return False
    try:
        with open(p, "rb") as fh:
            return fh.read(4) in TIFF_MAGIC
    except OSError:
        return False


def read_layers(path: str | Sequence[str]) -> list[LayerData]:
    """Read one or several TIFF files into napari layer data (see the module docstring)."""
    paths = [path] if isinstance(path, str | os.PathLike) else list(path)
    layers: list[LayerData] = []
    for p in paths:
        layers.extend(read_one(p))
    return layers


def read_one(path: str | os.PathLike[str]) -> list[LayerData]:
    """Layers of one TIFF file."""
    import tifffile

    p = Path(path)
    with tifffile.TiffFile(p) as tif:
        series = tif.series[0]
        axes = series.axes
        page = tif.pages[0]
        own = _own_metadata(tif)
        pixel = tiff_pixel_size(tif, axes)
        lazy = series.size * series.dtype.itemsize > LAZY_BYTES
        if lazy:
            import dask.array as da
            import zarr

            data = da.from_zarr(zarr.open(series.aszarr(), mode="r"))
        else:
            data = series.asarray()
        photometric = int(getattr(page, "photometric", 1))

    if own is not None:
        return [_own_layer(p, data, own)]
    layout = None if lazy else recognise(data, axes)
    if layout is not None:
        return layout_layers(p.stem, data, layout, pixel, source=str(p))
    return plain_layers(p.stem, data, axes, pixel, photometric)


# --- TA-GAN layouts -----------------------------------------------------------------------


def layout_layers(
    stem: str,
    data: np.ndarray,
    layout: FileLayout,
    pixel: tuple[float, ...] | None,
    *,
    source: str = "",
) -> list[LayerData]:
    """One layer per plane of a TA-GAN file: images, then masks as annotation Labels."""
    from .core.annotations import annotation_layer_kwargs, mask_to_annotation

    scale = tuple(pixel[-2:]) if pixel else (1.0, 1.0)
    meta = {"layout": layout.name, "mask_encoding": layout.mask_encoding, "source": source}
    layers: list[LayerData] = []
    for i, plane in enumerate(layout.planes):
        if plane.role != "mask":
            kwargs = {
                "name": f"{stem} {plane.name}",
                "scale": scale,
                **_units(pixel),
                "metadata": {"tagan": {**meta, "channel": plane.name}},
                "colormap": "gray",
                "blending": "additive" if plane.role == "sted" else "translucent",
            }
            layers.append((data[i], kwargs, "image"))
    for i in layout.indices("mask"):
        cls = layout.planes[i].name
        kwargs = annotation_layer_kwargs(cls)
        kwargs.update(name=f"{stem} {cls}", scale=scale, **_units(pixel))
        kwargs["metadata"]["tagan"].update(meta)
        layers.append((mask_to_annotation(data[i]), kwargs, "labels"))
    return layers


# --- plain files ---------------------------------------------------------------------------


def plain_layers(
    stem: str,
    data: Any,
    axes: str,
    pixel: tuple[float, ...] | None,
    photometric: int,
) -> list[LayerData]:
    """What napari's own reader would make, with the pixel size as ``scale``."""
    meta: dict[str, Any] = {"name": stem, **_units(pixel)}
    # 8-bit RGB(A) with samples last: a colour picture.
    if axes.endswith("S") and data.shape[-1] in (3, 4) and data.dtype == np.uint8:
        meta["rgb"] = True
        spatial = data.ndim - 1
        meta["scale"] = _scale_for(spatial, pixel)
        return [(data, meta, "image")]
    channel_axis = None
    if "C" in axes and data.shape[axes.index("C")] > 1:
        channel_axis = axes.index("C")
    elif axes.startswith("S") and photometric == 2 and data.ndim == 3:
        channel_axis = 0  # 16-bit planar "RGB": scientific channels written as samples
    elif axes.endswith("S") and data.shape[-1] > 1:
        data = np.moveaxis(data, -1, 0)
        channel_axis = 0
    if channel_axis is not None:
        n = data.shape[channel_axis]
        meta["channel_axis"] = channel_axis
        meta["name"] = [f"{stem} ch{i}" for i in range(n)]
        meta["scale"] = _scale_for(data.ndim - 1, pixel)
    else:
        meta["scale"] = _scale_for(data.ndim, pixel)
    return [(data, meta, "image")]


def _units(pixel: tuple[float, ...] | None) -> dict[str, str]:
    """``units`` keyword for a layer whose scale is in µm (nothing when it is in pixels)."""
    return {"units": "µm"} if pixel else {}


def _scale_for(ndim: int, pixel: tuple[float, ...] | None) -> tuple[float, ...]:
    """Scale of an ``ndim`` layer: the pixel size on the last axes, 1 elsewhere."""
    if not pixel:
        return (1.0,) * ndim
    pixel = tuple(pixel[-ndim:])
    return (1.0,) * (ndim - len(pixel)) + pixel


# --- files written by this plugin ----------------------------------------------------------


def _own_metadata(tif: Any) -> dict[str, Any] | None:
    try:
        shaped = tif.shaped_metadata
    except Exception:  # a malformed description is just "not ours"
        return None
    if shaped and isinstance(shaped[0], dict):
        own = shaped[0].get("napari_tagan")
        if isinstance(own, dict) and own.get("layer_type") in ("image", "labels"):
            return own
    return None


def _own_layer(path: Path, data: Any, own: dict[str, Any]) -> LayerData:
    name = own.get("name")
    kwargs: dict[str, Any] = {"name": name if isinstance(name, str) and name else path.stem}
    ndim = data.ndim - (1 if own.get("rgb") else 0)
    for key in ("scale", "translate"):
        value = _finite_numbers(own.get(key), ndim, positive=key == "scale")
        if value is not None:
            kwargs[key] = value
    if own.get("unit") == "µm" and "scale" in kwargs:
        kwargs["units"] = "µm"
    if isinstance(own.get("metadata"), dict):
        kwargs["metadata"] = own["metadata"]
    layer_type = own["layer_type"]
    if layer_type == "labels" and not np.issubdtype(data.dtype, np.integer):
        layer_type = "image"  # napari's Labels take integers only
    own = _checked_style(own)
    if layer_type == "labels":
        classes = own.get("classes")
        if isinstance(classes, list) and classes:
            from .core.annotations import annotation_layer_kwargs

            style = annotation_layer_kwargs(*[str(c) for c in classes])
            kwargs["colormap"] = style["colormap"]
            kwargs["features"] = style["features"]
            kwargs.setdefault("metadata", {}).setdefault("tagan", {}).update(
                style["metadata"]["tagan"]
            )
    else:
        if own.get("rgb"):
            kwargs["rgb"] = True
        for key in ("colormap", "contrast_limits", "blending"):
            if own.get(key) is not None:
                kwargs[key] = own[key]
    return data, kwargs, layer_type


# --- checks of what a file says about its layer ---------------------------------------------

BLENDINGS = ("opaque", "translucent", "translucent_no_depth", "additive", "minimum")


def _finite_numbers(value: Any, n: int, *, positive: bool = False) -> tuple[float, ...] | None:
    """``value`` as ``n`` finite floats (positive if asked), or None when it is not that."""
    if not isinstance(value, list) or len(value) != n:
        return None
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        return None
    out = tuple(float(v) for v in value)
    if not all(np.isfinite(out)) or (positive and min(out, default=1.0) <= 0):
        return None
    return out


def _known_colormap(name: Any) -> bool:
    if not isinstance(name, str):
        return False
    try:
        from napari.utils.colormaps import AVAILABLE_COLORMAPS
    except ImportError:
        return name == "gray"
    return name in AVAILABLE_COLORMAPS


def _checked_style(own: dict[str, Any]) -> dict[str, Any]:
    """``own`` without the style entries napari would refuse (a crafted file's values).

    Styling is a convenience: an invalid colormap, contrast range, blending, class list or
    metadata is dropped and the image still opens.
    """
    out = dict(own)
    limits = _finite_numbers(own.get("contrast_limits"), 2)
    checks = {
        "colormap": _known_colormap(own.get("colormap")),
        "contrast_limits": limits is not None and limits[0] < limits[1],
        "blending": own.get("blending") in BLENDINGS,
        "classes": isinstance(own.get("classes"), list)
        and all(isinstance(c, str) for c in own["classes"]),
        "metadata": isinstance(own.get("metadata"), dict),
        "rgb": isinstance(own.get("rgb"), bool),
    }
    for key, ok in checks.items():
        if key in out and not ok:
            del out[key]
    return out
