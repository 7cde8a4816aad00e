"""Tile plans, receptive fields and blending for prediction on images of any size.

A tile is a *core* (the pixels it is responsible for) inside a *window* (the core plus a
halo of context, clipped to the image). Coordinates are in the stride-padded frame of the
whole image: the whole-image forward reflect-pads the bottom/right to a multiple of the
networks' total stride, and tiles are cut from that same padded image.

Exactness (ResNet networks, eval mode): a window edge that lies on the padded image border
is treated by the network exactly as in the whole-image forward (the same reflection
padding); an interior edge affects outputs up to the receptive-field radius away from it.
With a halo of at least that radius, and window origins on the stride grid (so that
stride-2 layers sample the same pixels), every core pixel equals the whole-image result
up to floating-point summation order.

U-Nets see the whole image (their receptive field covers any input they are given), so no
halo makes them exact: neighbouring windows overlap and are blended across each core
boundary with linear ramps. The ramps are planned with the tiles (:attr:`Tile.ramps`) so
that the weights of all windows covering a pixel sum to one everywhere (a partition of
unity, whatever the tile, halo and image size), which removes seams. The remaining
deviation from a whole-image forward comes from the missing far context (bounded in
``tests/test_tiling.py``).

Which architectures are local (exactly tileable) and their strides come from
:data:`~napari_tagan.core.networks.ARCHS`; an unregistered name is an error, never a
silent fall-back to blending.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .errors import InputError
from .networks import arch_spec, build_generator, build_segmenter

#: Default halo of U-Nets (pixels, before rounding up to the stride): the overlap of
#: neighbouring windows is twice this.
UNET_HALO = 64


@dataclass(frozen=True)
class Tile:
    """One tile: ``window`` is what the network sees, ``core`` what the tile contributes.

    Both are ``(y0, y1, x0, x1)`` in the padded frame; ``core`` lies inside ``window``.
    """

    window: tuple[int, int, int, int]
    core: tuple[int, int, int, int]
    #: Half-widths (top, bottom, left, right) of the blending ramps centred on the core's
    #: edges shared with a neighbour (0 at image borders and for a single tile).
    ramps: tuple[int, int, int, int] = (0, 0, 0, 0)

    @property
    def window_shape(self) -> tuple[int, int]:
        """(height, width) of the window."""
        y0, y1, x0, x1 = self.window
        return y1 - y0, x1 - x0


def round_up(value: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is ≥ ``value``."""
    return -(-int(value) // multiple) * multiple


def _axis_plan(
    size: int, tile: int, halo: int, min_window: int
) -> list[tuple[int, int, int, int, int, int]]:
    """(window0, window1, core0, core1, ramp0, ramp1) along one axis of length ``size``.

    ``ramp0``/``ramp1`` are the blending half-widths at the core's start/end: at a
    boundary between two cores the ramp is ``min(halo, len_before // 2, len_after // 2)``,
    so that both windows cover it and the ramps of consecutive boundaries never overlap.
    """
    if tile >= size:
        return [(0, size, 0, size, 0, 0)]
    n = math.ceil(size / tile)
    cores = [(i * tile, min(size, (i + 1) * tile)) for i in range(n)]
    lengths = [c1 - c0 for c0, c1 in cores]
    ramp = [min(halo, lengths[i] // 2, lengths[i + 1] // 2) for i in range(n - 1)]
    spans = []
    for i, (c0, c1) in enumerate(cores):
        w0, w1 = max(0, c0 - halo), min(size, c1 + halo)
        # A short window gets more context: never smaller than the networks accept.
        w0 = max(0, min(w0, w1 - min_window))
        w1 = min(size, max(w1, w0 + min_window))
        spans.append((w0, w1, c0, c1, ramp[i - 1] if i else 0, ramp[i] if i < n - 1 else 0))
    return spans


def tile_plan(
    shape: tuple[int, int],
    tile: int | tuple[int, int],
    halo: int,
    multiple: int = 1,
    min_window: int = 1,
) -> list[Tile]:
    """Cut a padded image of ``shape`` into tiles of core side ``tile`` with ``halo``.

    Parameters
    ----------
    shape
        (height, width) of the padded image; both multiples of ``multiple``.
    tile
        Core side (or (height, width)), rounded up to ``multiple``. A side at least the
        image's gives one tile along that axis, with no halo.
    halo
        Context on each interior side, rounded up to ``multiple``.
    multiple
        The networks' total stride: every window origin and size is a multiple of it.
    min_window
        Smallest window side the networks accept (rounded up to ``multiple``).

    Returns
    -------
    list of Tile
        Row-major; the cores partition the image exactly.
    """
    h, w = (int(s) for s in shape)
    if h < 1 or w < 1 or h % multiple or w % multiple:
        raise InputError(f"shape {shape} must be positive multiples of {multiple}")
    ty, tx = (tile, tile) if isinstance(tile, int) else tile
    if ty < 1 or tx < 1 or halo < 0:
        raise InputError(f"tile must be ≥ 1 and halo ≥ 0, got tile={tile}, halo={halo}")
    ty, tx, halo = round_up(ty, multiple), round_up(tx, multiple), round_up(halo, multiple)
    least = round_up(min_window, multiple)
    return [
        Tile((wy0, wy1, wx0, wx1), (cy0, cy1, cx0, cx1), (ry0, ry1, rx0, rx1))
        for wy0, wy1, cy0, cy1, ry0, ry1 in _axis_plan(h, ty, halo, least)
        for wx0, wx1, cx0, cx1, rx0, rx1 in _axis_plan(w, tx, halo, least)
    ]


def _axis_weights(w0: int, w1: int, c0: int, c1: int, r0: int, r1: int) -> np.ndarray:
    # One at the core, zero outside [c0 - r0, c1 + r1), and linear ramps (i + ½) / 2r
    # across [c - r, c + r) at each shared edge; the neighbour's mirrored ramp on the same
    # pixels completes it to exactly one.
    pos = np.arange(w0, w1, dtype=np.float64) + 0.5
    weights = np.ones(w1 - w0)
    if r0:
        weights = np.minimum(weights, np.clip((pos - (c0 - r0)) / (2 * r0), 0.0, 1.0))
    else:
        weights[pos < c0] = 0.0
    if r1:
        weights = np.minimum(weights, np.clip(((c1 + r1) - pos) / (2 * r1), 0.0, 1.0))
    else:
        weights[pos > c1] = 0.0
    return weights


def blend_weights(tile: Tile) -> np.ndarray:
    """(window_h, window_w) float32 blending weights of a tile (U-Nets).

    Summed over all tiles of one :func:`tile_plan`, the weights are one at every pixel
    (up to rounding); they are zero in the part of the halo beyond the ramps.
    """
    (y0, y1, x0, x1), (cy0, cy1, cx0, cx1) = tile.window, tile.core
    ry0, ry1, rx0, rx1 = tile.ramps
    wy = _axis_weights(y0, y1, cy0, cy1, ry0, ry1)
    wx = _axis_weights(x0, x1, cx0, cx1, rx0, rx1)
    return (wy[:, None] * wx[None, :]).astype(np.float32)


def _tiny_network(arch: str, role: str) -> torch.nn.Module:
    # Depth, not width, sets the receptive field: a 2-filter replica of the same depth has
    # the same one and is cheap to differentiate.
    if role == "generator":
        net = build_generator(arch, 1, 1, ngf=4, norm="batch", dropout=False)  # type: ignore[arg-type]
    else:
        net = build_segmenter(arch, 1, 1, nsf=4, norm="batch")  # type: ignore[arg-type]
    return net.eval()


def measure_receptive_field(
    net: torch.nn.Module, stride: int, *, size: int = 224, trials: int = 2, seed: int = 0
) -> int:
    """Radius (pixels) of ``net``'s receptive field, measured by back-propagation.

    For output pixels at every phase of the stride grid near the centre of a ``size``²
    random input, the support of the input gradient (union over ``trials`` random inputs
    and weights, so that dead ReLUs do not hide a path) gives the farthest input pixel
    that can change the output. Weights are redrawn with PyTorch's default
    initialisation so that the final Tanh does not saturate to a zero gradient. A
    radius close to ``size // 2`` means the network sees the whole input (U-Nets).
    """
    gen = torch.Generator().manual_seed(seed)
    centre = size // 2
    radius = 0
    dtype = next(net.parameters()).dtype
    for trial in range(trials):
        torch.manual_seed(seed + trial)
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d):
                m.reset_parameters()
        x = torch.randn(stride * stride, 1, size, size, generator=gen, dtype=dtype)
        x.requires_grad_(True)
        y = net(x)
        picked = torch.stack(
            [
                y[i * stride + j, 0, centre + i, centre + j]
                for i in range(stride)
                for j in range(stride)
            ]
        )
        (grad,) = torch.autograd.grad(picked.sum(), x)
        for i in range(stride):
            for j in range(stride):
                g = grad[i * stride + j, 0]
                ys, xs = torch.nonzero(g, as_tuple=True)
                if len(ys):
                    dy = (ys - (centre + i)).abs().max().item()
                    dx = (xs - (centre + j)).abs().max().item()
                    radius = max(radius, int(dy), int(dx))
    return radius


@functools.cache
def receptive_field(arch: str, role: str = "generator") -> int | None:
    """Measured receptive-field radius of an architecture, or None if it sees everything.

    Cached per (arch, role); measured on a narrow replica of the same depth.
    """
    spec = arch_spec(arch, role)
    if not spec.local:
        return None
    stride = spec.stride
    torch_state = torch.random.get_rng_state()
    try:
        with torch.inference_mode(False), torch.enable_grad():
            r = measure_receptive_field(_tiny_network(arch, role), stride)
    finally:
        torch.random.set_rng_state(torch_state)
    return r


def default_halo(arch: str, role: str = "generator") -> int:
    """Halo for ``arch``: its receptive field rounded up to the stride.

    U-Nets get :data:`UNET_HALO` rounded up to their stride (a blending overlap).
    """
    stride = arch_spec(arch, role).stride
    r = receptive_field(arch, role)
    return round_up(UNET_HALO if r is None else r, stride)


def choose_tile(
    padded_shape: tuple[int, int],
    *,
    halo: int,
    multiple: int,
    bytes_per_pixel: float,
    budget: float,
    batch: int = 1,
) -> int:
    """Largest core side whose window (core + 2 × halo)², times ``batch``, fits ``budget``.

    Returns a side ≥ the image's largest side when the whole image fits (one tile).
    """
    h, w = padded_shape
    if h * w * bytes_per_pixel * batch <= budget:
        return max(h, w)
    side = int(math.sqrt(budget / (bytes_per_pixel * batch)))
    tile = (side - 2 * halo) // multiple * multiple
    # Never below one stride, nor so small that the halo dominates beyond reason.
    return max(tile, multiple, min(round_up(max(h, w), multiple), round_up(halo, multiple)))


def iter_batches(tiles: list[Tile], batch: int) -> Iterator[list[Tile]]:
    """Group tiles of equal window shape into batches of at most ``batch``, in order."""
    groups: dict[tuple[int, int], list[Tile]] = {}
    for t in tiles:
        groups.setdefault(t.window_shape, []).append(t)
    for group in groups.values():
        for i in range(0, len(group), max(1, batch)):
            yield group[i : i + max(1, batch)]


def padded_index(start: int, stop: int, size: int, mode: str) -> np.ndarray:
    """Source indices of padded positions ``start..stop`` of an axis of length ``size``.

    Positions ≥ ``size`` are the bottom/right padding: reflected (without repeating the
    edge) or replicated, as ``torch.nn.functional.pad`` does.
    """
    idx = np.arange(start, stop)
    beyond = idx >= size
    if beyond.any():
        if mode == "reflect":
            idx[beyond] = 2 * (size - 1) - idx[beyond]
        else:
            idx[beyond] = size - 1
    return idx


def read_window(
    source, window: tuple[int, int, int, int], size: tuple[int, int], mode: str
) -> np.ndarray:
    """Read a (C, y1-y0, x1-x0) window of the padded frame from a (C, H, W) array.

    ``source`` may be numpy, a memmap, dask or zarr: only the needed region is read.
    """
    y0, y1, x0, x1 = window
    h, w = size
    rows = padded_index(y0, y1, h, mode)
    cols = padded_index(x0, x1, w, mode)
    r0, r1 = int(rows.min()), int(rows.max()) + 1
    c0, c1 = int(cols.min()), int(cols.max()) + 1
    block = np.asarray(source[:, r0:r1, c0:c1])
    if (
        r1 - r0 == len(rows)
        and c1 - c0 == len(cols)
        and (rows == np.arange(r0, r1)).all()
        and (cols == np.arange(c0, c1)).all()
    ):
        return block
    return block[:, rows - r0][:, :, cols - c0]
