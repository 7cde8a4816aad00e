"""Whole-image prediction: confocal in, synthetic STED and segmentation out.

:func:`predict` is the public entry point. It is built from three steps that the tiled
engine reuses piece by piece: :func:`prepare_input` (validate, normalize with whole-image
statistics), :func:`forward` (the networks on a normalized batch, in a chosen
:data:`Mode`), and :func:`finish` (back to intensity units and probabilities).
"""

from __future__ import annotations

import contextlib
import copy
import gc
import math
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from .backends import (
    BACKENDS,
    check_precision,
    has_cached_export,
    make_runner,
    onnx_available,
)
from .device import resolve_device
from .errors import InputError, TaganError
from .model import TAGANModel
from .networks import ARCH_STRIDE
from .normalization import (
    NormStats,
    compute_stats,
    denormalize,
    normalize,
    target_to_probability,
)
from .tiling import (
    LOCAL_ARCHS,
    Tile,
    blend_weights,
    choose_tile,
    default_halo,
    iter_batches,
    read_window,
    round_up,
    tile_plan,
)

#: ``eval``: running BN statistics, no dropout (deterministic).
#: ``mc``: eval, but dropout active: N stochastic generations → mean and std.
#: ``original``: BN batch statistics and dropout, as the original test script without
#: ``--eval`` (whole image only; results depend on the image extent).
Mode = Literal["eval", "mc", "original"]
MODES: tuple[str, ...] = ("eval", "mc", "original")


@dataclass
class PredictionResult:
    """Output of :func:`predict`.

    ``synthetic_sted`` has the input image's shape ((Y, X) or (C, Y, X)), float32, in the
    input's intensity units. ``segmentation`` is (n_classes, Y, X) float32 probabilities in
    [0, 1] (None without a segmenter). ``variability`` is the per-pixel standard deviation
    of the synthetic STED over generations (None for a single generation).
    """

    synthetic_sted: np.ndarray
    segmentation: np.ndarray | None
    variability: np.ndarray | None
    class_names: tuple[str, ...]
    metadata: dict[str, Any] = field(default_factory=dict)


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
) -> np.ndarray:
    """The live preset's extra G inputs: STED where acquired (−1 elsewhere) and the map.

    Without ``sted`` both channels are −1 everywhere (no STED acquired).
    """
    a = model.config.normalization.out_range[0]
    regions = np.full((2, *shape), a, dtype=np.float32)
    if sted is None:
        return regions
    sted = np.asarray(sted, np.float32)
    if sted.shape != shape:
        raise InputError(f"STED image of shape {sted.shape} does not match confocal {shape}")
    mask = np.ones(shape, bool) if sted_mask is None else np.asarray(sted_mask) != 0
    sted_norm, _ = normalize(sted[None], model.config.normalization)
    regions[0][mask] = sted_norm[0][mask]
    regions[1][mask] = 1.0
    return regions


def prepare_input(
    model: TAGANModel,
    image: Any,
    *,
    sted: np.ndarray | None = None,
    sted_mask: np.ndarray | None = None,
    stats: NormStats | None = None,
) -> tuple[np.ndarray, NormStats, bool]:
    """Validate and normalize a whole image; returns (G input (input_nc, Y, X), stats, was2d)."""
    chw, was_2d = as_channels_first(model, image)
    array = np.asarray(chw)
    check_finite(array)
    x, stats = normalize(array, model.config.normalization, stats)
    if model.config.sted_regions_input:
        x = np.concatenate([x, sted_region_channels(model, x.shape[1:], sted, sted_mask)], 0)
    return x, stats, was_2d


def padded_size(size: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is ≥ ``size``."""
    return -(-size // multiple) * multiple


def required_multiple(model: TAGANModel) -> int:
    """Side lengths the networks accept: multiples of their total stride."""
    archs = [model.config.generator]
    if model.config.segmenter is not None:
        archs.append(model.config.segmenter)
    return max(ARCH_STRIDE[a] for a in archs)


#: Smallest padded side a ResNet accepts: its 4× down-sampled map must be ≥ 2 pixels for
#: the residual blocks' reflection padding.
MIN_RESNET_SIDE = 8


def pad_to_multiple(
    x: torch.Tensor, multiple: int, minimum: int = MIN_RESNET_SIDE
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad the bottom/right of (N, C, Y, X) to multiples (≥ ``minimum``); returns it and (Y, X).

    Reflection padding where the image is large enough, edge replication otherwise.
    """
    h, w = x.shape[-2:]
    ph = max(padded_size(h, multiple), minimum) - h
    pw = max(padded_size(w, multiple), minimum) - w
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = nn.functional.pad(x, (0, pw, 0, ph), mode=mode)
    return x, (h, w)


@contextlib.contextmanager
def network_mode(model: TAGANModel, mode: Mode) -> Iterator[TAGANModel]:
    """Put G and S in the state ``mode`` needs, without changing the caller's model.

    ``original`` runs a copy in training mode, so BatchNorm's batch statistics do not leak
    into the caller's running statistics.
    """
    if mode not in MODES:
        raise InputError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    was_training = {name: net.training for name, net in model.networks().items()}
    if mode == "original":
        working = copy.deepcopy(model)
        for net in working.networks().values():
            net.train()
    else:
        working = model
        model.eval()
        if mode == "mc":
            for net in (model.generator, model.segmenter):
                for m in net.modules() if net is not None else ():
                    if isinstance(m, nn.Dropout):
                        m.train()
    try:
        yield working
    finally:
        for name, net in model.networks().items():
            net.train(was_training[name])


def forward(
    model: TAGANModel, x: torch.Tensor, *, segment: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """G (and S on G's output) on a normalized (N, C, Y, X) batch, in network units.

    The batch is padded to the networks' stride and cropped back. Call it inside
    :func:`network_mode` and ``torch.inference_mode``.
    """
    padded, (h, w) = pad_to_multiple(x, required_multiple(model))
    sted = model.generator(padded)
    seg = model.segmenter(sted) if segment and model.segmenter is not None else None
    return sted[..., :h, :w], (seg[..., :h, :w] if seg is not None else None)


def finish(
    model: TAGANModel,
    sted_net: np.ndarray,
    seg_net: np.ndarray | None,
    stats: NormStats,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Network units → intensity units (STED) and probabilities (segmentation)."""
    sted = denormalize(sted_net, model.config.normalization, stats)
    seg = target_to_probability(seg_net, model.config.mask_range) if seg_net is not None else None
    return sted, seg


@contextlib.contextmanager
def seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Seed torch's RNG for the body only (the caller's RNG state is restored)."""
    if seed is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


ProgressCallback = Callable[[int, int], None]

#: Stack layouts accepted through ``axes`` (the leading Z or T axis is run plane by plane).
AXES: tuple[str, ...] = ("YX", "CYX", "ZYX", "TYX", "ZCYX", "TCYX")

#: After a pass whose windows need more activation memory than this (bytes, estimated),
#: the memory is given back to the system (:meth:`_Engine.release_memory`).
RELEASE_ARENA_BYTES = 256 << 20

#: Results larger than this (bytes, all outputs together) go to disk-backed memmaps.
MEMMAP_THRESHOLD = 1 << 30


def _physical_memory() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 << 30


def _available_memory() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return _physical_memory() // 2


def default_memory_budget(device: torch.device) -> int:
    """Bytes of network activations one tile (or batch of tiles) may use on ``device``.

    CPU/MPS: a quarter of physical memory, at most 1 GiB (which keeps an 8192² image
    under 3 GB of peak RSS with its outputs); CUDA: 60 % of the free device memory.
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.6)
    return int(min(1 << 30, _physical_memory() / 4))


def whole_image_budget(device: torch.device) -> int:
    """Bytes of activations under which an image is run whole (one exact tile, no halo).

    A whole-image forward computes no halo twice, so it is the fastest way when memory
    allows: on the CPU/MPS up to 40 % of the currently available memory (at least the
    tile budget); on CUDA the tile budget. Larger images are tiled with
    :func:`default_memory_budget`, which bounds the peak memory whatever their size.
    """
    tiles = default_memory_budget(device)
    if device.type == "cuda":
        return tiles
    return max(tiles, int(0.4 * _available_memory()))


def activation_bytes_per_pixel(width: int, backend: str) -> float:
    """Peak activation memory of one ResNet/U-Net forward per input pixel (bytes).

    Measured (peak RSS growth of a forward, ``width`` 64): eager ResNet-9 ≈ 680 B/px at
    768² (≈ 2.7 full-resolution feature maps of ``width`` float32 channels); ONNX Runtime,
    G then S sharing one arena, ≈ 1.3 kB/px at 1024² (its blocked layouts and the
    arena's rounding). A margin is added on top of both.
    """
    maps = 6.0 if backend == "onnx" else 3.5
    return 4.0 * maps * width + 64.0


@dataclass
class _Network:
    role: str
    arch: str
    module: nn.Module
    width: int
    in_channels: int

    @property
    def stride(self) -> int:
        return ARCH_STRIDE[self.arch]

    @property
    def exact(self) -> bool:
        return self.arch in LOCAL_ARCHS

    @property
    def min_window(self) -> int:
        return MIN_RESNET_SIDE if self.exact else self.stride


def _alloc(shape: tuple[int, ...], on_disk: bool, fill: float | None = None) -> np.ndarray:
    """float32 array in memory, or in an anonymous temporary file (freed on last use)."""
    if on_disk:
        with tempfile.TemporaryFile(prefix="napari-tagan-") as fh:
            array = np.memmap(fh, dtype=np.float32, mode="w+", shape=shape)
        if fill is not None:
            array[...] = fill
        return array
    if fill is None:
        return np.empty(shape, np.float32)
    return np.full(shape, fill, np.float32)


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", ())
    return isinstance(exc, oom) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


def _free_device_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":  # pragma: no cover - Apple only
        torch.mps.empty_cache()


class _Engine:
    """State of one :func:`predict` call: networks, tiles, buffers and callbacks."""

    def __init__(
        self,
        model: TAGANModel,
        working: TAGANModel,
        *,
        device: torch.device,
        mode: str,
        segment: bool,
        tile: int | None,
        halo: int | None,
        batch_tiles: int | None,
        precision: str,
        budget: int,
        whole_budget: int,
        backend: str,
        progress: ProgressCallback | None,
        should_stop: Callable[[], bool] | None,
    ) -> None:
        cfg = model.config
        self.model, self.device, self.mode = model, device, mode
        self.precision, self.budget, self.backend = precision, budget, backend
        self.whole_budget = max(budget, whole_budget)
        self.progress, self.should_stop = progress, should_stop
        self.networks = [
            _Network("generator", cfg.generator, working.generator, cfg.ngf, cfg.input_nc)
        ]
        if segment and working.segmenter is not None and cfg.segmenter is not None:
            self.networks.append(
                _Network("segmenter", cfg.segmenter, working.segmenter, cfg.nsf, cfg.output_nc)
            )
        self.multiple = max(n.stride for n in self.networks)
        self.tile_request, self.halo_request = tile, halo
        self.batch_request = batch_tiles
        self.runners: dict[str, Any] = {}
        self.done = 0
        self.total = 0
        #: Every network in one tile: progress counts generations, not tiles.
        self.single = False
        self.tiles_used: dict[str, int] = {}
        self.halos_used: dict[str, int] = {}

    # -- planning ------------------------------------------------------------------------
    def halo(self, net: _Network) -> int:
        if self.halo_request is not None:
            return round_up(max(0, self.halo_request), net.stride)
        return default_halo(net.arch, net.role)

    def bytes_per_pixel(self, net: _Network) -> float:
        return activation_bytes_per_pixel(net.width, self.backend_for(net))

    def tile_side(self, net: _Network, padded: tuple[int, int]) -> int:
        if self.mode == "original":
            return max(padded)
        if net.role in self.tiles_used:  # set by an out-of-memory retry
            return self.tiles_used[net.role]
        if self.tile_request is not None:
            return max(round_up(self.tile_request, net.stride), net.min_window)
        if padded[0] * padded[1] * self.bytes_per_pixel(net) <= self.whole_budget:
            return max(padded)
        side = choose_tile(
            padded,
            halo=self.halo(net),
            multiple=net.stride,
            bytes_per_pixel=self.bytes_per_pixel(net),
            budget=self.budget,
        )
        return max(side, net.min_window)

    def plan(self, net: _Network, padded: tuple[int, int]) -> list[Tile]:
        side = self.tile_side(net, padded)
        halo = 0 if side >= max(padded) else self.halo(net)
        self.halos_used[net.role] = halo
        return tile_plan(padded, side, halo, net.stride, net.min_window)

    def batch_size(self, net: _Network, tiles: list[Tile]) -> int:
        if self.batch_request is not None:
            return max(1, int(self.batch_request))
        if self.device.type == "cpu" or len(tiles) < 2:
            return 1  # no gain from batching on CPU cores
        h, w = tiles[0].window_shape
        return int(max(1, min(16, self.budget // max(1.0, h * w * self.bytes_per_pixel(net)))))

    # -- running -------------------------------------------------------------------------
    def backend_for(self, net: _Network) -> str:
        if self.backend != "auto":
            return self.backend
        return "eager"

    def runner(self, net: _Network):
        if net.role not in self.runners:
            self.runners[net.role] = make_runner(
                net.module,
                backend=self.backend_for(net),
                device=self.device,
                precision=self.precision,
                in_channels=net.in_channels,
                stride=net.stride,
            )
        return self.runners[net.role]

    def release_memory(self, net: _Network, tiles: list[Tile]) -> None:
        """After a pass with large windows, give ONNX Runtime's arena back to the system.

        Its arena (one for all sessions, see backends) keeps what the largest window
        needed, which then sits beside the results; stacks of small planes keep theirs
        (regrowing costs page faults). Shrinking happens at the end of a run, so a
        minimal input is run.
        """
        h, w = tiles[0].window_shape
        if h * w * self.bytes_per_pixel(net) < RELEASE_ARENA_BYTES:
            return
        run = self.runners.get(net.role)
        if run is not None and self.backend_for(net) == "onnx":
            side = max(net.min_window, net.stride)
            run(np.zeros((1, net.in_channels, side, side), np.float32), release=True)

    def tick(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)

    def check_stop(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise InterruptedError("prediction cancelled")

    def run_pass(
        self,
        net: _Network,
        read: Callable[[tuple[int, int, int, int]], np.ndarray],
        padded: tuple[int, int],
        out: np.ndarray,
        limit: tuple[int, int],
        on_disk: bool,
        tiles: list[Tile],
    ) -> None:
        """Run ``net`` over ``tiles``; write (C, ≤limit) results into ``out``.

        ResNets: each tile writes its core. U-Nets: windows are blended by ramp weights.
        """
        run = self.runner(net)
        batch = self.batch_size(net, tiles)
        hl, wl = limit
        blend = not net.exact and len(tiles) > 1
        if blend:  # weights sum to one: accumulate straight into the (zeroed) output
            for r in range(0, hl, 1024):
                out[:, r : min(hl, r + 1024), :wl] = 0.0
        # Largest windows first: ONNX Runtime's arena then grows once, on the first run, and
        # smaller windows reuse it (growing order added a region per new largest shape:
        # 1.1 → 2.0 GB over the first five 916-px-class windows of an image).
        groups = sorted(iter_batches(tiles, batch), key=lambda g: -math.prod(g[0].window_shape))
        for group in groups:
            self.check_stop()
            x = np.stack([read(t.window) for t in group])
            y = run(x)
            for t, yi in zip(group, y, strict=True):
                y0, y1, x0, x1 = t.window
                if blend:
                    weight = blend_weights(t)
                    ye, xe = min(y1, hl), min(x1, wl)
                    if ye > y0 and xe > x0:
                        out[:, y0:ye, x0:xe] += (yi * weight)[:, : ye - y0, : xe - x0]
                else:
                    cy0, cy1, cx0, cx1 = t.core
                    cy1, cx1 = min(cy1, hl), min(cx1, wl)
                    if cy1 > cy0 and cx1 > cx0:
                        out[:, cy0:cy1, cx0:cx1] = yi[:, cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
                if not self.single:
                    self.tick()

    def run_network(self, net: _Network, *args: Any) -> None:
        """:meth:`run_pass`, retried with half-size tiles after an out-of-memory error."""
        padded = args[1]
        while True:
            tiles = self.plan(net, padded)
            self.tiles_used[net.role] = self.tile_side(net, padded)
            try:
                self.run_pass(net, *args, tiles)
                return
            except Exception as exc:
                if not _is_oom(exc) or self.mode == "original":
                    raise
                side = self.tiles_used[net.role]
                smaller = max(net.min_window, round_up(min(side, max(padded)) // 2, net.stride))
                _free_device_memory(self.device)
                if smaller >= min(side, max(padded)) or smaller < 2 * net.stride:
                    raise TaganError(
                        f"out of memory on {self.device} even with {side}-pixel tiles"
                    ) from exc
                warnings.warn(
                    f"out of memory on {self.device} with {side}-pixel tiles; "
                    f"retrying with {smaller}",
                    RuntimeWarning,
                    stacklevel=2,
                )
                self.tiles_used[net.role] = smaller
                self.total += len(tile_plan(padded, smaller, self.halo(net), net.stride))
            finally:
                self.release_memory(net, tiles)

    def count_tiles(self, padded: tuple[int, int]) -> int:
        return sum(len(self.plan(net, padded)) for net in self.networks)


def _as_array(image: Any) -> Any:
    """Numpy and dask arrays as they are; other lazy arrays (zarr, h5py) through dask."""
    if isinstance(image, np.ndarray) or hasattr(image, "dask"):
        return image
    if all(hasattr(image, a) for a in ("shape", "dtype", "__getitem__")):
        import dask.array as da

        return da.from_array(image, chunks=image.chunks if hasattr(image, "chunks") else "auto")
    return np.asarray(image)


def _split_axes(model: TAGANModel, image: Any, axes: str | None) -> tuple[Any, str]:
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


def predict(
    model: TAGANModel,
    image: Any,
    *,
    device: str | torch.device | None = None,
    mode: Mode = "eval",
    generations: int = 1,
    seed: int | None = 0,
    segment: bool = True,
    sted: np.ndarray | None = None,
    sted_mask: np.ndarray | None = None,
    progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    axes: str | None = None,
    tile: int | None = None,
    halo: int | None = None,
    batch_tiles: int | None = None,
    precision: str = "fp32",
    memory_budget: int | None = None,
    backend: str = "auto",
    on_disk: bool | None = None,
) -> PredictionResult:
    """Enhance an image of any size: 2D, channels-first, or a stack, tile by tile.

    Parameters
    ----------
    model
        A loaded or freshly built :class:`TAGANModel`.
    image
        (Y, X) or (C, Y, X) array of any real dtype, in microscope intensity units; numpy,
        dask or zarr (read window by window). Stacks need ``axes``.
    device
        ``auto``/``cpu``/``cuda``/``cuda:N``/``mps``, or None to stay where the model is.
    mode
        ``eval`` (deterministic, tile-exact), ``mc`` (dropout generations) or
        ``original`` (batch statistics and dropout, whole image only).
    generations
        Number of generations to average; > 1 also returns the variability (std) map.
    seed
        Seed of the stochastic modes; the same seed (and tiling) gives the same result.
    segment
        Run S on the synthetic STED (when the model has one).
    sted, sted_mask
        Live preset only: STED acquired in some regions and where (the decision map).
    progress, should_stop
        ``progress(done, total)`` after each tile of each network and generation (one
        unit per generation when the whole image is one tile); ``should_stop()`` → stop
        before the next tile (raises :class:`InterruptedError`).
    axes
        Layout of ``image``: ``YX``, ``CYX``, or a stack ``ZYX``/``TYX``/``ZCYX``/``TCYX``
        predicted plane by plane. None: ``YX`` or ``CYX`` from the shape.
    tile, halo
        Core tile side and context on each side (pixels, rounded up to the stride). None:
        the largest tile that fits ``memory_budget`` (the whole image when it fits) and the
        measured receptive field of each network (exact for ResNets).
    batch_tiles
        Tiles per forward; None: 1 on the CPU, as many as fit the budget on a GPU.
    precision
        ``fp32``, or mixed precision ``bf16``/``fp16`` (GPU; bf16 also on the CPU).
    memory_budget
        Bytes of activations a batch of tiles may use; None: :func:`default_memory_budget`.
    backend
        ``auto`` (ONNX Runtime on the CPU for eval-mode fp32 when installed and the work
        is large enough to repay the export, else eager), ``eager``, ``channels_last`` or
        ``onnx``.
    on_disk
        Keep full-size buffers and results in temporary memmaps; None: when they exceed
        :data:`MEMMAP_THRESHOLD`.

    Returns
    -------
    PredictionResult
        Arrays shaped like the input (segmentation: classes before Y, X; after the stack
        axis for stacks).
    """
    if generations < 1:
        raise InputError(f"generations must be ≥ 1, got {generations}")
    if mode == "eval" and generations > 1:
        raise InputError("eval mode is deterministic: use mode 'mc' for several generations")
    if mode not in MODES:
        raise InputError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if tile is not None and tile < 1:
        raise InputError(f"tile must be ≥ 1 pixel, got {tile}")
    if mode == "original" and tile is not None:
        raise InputError(
            "original mode uses batch statistics of the whole image: it cannot be tiled "
            "(leave tile unset, or use eval/mc mode)"
        )
    image, layout = _split_axes(model, _as_array(image), axes)
    stacked = layout[0] in "ZT"
    planes = int(image.shape[0]) if stacked else 1
    if stacked and (sted is not None or sted_mask is not None):
        raise InputError("STED regions (live preset) are supported for single images only")
    dev = model.device if device is None else resolve_device(device)
    check_precision(precision, dev)
    if backend == "onnx" and (mode != "eval" or precision != "fp32" or dev.type != "cpu"):
        raise InputError("the onnx backend runs eval mode in fp32 on the CPU only")
    model.to(dev)
    cfg = model.config
    plane_shape = tuple(int(s) for s in image.shape[-2:])
    h, w = plane_shape
    if h < 1 or w < 1:
        raise InputError(f"image of shape {tuple(image.shape)} has no pixels")
    n_out = cfg.output_nc
    n_cls = cfg.n_classes if segment and model.segmenter is not None else 0
    nbytes = planes * h * w * 4 * (n_out * (3 if generations > 1 else 1) + n_cls)
    disk = nbytes > MEMMAP_THRESHOLD if on_disk is None else bool(on_disk)
    budget = default_memory_budget(dev) if memory_budget is None else int(memory_budget)
    whole_budget = whole_image_budget(dev) if memory_budget is None else budget
    multiple = ARCH_STRIDE[cfg.generator]
    if n_cls and cfg.segmenter is not None:
        multiple = max(multiple, ARCH_STRIDE[cfg.segmenter])
    padded = _padded_shape(plane_shape, multiple)

    # With one generation G and S write straight into the results (G's in the padded
    # frame, which S reads), converted to intensity units and probabilities in place.
    sted_out = _alloc((planes, n_out, *padded), disk)
    var_out = _alloc((planes, n_out, h, w), disk) if generations > 1 else None
    seg_out = _alloc((planes, n_cls, h, w), disk) if n_cls else None
    stats_all: list[NormStats] = []
    chosen_backend = backend
    if backend == "auto":
        chosen_backend = _auto_backend(model, dev, mode, precision, planes * h * w)
    restore_format = chosen_backend == "channels_last"
    try:
        with (
            network_mode(model, mode) as working,
            torch.inference_mode(),
            seeded(seed, dev),
        ):
            engine = _Engine(
                model,
                working,
                device=dev,
                mode=mode,
                segment=segment,
                tile=tile,
                halo=halo,
                batch_tiles=batch_tiles,
                precision=precision,
                budget=budget,
                whole_budget=whole_budget,
                backend=chosen_backend,
                progress=progress,
                should_stop=should_stop,
            )
            assert engine.multiple == multiple
            n_tiles = engine.count_tiles(padded)
            engine.single = n_tiles == len(engine.networks)
            engine.total = planes * generations * (1 if engine.single else n_tiles)
            for p in range(planes):
                plane = image[p] if stacked else image
                chw = plane[None] if "C" not in layout else plane
                stats_all.append(
                    _predict_plane(
                        engine,
                        chw,
                        padded,
                        generations,
                        sted_out[p],
                        None if var_out is None else var_out[p],
                        None if seg_out is None else seg_out[p],
                        disk,
                        sted=sted,
                        sted_mask=sted_mask,
                    )
                )
    finally:
        if restore_format:
            for net in model.networks().values():
                net.to(memory_format=torch.contiguous_format)

    def shaped(a: np.ndarray | None, *, classes: bool = False) -> np.ndarray | None:
        if a is None:
            return None
        a = a[..., :h, :w]
        if classes:
            return a if stacked else a[0]
        if "C" not in layout:
            a = a[:, 0]
        return a if stacked else a[0]

    return PredictionResult(
        synthetic_sted=shaped(sted_out),
        segmentation=shaped(seg_out, classes=True),
        variability=shaped(var_out),
        class_names=cfg.class_names if seg_out is not None else (),
        metadata={
            **model.describe(),
            "mode": mode,
            "generations": generations,
            "seed": seed,
            "device": str(dev),
            "precision": precision,
            "backend": chosen_backend,
            "tile": dict(engine.tiles_used),
            "halo": dict(engine.halos_used),
            "axes": layout,
            "normalization_stats": (
                stats_all[0].to_dict() if len(stats_all) == 1 else [s.to_dict() for s in stats_all]
            ),
        },
    )


#: With ``backend="auto"``, images of at least this many pixels use ONNX Runtime on the
#: CPU even when no export is cached yet (the export costs about as much as this much
#: eager work at full width).
ONNX_AUTO_MIN_PIXELS = 1 << 20


def _auto_backend(
    model: TAGANModel, device: torch.device, mode: str, precision: str, pixels: int
) -> str:
    if device.type == "cpu" and precision == "bf16":
        # oneDNN's bf16 convolutions want NHWC: 5.0 s vs 9.2 s for G+S at 1024² (AMX CPU).
        return "channels_last"
    if device.type != "cpu" or mode != "eval" or precision != "fp32" or not onnx_available():
        return "eager"
    if pixels >= ONNX_AUTO_MIN_PIXELS:
        return "onnx"
    cached = has_cached_export(model.generator, model.config.input_nc)
    return "onnx" if cached else "eager"


def _padded_shape(shape: tuple[int, int], multiple: int) -> tuple[int, int]:
    h, w = shape
    return (
        max(padded_size(h, multiple), MIN_RESNET_SIDE),
        max(padded_size(w, multiple), MIN_RESNET_SIDE),
    )


def _predict_plane(
    engine: _Engine,
    chw: Any,
    padded: tuple[int, int],
    generations: int,
    sted_out: np.ndarray,
    var_out: np.ndarray | None,
    seg_out: np.ndarray | None,
    disk: bool,
    *,
    sted: np.ndarray | None,
    sted_mask: np.ndarray | None,
) -> NormStats:
    """One (C, Y, X) plane through G (and S), all generations; returns its statistics."""
    model = engine.model
    cfg = model.config
    h, w = (int(s) for s in chw.shape[-2:])
    lazy = not isinstance(chw, np.ndarray)
    if not lazy:
        check_finite(chw)
    stats = compute_stats(chw, cfg.normalization)
    if lazy and not all(np.isfinite(stats.lo + stats.hi)):
        raise InputError("image holds NaN or infinite pixel(s); fix or mask them first")
    ph, pw = padded[0] - h, padded[1] - w
    pad_mode = "reflect" if ph < h and pw < w else "replicate"
    regions = (
        sted_region_channels(model, (h, w), sted, sted_mask) if cfg.sted_regions_input else None
    )

    def read_input(window: tuple[int, int, int, int]) -> np.ndarray:
        raw = read_window(chw, window, (h, w), pad_mode)
        if lazy:
            check_finite(raw)
        x, _ = normalize(raw, cfg.normalization, stats)
        if regions is not None:
            x = np.concatenate([x, read_window(regions, window, (h, w), pad_mode)], 0)
        return x

    g_net = engine.networks[0]
    s_net = engine.networks[1] if len(engine.networks) > 1 else None
    in_place = generations == 1
    sted_net = sted_out if in_place else _alloc((cfg.output_nc, *padded), disk)
    seg_net = None
    if seg_out is not None:
        seg_net = seg_out if in_place else _alloc((seg_out.shape[0], h, w), disk)
    m2 = var_out
    for g in range(generations):
        engine.run_network(g_net, read_input, padded, sted_net, padded, disk)
        if s_net is not None and seg_net is not None:

            def read_sted(window: tuple[int, int, int, int]) -> np.ndarray:
                y0, y1, x0, x1 = window
                return np.asarray(sted_net[:, y0:y1, x0:x1])

            engine.run_network(s_net, read_sted, padded, seg_net, (h, w), disk)
        # Back to intensity units row block by row block; Welford's running mean and M2
        # over generations (identical generations give exactly zero std).
        for r in range(0, h, 1024):
            r1 = min(h, r + 1024)
            sted_g, seg_g = finish(
                model,
                sted_net[:, r:r1, :w],
                None if seg_net is None else seg_net[:, r:r1],
                stats,
            )
            if in_place:
                sted_out[:, r:r1, :w] = sted_g
                if seg_out is not None:
                    seg_out[:, r:r1] = seg_g
                continue
            if g == 0:
                sted_out[:, r:r1, :w] = sted_g
                if m2 is not None:
                    m2[:, r:r1] = 0.0
                if seg_out is not None:
                    seg_out[:, r:r1] = seg_g
                continue
            delta = sted_g - sted_out[:, r:r1, :w]
            sted_out[:, r:r1, :w] += delta / np.float32(g + 1)
            assert m2 is not None
            m2[:, r:r1] += delta * (sted_g - sted_out[:, r:r1, :w])
            if seg_out is not None:
                seg_out[:, r:r1] += (seg_g - seg_out[:, r:r1]) / np.float32(g + 1)
        if engine.single:
            engine.tick()
    if m2 is not None:
        for r in range(0, h, 1024):
            m2[:, r : r + 1024] = np.sqrt(m2[:, r : r + 1024] / np.float32(generations))
    return stats
