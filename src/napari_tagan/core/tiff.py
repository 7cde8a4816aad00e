"""Headless TIFF/zarr helpers for the command line: lazy reads, pixel sizes, atomic writes.

Pixel sizes are read from OME-XML, ImageJ metadata or the TIFF resolution tags (in that
order) and written back as resolution tags in pixels per centimetre, which Fiji, napari
and this package's reader understand. No Qt or napari import.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError

TIFF_SUFFIXES = (".tif", ".tiff")

#: Micrometres per unit, for the units found in OME, ImageJ and TIFF resolution tags.
UNIT_TO_UM: dict[str, float] = {
    "m": 1e6,
    "cm": 1e4,
    "mm": 1e3,
    "µm": 1.0,
    "μm": 1.0,
    "um": 1.0,
    "micron": 1.0,
    "microns": 1.0,
    "micrometer": 1.0,
    "micrometre": 1.0,
    "millimeter": 1e3,
    "centimeter": 1e4,
    "meter": 1e6,
    "nm": 1e-3,
    "nanometer": 1e-3,
    "nanometre": 1e-3,
    "pm": 1e-6,
    "å": 1e-4,
    "inch": 25400.0,
    "in": 25400.0,
}


@dataclass
class ImageSource:
    """An input image: a lazy array, its tifffile-style axes and pixel size (µm)."""

    path: Path
    name: str
    data: Any
    axes: str
    pixel_size: tuple[float, ...] | None


def image_name(path: Path) -> str:
    """``X`` of ``X.tif``, ``X.ome.tif`` and ``X.zarr``."""
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".zarr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _unit_um(unit: Any) -> float | None:
    if unit is None:
        return 1.0
    key = str(unit).strip().lower().replace("\\u00b5", "µ")
    return UNIT_TO_UM.get(key)


def tiff_pixel_size(tif: Any, axes: str = "YX") -> tuple[float, ...] | None:
    """Pixel size in µm of an open ``tifffile.TiffFile``, or None when it states none.

    (Z, Y, X) when ``axes`` has a Z and the file states the spacing, else (Y, X).
    """
    try:
        if tif.is_ome and tif.ome_metadata:
            size = _ome_pixel_size(tif.ome_metadata, axes)
            if size:
                return size
        page = tif.pages[0]
        res = _resolution_um(page)
        if tif.is_imagej:
            ij = tif.imagej_metadata or {}
            factor = _unit_um(ij.get("unit") or "pixel")
            if res is None or factor is None:
                return None
            yx = (res[0] * factor, res[1] * factor)
            spacing = ij.get("spacing")
            if "Z" in axes and spacing:
                return (float(spacing) * factor, *yx)
            return yx
        unit = page.tags.get("ResolutionUnit")
        unit_value = int(unit.value) if unit is not None else 2
        factor = {2: 25400.0, 3: 1e4, 4: 1e3, 5: 1.0}.get(unit_value)
        if res is None or factor is None:
            return None
        return (res[0] * factor, res[1] * factor)
    except Exception:  # metadata is a convenience: a broken tag must not block opening
        return None


def _resolution_um(page: Any) -> tuple[float, float] | None:
    """Pixel size in "resolution units" from X/YResolution (pixels per unit)."""
    xr, yr = page.tags.get("XResolution"), page.tags.get("YResolution")
    if xr is None or yr is None:
        return None
    try:
        x = xr.value[0] / xr.value[1]
        y = yr.value[0] / yr.value[1]
    except (TypeError, ZeroDivisionError, IndexError):
        return None
    if x <= 0 or y <= 0 or (x == 1 and y == 1):
        return None  # tifffile writes 1/1 when no resolution was given
    return (1.0 / y, 1.0 / x)


def _ome_pixel_size(xml: str, axes: str) -> tuple[float, ...] | None:
    root = ET.fromstring(xml)
    pixels = next((el for el in root.iter() if el.tag.endswith("}Pixels")), None)
    if pixels is None:
        return None

    def size(axis: str) -> float | None:
        value = pixels.get(f"PhysicalSize{axis}")
        if value is None:
            return None
        factor = _unit_um(pixels.get(f"PhysicalSize{axis}Unit", "µm"))
        return None if factor is None else float(value) * factor

    x, y = size("X"), size("Y")
    if x is None or y is None:
        return None
    z = size("Z")
    if "Z" in axes and z:
        return (z, y, x)
    return (y, x)


class GuardedArray:
    """A lazy array whose reads raise :class:`InputError` naming the file.

    Corrupt data (a truncated strip, a bad zlib tile) only shows when a window is read,
    deep inside a prediction; a window too large to decode is a property of the file, not
    an out-of-memory of the network, so it must not look like one (MemoryError). A chunk
    larger than the memory available is refused before any reading.
    """

    def __init__(self, array: Any, path: Path) -> None:
        self._array, self.path = array, path
        self.shape, self.dtype = tuple(array.shape), np.dtype(array.dtype)
        self.ndim = len(self.shape)
        self.chunks = getattr(array, "chunks", None) or self.shape
        chunk_bytes = int(np.prod(self.chunks, dtype=np.float64)) * self.dtype.itemsize
        check_memory(chunk_bytes, f"{path.name}: one stored chunk {tuple(self.chunks)}")

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> Any:
        try:
            out = self._array[key]
        except MemoryError:
            raise InputError(f"{self.path}: a window is too large to read into memory") from None
        except Exception as exc:  # codecs and tifffile raise many types on corrupt data
            raise InputError(
                f"{self.path}: corrupt image data ({type(exc).__name__}: {_first_line(exc)})"
            ) from None
        if isinstance(out, np.ndarray) or np.isscalar(out):
            return out
        return GuardedArray(out, self.path)  # a zarr sub-array stays lazy and guarded

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.asarray(self[...])
        return out if dtype is None else out.astype(dtype, copy=False)


def available_memory() -> int | None:
    """Bytes of memory available now (Linux's MemAvailable, else free pages), or None."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(nbytes: int, what: str) -> None:
    """Refuse a single read of ``nbytes`` that the available memory cannot hold."""
    available = available_memory()
    if available is None:
        return
    if nbytes > available:
        raise InputError(
            f"{what} needs {nbytes / 2**20:.0f} MB to read, but only "
            f"{available / 2**20:.0f} MB of memory is available"
        )


def open_tiff(path: str | os.PathLike[str]) -> ImageSource:
    """Open a TIFF lazily (memory-mapped when uncompressed, else through zarr)."""
    import tifffile

    p = Path(path)
    try:
        with tifffile.TiffFile(p) as tif:
            series = tif.series[0]
            axes = series.axes.upper()
            shape = tuple(series.shape)
            pixel = tiff_pixel_size(tif)
        try:
            data: Any = tifffile.memmap(p, mode="r")
            if tuple(data.shape) != shape:
                raise ValueError("series shape differs")
        except Exception:  # compressed or tiled: read through zarr
            import zarr

            data = GuardedArray(zarr.open(tifffile.imread(p, aszarr=True), mode="r"), p)
    except InputError:
        raise
    except MemoryError:
        raise InputError(f"{p}: its header describes more than memory can hold") from None
    except Exception as exc:  # tifffile raises many types on malformed headers
        raise InputError(f"{p}: cannot read it as a TIFF image ({_first_line(exc)})") from None
    # Drop singleton axes (ImageJ writes TZCYX-style shapes with ones).
    while len(shape) > 2 and shape[0] == 1:
        data, shape, axes = data[0], shape[1:], axes[1:]
    if axes.endswith("S") and len(shape) == 3 and shape[-1] in (3, 4):
        raise InputError(f"{p}: RGB images are not microscope channels; save one plane each")
    return ImageSource(p, image_name(p), data, axes, pixel)


#: Former name of :func:`open_tiff`, until ``tests/test_cli_predict.py`` moves to it.
read_tiff = open_tiff


def read_tiff_array(path: str | os.PathLike[str]) -> np.ndarray:
    """The whole first series of a TIFF as a numpy array (training files are small).

    Pages of different sizes (which tifffile splits into several series) are refused
    by name, rather than read as the first page alone.
    """
    import tifffile

    p = Path(path)
    try:
        with tifffile.TiffFile(p) as tif:
            shapes = {tuple(page.shape) for page in tif.pages}
            if len(shapes) > 1:
                shown = ", ".join(str(s) for s in sorted(shapes)[:4])
                raise InputError(
                    f"{p.name}: its pages differ in size ({shown}); every page (channel) "
                    "of a training file must have the same (Y, X) size"
                )
            return np.asarray(tif.series[0].asarray())
    except InputError:
        raise
    except MemoryError:
        raise InputError(f"{p.name}: too large to read into memory") from None
    except Exception as exc:  # tifffile raises many types for broken files
        raise InputError(f"cannot read {p.name} as a TIFF: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def read_zarr(path: str | os.PathLike[str]) -> ImageSource:
    """Open a zarr array (or the first level of an OME-Zarr group) lazily."""
    import zarr

    p = Path(path)
    try:
        node = zarr.open(str(p), mode="r")
    except Exception as exc:
        raise InputError(f"{p}: cannot read it as zarr ({exc})") from None
    pixel = None
    if not hasattr(node, "shape"):  # a group: OME-Zarr level 0 or its only array
        attrs = dict(node.attrs)
        multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
        key = None
        try:
            level = multiscales[0]["datasets"][0]
            key = level["path"]
            scale = [t for t in level["coordinateTransformations"] if t["type"] == "scale"]
            if scale:
                pixel = tuple(float(v) for v in scale[0]["scale"][-2:])
        except (TypeError, KeyError, IndexError):
            arrays = sorted(name for name, _ in node.arrays())
            key = arrays[0] if len(arrays) == 1 else None
        if key is None:
            raise InputError(f"{p}: a zarr group with several arrays; name one (GROUP/ARRAY)")
        node = node[key]
    data = node
    axes = {2: "YX", 3: "QYX", 4: "QCYX"}.get(len(data.shape), "Q" * len(data.shape))
    return ImageSource(p, image_name(p), data, axes, pixel)


def _is_zarr(path: Path) -> bool:
    return path.suffix.lower() == ".zarr" or (
        path.is_dir() and any((path / f).exists() for f in (".zarray", ".zgroup", "zarr.json"))
    )


def expand_inputs(paths: list[str]) -> list[Path]:
    """TIFF files, folders of TIFFs (sorted, not recursive) and zarr stores, in order."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if _is_zarr(p):
            if not p.exists():
                raise InputError(f"{p}: no such zarr store")
            out.append(p)
        elif p.is_dir():
            found = sorted(
                f for f in p.iterdir() if f.is_file() and f.suffix.lower() in TIFF_SUFFIXES
            )
            if not found:
                raise InputError(f"{p}: the folder holds no .tif/.tiff files")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise InputError(f"{p}: no such file or folder")
    return out


def read_image(path: Path) -> ImageSource:
    """Open a TIFF file or a zarr store lazily."""
    return read_zarr(path) if _is_zarr(path) else open_tiff(path)


def write_float32_tiff(
    path: str | os.PathLike[str],
    array: Any,
    *,
    axes: str,
    pixel_size: tuple[float, ...] | None = None,
    name: str | None = None,
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Write ``array`` as float32 atomically, with its pixel size and provenance.

    The pixel size goes into the resolution tags (pixels per cm); ``name`` and
    ``provenance`` into the JSON description that this package's napari reader shows.
    """
    target = Path(path)
    data = np.asarray(array, dtype=np.float32)
    own: dict[str, Any] = {"layer_type": "image", "name": name or target.stem}
    pixel_yx = None
    if pixel_size and len(pixel_size) >= 2 and min(pixel_size[-2:]) > 0:
        pixel_yx = (float(pixel_size[-2]), float(pixel_size[-1]))
        own["scale"] = [1.0] * (data.ndim - 2) + list(pixel_yx)
        own["unit"] = "µm"
    if provenance:
        own["metadata"] = {"tagan": json.loads(json.dumps(provenance, default=str))}
    return write_tagged_tiff(target, data, axes=axes, own=own, pixel_yx=pixel_yx)


def write_tagged_tiff(
    path: str | os.PathLike[str],
    array: np.ndarray,
    *,
    axes: str,
    own: dict[str, Any],
    pixel_yx: tuple[float, float] | None = None,
    photometric: str = "minisblack",
) -> Path:
    """Write ``array`` atomically with this package's description and the pixel size.

    ``own`` (layer type, name, scale, provenance…) goes into the JSON description that
    this package's reader turns back into a layer; ``pixel_yx`` (µm) into the resolution
    tags, in pixels per centimetre, the unit Fiji reads.
    """
    import tifffile

    from .io import atomic_output  # not at import: the reader imports this module

    kwargs: dict[str, Any] = {
        "metadata": {"axes": axes, "napari_tagan": own},
        "photometric": photometric,
    }
    if pixel_yx is not None and min(pixel_yx) > 0:
        sy, sx = pixel_yx
        kwargs["resolution"] = (1e4 / sx, 1e4 / sy)
        kwargs["resolutionunit"] = "CENTIMETER"
    target = Path(path)
    with atomic_output(target) as tmp:
        tifffile.imwrite(tmp, array, **kwargs)
    return target
