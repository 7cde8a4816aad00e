"""Prediction of images bigger than one machine, spread over a dask.distributed cluster.

The image (a zarr array, YX or CYX, on storage every worker can read) is cut into
blocks with :func:`~napari_tagan.core.tiling.tile_plan`, in the same stride-padded frame
and with the same rules as the tiled engine: window origins on the stride grid, and a halo
of G's plus S's measured receptive field, so that each block's core equals the
whole-image result (ResNet models, eval mode; "Exactness" in :mod:`.tiling`). Each worker
loads the model once (a per-process cache), predicts its windows with
:func:`~napari_tagan.core.predict`, and writes the cores straight into the output zarr
arrays, whose chunks are the blocks, so that no two tasks write the same chunk.

Normalization statistics must not depend on the block: ``legacy8`` models (every
original TA-GAN preset) qualify; image-dependent kinds (``percentile``, ``minmax``) are
refused until :func:`predict` accepts precomputed statistics.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .tiling import Tile, round_up, tile_plan

DEFAULT_BLOCK = 1024
_MODELS: dict[str, Any] = {}  # per worker process: model path → loaded model
LOADS: list[str] = []  # model loads in this process (the tests count them)


@dataclass(frozen=True)
class BlockJob:
    """Everything a worker needs for one block (small and picklable)."""

    model: str
    image: str
    output: str
    tile: Tile
    shape: tuple[int, int]
    axes: str
    backend: str


def worker_model(path: str) -> Any:
    """The model at ``path``, loaded once per process."""
    if path not in _MODELS:
        from .registry import load_named_model

        _MODELS[path] = load_named_model(path)
        LOADS.append(path)
    return _MODELS[path]


def block_plan(model: Any, shape: tuple[int, int], block: int = DEFAULT_BLOCK) -> list[Tile]:
    """The blocks of a (Y, X) image: the engine's tile plan with a G + S halo."""
    from .bioimageio import package_halo, package_stride

    stride = package_stride(model.config)
    padded = (round_up(shape[0], stride), round_up(shape[1], stride))
    return tile_plan(padded, block, package_halo(model.config), stride)


def _clip(tile: Tile, shape: tuple[int, int]) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """(window, core) slices in image coordinates: the padded frame's excess dropped.

    A window clipped at the bottom/right ends at the image border, where the whole-image
    forward pads by the same amount (the window starts on the stride grid).
    """
    h, w = shape
    wy0, wy1, wx0, wx1 = tile.window
    cy0, cy1, cx0, cx1 = tile.core
    window = (slice(wy0, min(wy1, h)), slice(wx0, min(wx1, w)))
    core = (slice(cy0, min(cy1, h)), slice(cx0, min(cx1, w)))
    return window, core


def predict_block(job: BlockJob) -> dict[str, Any]:
    """Predict one block and write its core into the output arrays (runs on a worker)."""
    import zarr

    from .prediction import predict

    model = worker_model(job.model)
    (wy, wx), (cy, cx) = _clip(job.tile, job.shape)
    if cy.start >= cy.stop or cx.start >= cx.stop:
        return {"pid": os.getpid(), "pixels": 0}  # a core wholly in the padding
    source = zarr.open_array(job.image, mode="r")
    lead = (slice(None),) * (source.ndim - 2)
    window = np.asarray(source[(*lead, wy, wx)])
    result = predict(model, window, axes=job.axes, tile=10**6, backend=job.backend)
    inner = (
        slice(cy.start - wy.start, cy.stop - wy.start),
        slice(cx.start - wx.start, cx.stop - wx.start),
    )
    out = zarr.open_group(job.output, mode="r+")
    out["sted"][(*lead, cy, cx)] = result.synthetic_sted[(*lead, *inner)]
    if result.segmentation is not None:
        out["seg"][(slice(None), cy, cx)] = result.segmentation[(slice(None), *inner)]
    return {"pid": os.getpid(), "pixels": (cy.stop - cy.start) * (cx.stop - cx.start)}


def _prepare_output(model: Any, source: Any, output: Path, block: int) -> None:
    import zarr

    if output.exists():
        raise InputError(f"{output} exists: choose a new output (results are never merged)")
    shape = tuple(source.shape)
    group = zarr.open_group(str(output), mode="w-", zarr_format=2)
    chunks = (*shape[:-2], block, block)
    group.create_array("sted", shape=shape, chunks=chunks, dtype="float32")
    if model.segmenter is not None:
        n = len(model.config.class_names)
        group.create_array(
            "seg", shape=(n, *shape[-2:]), chunks=(n, block, block), dtype="float32"
        )
    group.attrs["napari_tagan"] = {
        "classes": list(model.config.class_names),
        "model": str(model.source),
    }


def predict_zarr_distributed(
    model_path: str | os.PathLike[str],
    image: str | os.PathLike[str],
    output: str | os.PathLike[str],
    client: Any,
    *,
    block: int = DEFAULT_BLOCK,
    backend: str = "eager",
) -> dict[str, Any]:
    """Predict a YX/CYX zarr array on ``client``'s workers into a zarr group at ``output``.

    ``output`` gets arrays ``sted`` (shaped like the image) and ``seg`` (classes, Y, X).
    Returns a summary: blocks, pixels and the worker processes used.
    """
    import zarr

    model = worker_model(str(model_path))  # here too: check it and plan with it
    if model.config.normalization.kind != "legacy8":
        raise InputError(
            f"distributed prediction needs block-independent normalization (legacy8); this "
            f"model uses {model.config.normalization.kind!r}: predict it in one process"
        )
    source = zarr.open_array(str(image), mode="r")
    if source.ndim not in (2, 3):
        raise InputError(f"{image}: expected a YX or CYX zarr array, got shape {source.shape}")
    shape = tuple(int(s) for s in source.shape[-2:])
    block = round_up(block, 4)
    _prepare_output(model, source, Path(output), block)
    jobs = [
        BlockJob(
            str(model_path),
            str(image),
            str(output),
            tile,
            shape,
            "YX" if source.ndim == 2 else "CYX",
            backend,
        )
        for tile in block_plan(model, shape, block)
    ]
    results = client.gather(client.map(predict_block, jobs, pure=False))
    return {
        "blocks": len(jobs),
        "pixels": sum(r["pixels"] for r in results),
        "workers": sorted({r["pid"] for r in results}),
    }


def open_client(scheduler: str | None = None, workers: int | None = None) -> Any:
    """A client of the cluster at ``scheduler``, or of a new local one with ``workers``."""
    from dask.distributed import Client, LocalCluster

    if scheduler:
        return Client(scheduler)
    cluster = LocalCluster(
        n_workers=workers or 1,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    )
    return Client(cluster)
