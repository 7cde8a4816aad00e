"""The tiled engine: networks run tile by tile into full-size buffers, within a budget.

One :class:`Engine` serves one call: it plans tiles per network (the whole image when it
fits the memory budget), runs them in batches through a backend runner, writes each
tile's core (or blends U-Net windows), and halves the tiles after an out-of-memory error.
"""

from __future__ import annotations

import contextlib
import copy
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from ..backends import Runner, amp_dtype, make_runner
from ..errors import InputError, TaganError
from ..networks import ArchSpec, arch_spec
from ..tiling import (
    Tile,
    blend_weights,
    choose_tile,
    default_halo,
    iter_batches,
    measured_halo,
    round_up,
    tile_plan,
)
from .budget import activation_bytes_per_pixel, budgets, free_device_memory, is_oom
from .inputs import WindowReader
from .options import MODES, Mode, RunOptions

if TYPE_CHECKING:
    from ..model import TAGANModel

ProgressCallback = Callable[[int, int], None]

#: Smallest padded side a ResNet accepts: its 4× down-sampled map must be ≥ 2 pixels for
#: the residual blocks' reflection padding.
MIN_RESNET_SIDE = 8

#: After a pass whose windows need more activation memory than this (bytes, estimated),
#: the memory is given back to the system (:meth:`Engine.release_memory`).
RELEASE_ARENA_BYTES = 256 << 20


def padded_shape(shape: tuple[int, int], multiple: int) -> tuple[int, int]:
    """The frame tiles are cut from: each side up to ``multiple`` (≥ :data:`MIN_RESNET_SIDE`)."""
    return (
        max(round_up(shape[0], multiple), MIN_RESNET_SIDE),
        max(round_up(shape[1], multiple), MIN_RESNET_SIDE),
    )


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


@dataclass
class Network:
    """One network of a run: its role, registered architecture, module and sizes."""

    role: str
    arch: str
    module: nn.Module
    width: int
    in_channels: int

    @property
    def spec(self) -> ArchSpec:
        return arch_spec(self.arch, self.role)

    @property
    def stride(self) -> int:
        return self.spec.stride

    @property
    def exact(self) -> bool:
        return self.spec.local

    @property
    def min_window(self) -> int:
        return MIN_RESNET_SIDE if self.exact else self.stride


def networks_of(model: TAGANModel, working: TAGANModel, roles: tuple[str, ...]) -> list[Network]:
    """The networks of ``working`` (``model``'s copy in a mode) for ``roles``, in order."""
    cfg = model.config
    found = {
        "generator": (cfg.generator, working.generator, cfg.ngf, cfg.input_nc),
        "segmenter": (cfg.segmenter, working.segmenter, cfg.nsf, cfg.output_nc),
    }
    nets = []
    for role in roles:
        arch, module, width, in_channels = found[role]
        if arch is not None and module is not None:
            nets.append(Network(role, arch, module, width, in_channels))
    return nets


@contextlib.contextmanager
def running(
    model: TAGANModel,
    roles: tuple[str, ...],
    *,
    mode: Mode,
    seed: int | None,
    device: torch.device,
    backend: str,
    options: RunOptions,
    progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[Engine]:
    """An :class:`Engine` for ``model``'s networks in ``roles``, put in ``mode``.

    Inside: inference mode, the RNG seeded (``seed`` not None); after: the caller's
    network modes, RNG state and (after a channels-last run) memory format are back.
    """
    with (
        _memory_format_kept(model, backend),
        network_mode(model, mode) as working,
        torch.inference_mode(),
        seeded(seed, device),
    ):
        yield Engine(
            networks_of(model, working, roles),
            device=device,
            mode=mode,
            backend=backend,
            options=options,
            progress=progress,
            should_stop=should_stop,
        )


@contextlib.contextmanager
def _memory_format_kept(model: TAGANModel, backend: str) -> Iterator[None]:
    """Hand the networks back in their own memory format after a channels-last run."""
    try:
        yield
    finally:
        if backend == "channels_last":
            for net in model.networks().values():
                net.to(memory_format=torch.contiguous_format)


class Engine:
    """State of one prediction: networks, tile plans, runners, progress and cancelling."""

    def __init__(
        self,
        networks: list[Network],
        *,
        device: torch.device,
        mode: str,
        backend: str,
        options: RunOptions,
        progress: ProgressCallback | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        self.networks, self.device, self.mode = networks, device, mode
        self.backend, self.options = backend, options
        self.budget, whole = budgets(device, options.memory_budget)
        self.whole_budget = max(self.budget, whole)
        self.progress, self.should_stop = progress, should_stop
        self.runners: dict[str, Runner] = {}
        self.done = 0
        self.total = 0
        #: Every network in one tile: progress counts generations, not tiles.
        self.single = False
        self.tiles_used: dict[str, int] = {}
        self.halos_used: dict[str, int] = {}

    def start(self, padded: tuple[int, int], repeats: int) -> None:
        """Plan the progress of ``repeats`` passes (planes × generations) of the networks."""
        n_tiles = sum(len(self.plan(net, padded)) for net in self.networks)
        self.single = n_tiles == len(self.networks)
        self.total = repeats * (1 if self.single else n_tiles)

    # -- planning ------------------------------------------------------------------------
    def halo(self, net: Network) -> int:
        """The caller's halo; ``full``: the receptive field; None: measured per weights."""
        halo = self.options.halo
        if halo == "full":
            return default_halo(net.arch, net.role)
        if halo is None:
            try:
                return measured_halo(net.module, net.arch, net.role, net.in_channels)
            except Exception as exc:
                if not is_oom(exc):
                    raise
                # too little memory to measure: the receptive field is always exact
                return default_halo(net.arch, net.role)
        return round_up(max(0, int(halo)), net.stride)

    def bytes_per_pixel(self, net: Network) -> float:
        return activation_bytes_per_pixel(net.width, self.backend)

    def tile_side(self, net: Network, padded: tuple[int, int]) -> int:
        if self.mode == "original":
            return max(padded)
        if net.role in self.tiles_used:  # set by an out-of-memory retry
            return self.tiles_used[net.role]
        if self.options.tile is not None:
            return max(round_up(self.options.tile, net.stride), net.min_window)
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

    def plan(self, net: Network, padded: tuple[int, int]) -> list[Tile]:
        side = self.tile_side(net, padded)
        halo = 0 if side >= max(padded) else self.halo(net)
        self.halos_used[net.role] = halo
        return tile_plan(padded, side, halo, net.stride, net.min_window)

    def batch_size(self, net: Network, tiles: list[Tile]) -> int:
        if self.options.batch_tiles is not None:
            return max(1, int(self.options.batch_tiles))
        if self.device.type == "cpu" or len(tiles) < 2:
            return 1  # no gain from batching on CPU cores
        h, w = tiles[0].window_shape
        return int(max(1, min(16, self.budget // max(1.0, h * w * self.bytes_per_pixel(net)))))

    # -- running -------------------------------------------------------------------------
    def runner(self, net: Network) -> Runner:
        if net.role not in self.runners:
            self.runners[net.role] = make_runner(
                net.module,
                backend=self.backend,
                device=self.device,
                amp=amp_dtype(self.options.precision),
                in_channels=net.in_channels,
                stride=net.stride,
            )
        return self.runners[net.role]

    def release_memory(self, net: Network, tiles: list[Tile]) -> None:
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
        if run is not None and self.backend == "onnx":
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
        net: Network,
        read: WindowReader,
        out: np.ndarray,
        limit: tuple[int, int],
        tiles: list[Tile],
    ) -> None:
        """Run ``net`` over ``tiles``; write (C, ≤limit) results into ``out``.

        ResNets: each tile writes its core. U-Nets: windows are blended by ramp weights.
        """
        run = self.runner(net)
        hl, wl = limit
        blend = not net.exact and len(tiles) > 1
        if blend:  # weights sum to one: accumulate straight into the (zeroed) output
            for r in range(0, hl, 1024):
                out[:, r : min(hl, r + 1024), :wl] = 0.0
        # Largest windows first: ONNX Runtime's arena then grows once, on the first run,
        # and smaller windows reuse it (else it adds a region per new largest shape).
        batches = iter_batches(tiles, self.batch_size(net, tiles))
        for group in sorted(batches, key=lambda g: -math.prod(g[0].window_shape)):
            self.check_stop()
            y = run(np.stack([read(t.window) for t in group]))
            for t, yi in zip(group, y, strict=True):
                _write_tile(out, yi, t, limit, blend)
                if not self.single:
                    self.tick()

    def run_network(
        self,
        net: Network,
        read: WindowReader,
        padded: tuple[int, int],
        out: np.ndarray,
        limit: tuple[int, int],
    ) -> None:
        """:meth:`run_pass`, retried with half-size tiles after an out-of-memory error."""
        while True:
            tiles = self.plan(net, padded)
            self.tiles_used[net.role] = self.tile_side(net, padded)
            try:
                self.run_pass(net, read, out, limit, tiles)
                return
            except Exception as exc:
                if not is_oom(exc) or self.mode == "original":
                    raise
                self._shrink_tiles(net, padded, exc)
            finally:
                self.release_memory(net, tiles)

    def _shrink_tiles(self, net: Network, padded: tuple[int, int], exc: Exception) -> None:
        side = self.tiles_used[net.role]
        smaller = max(net.min_window, round_up(min(side, max(padded)) // 2, net.stride))
        free_device_memory(self.device)
        if smaller >= min(side, max(padded)) or smaller < 2 * net.stride:
            raise TaganError(
                f"out of memory on {self.device} even with {side}-pixel tiles"
            ) from exc
        warnings.warn(
            f"out of memory on {self.device} with {side}-pixel tiles; retrying with {smaller}",
            RuntimeWarning,
            stacklevel=3,
        )
        self.tiles_used[net.role] = smaller
        self.total += len(tile_plan(padded, smaller, self.halo(net), net.stride))


def _write_tile(
    out: np.ndarray, y: np.ndarray, tile: Tile, limit: tuple[int, int], blend: bool
) -> None:
    """Write one tile's output ``y`` (its window) into ``out``, cropped to ``limit``."""
    hl, wl = limit
    y0, y1, x0, x1 = tile.window
    if blend:
        ye, xe = min(y1, hl), min(x1, wl)
        if ye > y0 and xe > x0:
            out[:, y0:ye, x0:xe] += (y * blend_weights(tile))[:, : ye - y0, : xe - x0]
        return
    cy0, cy1, cx0, cx1 = tile.core
    cy1, cx1 = min(cy1, hl), min(cx1, wl)
    if cy1 > cy0 and cx1 > cx0:
        out[:, cy0:cy1, cx0:cx1] = y[:, cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
