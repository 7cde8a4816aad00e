"""The public calls: :func:`predict` (G, then S on its output) and :func:`segment` (S alone).

Both check the request, pick a device and backend, and hand the networks to the tiled
:class:`~.engine.Engine`; :func:`predict` also averages generations (mean and standard
deviation, in intensity units) and shapes the results like the input.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..backends import check_precision, choose_backend
from ..device import resolve_device
from ..errors import InputError
from ..networks import stride_multiple
from ..normalization import NormStats, denormalize, target_to_probability
from .budget import alloc, use_disk
from .engine import Engine, ProgressCallback, padded_shape, running
from .inputs import WindowReader, as_array, plane_reader, split_axes, sted_channels_first
from .options import Mode, RunOptions, check_request

if TYPE_CHECKING:
    from ..model import TAGANModel

#: Rows converted to intensity units at a time (bounds the temporary copies).
ROW_BLOCK = 1024


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


@dataclass
class _Buffers:
    """Full-size outputs of one plane: G writes ``sted`` in the padded frame (S reads it)."""

    shape: tuple[int, int]  # (Y, X) of the image
    sted: np.ndarray  # (n_out, *padded)
    variability: np.ndarray | None  # (n_out, Y, X): M2, then the std
    segmentation: np.ndarray | None  # (n_classes, Y, X)


def _device_for(model: TAGANModel, options: RunOptions) -> torch.device:
    return model.device if options.device is None else resolve_device(options.device)


def predict(
    model: TAGANModel,
    image: Any,
    *,
    mode: Mode = "eval",
    generations: int = 1,
    seed: int | None = 0,
    segment: bool = True,
    axes: str | None = None,
    sted: np.ndarray | None = None,
    sted_mask: np.ndarray | None = None,
    options: RunOptions | None = None,
    progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    **run: Any,
) -> PredictionResult:
    """Enhance an image of any size: 2D, channels-first, or a stack, tile by tile.

    ``image`` is (Y, X) or (C, Y, X) of any real dtype in microscope intensity units
    (numpy, dask or zarr: read window by window); stacks need ``axes`` (``ZYX``,
    ``TYX``, ``ZCYX``, ``TCYX``: plane by plane). ``mode``: ``eval`` (deterministic,
    tile-exact), ``mc`` (dropout generations) or ``original`` (batch statistics and
    dropout, whole image only). ``generations`` > 1 also returns the variability (std);
    ``seed`` seeds the stochastic modes. ``segment``: run S on the synthetic STED.
    ``sted``/``sted_mask``: the live preset's STED acquired in some regions, and where.
    ``options`` (:class:`RunOptions`) say how to run it; their fields may also be given
    as keywords (``device="cpu"``, ``tile=512``...), which replace those of ``options``.
    ``progress(done, total)`` is called after each tile of each network and generation
    (one unit per generation when the image is one tile); ``should_stop()`` → stop
    before the next tile (raises :class:`InterruptedError`).

    Returns arrays shaped like the input (segmentation: classes before Y, X; after the
    stack axis for stacks).
    """
    opts = RunOptions.merged(options, run)
    check_request(mode, generations, opts)
    image, layout = split_axes(model, as_array(image), axes)
    if layout[0] in "ZT" and (sted is not None or sted_mask is not None):
        raise InputError("STED regions (live preset) are supported for single images only")
    dev = _device_for(model, opts)
    check_precision(opts.precision, dev)  # its warning points at our caller
    if opts.backend == "onnx" and (
        mode != "eval" or opts.precision != "fp32" or dev.type != "cpu"
    ):
        raise InputError("the onnx backend runs eval mode in fp32 on the CPU only")
    model.to(dev)
    if min(image.shape[-2:]) < 1:
        raise InputError(f"image of shape {tuple(image.shape)} has no pixels")
    segment = segment and model.segmenter is not None and model.config.segmenter is not None
    call = _Call(mode, generations, seed, segment, sted, sted_mask, opts, dev)
    return _run_planes(model, image, layout, call, progress, should_stop)


@dataclass(frozen=True)
class _Call:
    """A checked :func:`predict` request."""

    mode: Mode
    generations: int
    seed: int | None
    segment: bool
    sted: np.ndarray | None
    sted_mask: np.ndarray | None
    options: RunOptions
    device: torch.device


def _run_planes(
    model: TAGANModel,
    image: Any,
    layout: str,
    call: _Call,
    progress: ProgressCallback | None,
    should_stop: Callable[[], bool] | None,
) -> PredictionResult:
    """Every plane of ``image`` through the engine, into stacked full-size buffers."""
    cfg = model.config
    stacked = layout[0] in "ZT"
    planes = int(image.shape[0]) if stacked else 1
    h, w = (int(s) for s in image.shape[-2:])
    padded = padded_shape(
        (h, w), stride_multiple(cfg.generator, cfg.segmenter if call.segment else None)
    )
    outputs, disk = _allocate(model, planes, (h, w), padded, call)
    backend = choose_backend(
        call.options.backend,
        model.generator,
        cfg.input_nc,
        device=call.device,
        mode=call.mode,
        precision=call.options.precision,
        pixels=planes * h * w,
    )
    roles = ("generator", "segmenter") if call.segment else ("generator",)
    stats: list[NormStats] = []
    with running(
        model,
        roles,
        mode=call.mode,
        seed=call.seed,
        device=call.device,
        backend=backend,
        options=call.options,
        progress=progress,
        should_stop=should_stop,
    ) as engine:
        engine.start(padded, planes * call.generations)
        for p in range(planes):
            plane = image[p] if stacked else image
            chw = plane[None] if "C" not in layout else plane
            read, plane_stats = plane_reader(
                model, chw, padded, sted=call.sted, sted_mask=call.sted_mask
            )
            buffers = _Buffers((h, w), *(None if a is None else a[p] for a in outputs))
            _run_generations(
                engine, model, read, plane_stats, padded, call.generations, buffers, disk
            )
            stats.append(plane_stats)
    return _result(model, outputs, layout, (h, w), _metadata(call, engine, layout, backend, stats))


def _allocate(
    model: TAGANModel,
    planes: int,
    shape: tuple[int, int],
    padded: tuple[int, int],
    call: _Call,
) -> tuple[tuple[np.ndarray, np.ndarray | None, np.ndarray | None], bool]:
    """(STED, variability, segmentation) buffers of all planes, and whether on disk."""
    cfg = model.config
    n_out, n_cls = cfg.output_nc, (cfg.n_classes if call.segment else 0)
    several = call.generations > 1
    nbytes = planes * shape[0] * shape[1] * 4 * (n_out * (3 if several else 1) + n_cls)
    disk = use_disk(nbytes, call.options.on_disk)
    sted = alloc((planes, n_out, *padded), disk)
    var = alloc((planes, n_out, *shape), disk) if several else None
    seg = alloc((planes, n_cls, *shape), disk) if n_cls else None
    return (sted, var, seg), disk


def _metadata(
    call: _Call, engine: Engine, layout: str, backend: str, stats: list[NormStats]
) -> dict[str, Any]:
    return {
        "mode": call.mode,
        "generations": call.generations,
        "seed": call.seed,
        "device": str(call.device),
        "precision": call.options.precision,
        "backend": backend,
        "tile": dict(engine.tiles_used),
        "halo": dict(engine.halos_used),
        "axes": layout,
        "normalization_stats": (
            stats[0].to_dict() if len(stats) == 1 else [s.to_dict() for s in stats]
        ),
    }


def _run_generations(
    engine: Engine,
    model: TAGANModel,
    read: WindowReader,
    stats: NormStats,
    padded: tuple[int, int],
    generations: int,
    out: _Buffers,
    disk: bool,
) -> None:
    """One plane through G (and S), all generations, into ``out`` (intensity units).

    With one generation G and S write straight into the results (G's in the padded
    frame, which S reads), converted in place; with more, into scratch buffers whose
    conversions are averaged by Welford's running mean and M2.
    """
    h, w = out.shape
    in_place = generations == 1
    sted_net = out.sted if in_place else alloc(out.sted.shape, disk)
    seg_net = out.segmentation
    if seg_net is not None and not in_place:
        seg_net = alloc(seg_net.shape, disk)
    g_net, *s_nets = engine.networks
    for g in range(generations):
        engine.run_network(g_net, read, padded, sted_net, padded)
        if s_nets and seg_net is not None:

            def read_sted(window: tuple[int, int, int, int]) -> np.ndarray:
                y0, y1, x0, x1 = window
                return np.asarray(sted_net[:, y0:y1, x0:x1])

            engine.run_network(s_nets[0], read_sted, padded, seg_net, (h, w))
        _accumulate(model, stats, g, sted_net, seg_net, out)
        if engine.single:
            engine.tick()
    if out.variability is not None:
        m2 = out.variability
        for r in range(0, h, ROW_BLOCK):
            m2[:, r : r + ROW_BLOCK] = np.sqrt(m2[:, r : r + ROW_BLOCK] / np.float32(generations))


def _accumulate(
    model: TAGANModel,
    stats: NormStats,
    g: int,
    sted_net: np.ndarray,
    seg_net: np.ndarray | None,
    out: _Buffers,
) -> None:
    """Generation ``g`` (network units) into the running results, row block by row block.

    Identical generations give exactly zero std.
    """
    cfg = model.config
    h, w = out.shape
    for r in range(0, h, ROW_BLOCK):
        r1 = min(h, r + ROW_BLOCK)
        sted_g = denormalize(sted_net[:, r:r1, :w], cfg.normalization, stats)
        seg_g = None
        if seg_net is not None:
            seg_g = target_to_probability(seg_net[:, r:r1], cfg.mask_range)
        if g == 0:
            out.sted[:, r:r1, :w] = sted_g
            if out.variability is not None:
                out.variability[:, r:r1] = 0.0
            if out.segmentation is not None:
                out.segmentation[:, r:r1] = seg_g
            continue
        assert out.variability is not None
        delta = sted_g - out.sted[:, r:r1, :w]
        out.sted[:, r:r1, :w] += delta / np.float32(g + 1)
        out.variability[:, r:r1] += delta * (sted_g - out.sted[:, r:r1, :w])
        if out.segmentation is not None:
            out.segmentation[:, r:r1] += (seg_g - out.segmentation[:, r:r1]) / np.float32(g + 1)


def _result(
    model: TAGANModel,
    outputs: tuple[np.ndarray, np.ndarray | None, np.ndarray | None],
    layout: str,
    shape: tuple[int, int],
    metadata: dict[str, Any],
) -> PredictionResult:
    """Crop the stacked buffers to the image and shape them like the input."""
    h, w = shape
    stacked = layout[0] in "ZT"

    def shaped(a: np.ndarray | None, *, classes: bool = False) -> np.ndarray | None:
        if a is None:
            return None
        a = a[..., :h, :w]
        if not classes and "C" not in layout:
            a = a[:, 0]
        return a if stacked else a[0]

    sted, var, seg = outputs
    return PredictionResult(
        synthetic_sted=shaped(sted),
        segmentation=shaped(seg, classes=True),
        variability=shaped(var),
        class_names=model.config.class_names if seg is not None else (),
        metadata={**model.describe(), **metadata},
    )


def segment(
    model: TAGANModel,
    image: Any,
    *,
    options: RunOptions | None = None,
    progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    **run: Any,
) -> np.ndarray:
    """S alone on a STED-like image: (n_classes, Y, X) float32 probabilities in [0, 1].

    ``image`` is (Y, X) or (C, Y, X) with the model's STED channels, normalized with its
    own statistics as training normalizes the STED; it is run in eval mode, tiled as by
    :func:`predict` (``options`` and keywords as there).
    """
    opts = RunOptions.merged(options, run)
    cfg = model.config
    if model.segmenter is None or cfg.segmenter is None:
        raise InputError(f"the {cfg.preset!r} model has no segmenter")
    chw = sted_channels_first(model, as_array(image))
    dev = _device_for(model, opts)
    check_precision(opts.precision, dev)
    model.to(dev)
    h, w = (int(s) for s in chw.shape[-2:])
    padded = padded_shape((h, w), stride_multiple(cfg.segmenter))
    backend = choose_backend(
        opts.backend,
        model.segmenter,
        cfg.output_nc,
        device=dev,
        mode="eval",
        precision=opts.precision,
        pixels=h * w,
    )
    seg = alloc((cfg.n_classes, h, w), use_disk(h * w * 4 * cfg.n_classes, opts.on_disk))
    with running(
        model,
        ("segmenter",),
        mode="eval",
        seed=None,
        device=dev,
        backend=backend,
        options=opts,
        progress=progress,
        should_stop=should_stop,
    ) as engine:
        engine.start(padded, 1)
        read, _ = plane_reader(model, chw, padded, regions=False)
        engine.run_network(engine.networks[0], read, padded, seg, (h, w))
        if engine.single:
            engine.tick()
    return target_to_probability(seg, cfg.mask_range)
