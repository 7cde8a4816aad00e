"""Checking an input image against a model, and reading it window by window, normalized."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError, NonFiniteError
from ..normalization import (
    NormStats,
    RegionStats,
    compute_region_stats,
    normalize,
    normalize_rows,
    original_live_region,
)
from ..tiling import read_window

if TYPE_CHECKING:
    from ..model import TAGANModel

#: Stack layouts accepted through ``axes`` (the leading Z or T axis is run plane by plane).
AXES: tuple[str, ...] = ("YX", "CYX", "ZYX", "TYX", "ZCYX", "TCYX")

#: Reads the (C, y1-y0, x1-x0) network input of a window ``(y0, y1, x0, x1)``.
WindowReader = Callable[[tuple[int, int, int, int]], np.ndarray]


def as_channels_first(model: TAGANModel, image: Any) -> tuple[Any, bool]:
    """Check an image against the model's channel count; return (C, Y, X) and was-2D.

    Works on numpy and dask arrays without loading them.
    """
    cfg = model.config
    shape = tuple(image.shape)
    dtype = np.dtype(image.dtype)
    if not (np.issubdtype(dtype, np.number) or dtype == np.bool_) or np.issubdtype(
        dtype, np.complexfloating
    ):
        raise InputError(f"image dtype {dtype} is not a real number type")
    if len(shape) == 2:
        if cfg.image_channels != 1:
            raise InputError(
                f"the {cfg.preset!r} model expects {cfg.image_channels} channels "
                f"({', '.join(cfg.channel_names)}) as a (C, Y, X) image; got a 2D image"
            )
        return image[None], True
    if len(shape) == 3 and shape[0] == cfg.image_channels:
        return image, False
    if len(shape) == 3:
        raise InputError(
            f"image of shape {shape}: the {cfg.preset!r} model expects "
            f"{cfg.image_channels} channel(s) ({', '.join(cfg.channel_names)}) first, "
            f"i.e. ({cfg.image_channels}, Y, X){' or (Y, X)' if cfg.image_channels == 1 else ''}"
        )
    raise InputError(
        f"image of shape {shape}: expected a 2D image (Y, X) or channels-first (C, Y, X); "
        "for stacks, predict plane by plane"
    )


def sted_channels_first(model: TAGANModel, image: Any) -> Any:
    """A STED-like image (what S takes) as (C, Y, X), checked against the model's channels."""
    n = model.config.output_nc
    chw = image[None] if len(image.shape) == 2 and n == 1 else image
    if len(chw.shape) != 3 or chw.shape[0] != n:
        raise InputError(
            f"image of shape {tuple(image.shape)}: the segmenter expects {n} STED channel(s) "
            f"first, i.e. ({n}, Y, X){' or (Y, X)' if n == 1 else ''}"
        )
    return chw


def check_finite(array: np.ndarray, what: str = "image") -> None:
    """Raise :class:`InputError` if ``array`` holds NaN or infinite values."""
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise InputError(f"{what} holds {bad} NaN or infinite pixel(s); fix or mask them first")


def sted_region_channels(
    model: TAGANModel,
    shape: tuple[int, int],
    sted: np.ndarray | None,
    sted_mask: np.ndarray | None,
    confocal_stats: NormStats | None = None,
) -> np.ndarray:
    """The live preset's extra G inputs: STED where acquired (−1 elsewhere) and the map.

    Without ``sted`` both channels are −1 everywhere (no STED acquired). The STED is
    min-max scaled on its own and given where ``sted_mask`` says (everywhere without
    one); with ``minmax8`` normalization (original live checkpoints) it is scaled by the
    confocal's statistics and, without a mask, given in the brightest 100-px block, as
    the original's test loader does.
    """
    spec = model.config.normalization
    regions = np.full((2, *shape), spec.out_range[0], dtype=np.float32)
    if sted is None:
        return regions
    sted = np.asarray(sted, np.float32)
    if sted.shape != shape:
        raise InputError(f"STED image of shape {sted.shape} does not match confocal {shape}")
    original = spec.kind == "minmax8"
    sted_norm, _ = normalize(sted[None], spec, confocal_stats if original else None)
    if sted_mask is not None:
        mask = np.asarray(sted_mask) != 0
    else:
        mask = original_live_region(sted_norm[0]) if original else np.ones(shape, bool)
    regions[0][mask] = sted_norm[0][mask]
    regions[1][mask] = 1.0
    return regions


def as_array(image: Any) -> Any:
    """Numpy and dask arrays as they are; other lazy arrays (zarr, h5py) through dask."""
    if type(image).__module__.split(".")[0] == "torch":
        raise InputError(
            "predict takes a numpy or dask array, not a torch.Tensor; pass tensor.cpu().numpy()"
        )
    if isinstance(image, np.ndarray) or hasattr(image, "dask"):
        return image
    if all(hasattr(image, a) for a in ("shape", "dtype", "__getitem__")):
        import dask.array as da

        return da.from_array(image, chunks=image.chunks if hasattr(image, "chunks") else "auto")
    return np.asarray(image)


def split_axes(model: TAGANModel, image: Any, axes: str | None) -> tuple[Any, str]:
    """Normalise ``axes``; returns the image and its layout (one of :data:`AXES`)."""
    if axes is None:
        _, was_2d = as_channels_first(model, image)
        return image, "YX" if was_2d else "CYX"
    layout = axes.upper()
    if layout not in AXES:
        raise InputError(f"unknown axes {axes!r}; expected one of {', '.join(AXES)}")
    if len(image.shape) != len(layout):
        raise InputError(f"image of shape {tuple(image.shape)} does not match axes {layout!r}")
    channels = model.config.image_channels
    if "C" not in layout and channels != 1:
        as_channels_first(model, image[0] if len(layout) == 3 else image)  # raises
    if "C" in layout and image.shape[layout.index("C")] != channels:
        plane = image[0] if layout[0] in "ZT" else image
        as_channels_first(model, plane)  # raises with the usual message
    return image, layout


def check_stats(stats: NormStats) -> None:
    """Refuse statistics whose range float32 cannot hold (values ≥ 1e38 overflow)."""
    for lo, hi in zip(stats.lo, stats.hi, strict=True):
        with np.errstate(over="ignore", invalid="ignore"):
            span = np.float32(hi) - np.float32(lo)
        if not (np.isfinite(span) and span > 0):
            raise NonFiniteError(
                f"image intensities span {lo:.3g}..{hi:.3g}, too wide to normalize in float32; "
                "rescale the image (e.g. to 0..65535) first"
            )


def check_normalized(x: np.ndarray, raw: np.ndarray) -> None:
    """Refuse a window whose finite pixels normalized to NaN/inf (too large for float32)."""
    if not np.isfinite(x).all():
        peak = float(np.nanmax(np.abs(np.asarray(raw, np.float64))))
        raise NonFiniteError(
            f"image holds values up to {peak:.3g}, too large to normalize in float32; "
            "rescale the image (e.g. to 0..65535) first"
        )


def plane_reader(
    model: TAGANModel,
    chw: Any,
    padded: tuple[int, int],
    *,
    sted: np.ndarray | None = None,
    sted_mask: np.ndarray | None = None,
    regions: bool = True,
) -> tuple[WindowReader, RegionStats]:
    """Whole-plane statistics of (C, Y, X) ``chw`` and a reader of its normalized windows.

    The statistics are the whole plane's, or with ``normalization.regions="halves"`` each
    half's, computed once, so every window is normalized as in the whole image.

    Windows are in the ``padded`` frame (bottom/right padding as the whole-image forward
    pads: reflected, or replicated for images smaller than the padding). ``regions``:
    append the live preset's STED-region channels when the model takes them.
    """
    cfg = model.config
    h, w = (int(s) for s in chw.shape[-2:])
    lazy = not isinstance(chw, np.ndarray)
    if not lazy:
        check_finite(chw)
    stats = compute_region_stats(chw, cfg.normalization)
    if lazy and not stats.finite:
        raise InputError("image holds NaN or infinite pixel(s); fix or mask them first")
    for band in stats.stats:
        check_stats(band)
    ph, pw = padded[0] - h, padded[1] - w
    pad_mode = "reflect" if ph < h and pw < w else "replicate"
    extra = None
    if regions and cfg.sted_regions_input:
        extra = sted_region_channels(model, (h, w), sted, sted_mask, stats.stats[0])

    def read(window: tuple[int, int, int, int]) -> np.ndarray:
        raw = read_window(chw, window, (h, w), pad_mode)
        if lazy:
            check_finite(raw)
        with np.errstate(over="ignore", invalid="ignore"):  # checked just below
            x = normalize_rows(raw, cfg.normalization, stats, y0=window[0])
        check_normalized(x, raw)
        if extra is not None:
            x = np.concatenate([x, read_window(extra, window, (h, w), pad_mode)], 0)
        return x

    return read, stats
