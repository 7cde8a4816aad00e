"""``napari-tagan predict --workers N | --scheduler ADDRESS``: zarr images on a cluster."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The scale-out options of ``predict``."""
    p.add_argument("--scheduler", help="dask.distributed scheduler address (zarr inputs)")
    p.add_argument("--workers", type=int, help="start a local dask cluster of N processes")
    p.add_argument("--block", type=int, default=1024, help="block side per cluster task")


def run_distributed(args: argparse.Namespace) -> int:
    """Predict each zarr input on the cluster into OUTPUT/NAME.zarr (arrays sted, seg)."""
    from napari_tagan.core.distributed_predict import open_client, predict_zarr_distributed
    from napari_tagan.core.errors import InputError
    from napari_tagan.core.registry import resolve_model
    from napari_tagan.core.tiff import expand_inputs, image_name

    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be ≥ 1, got {args.workers}")
    if args.mode not in (None, "eval") or args.generations != 1:
        raise InputError("the cluster runs the deterministic eval mode only")
    paths = expand_inputs(args.inputs)
    not_zarr = [p for p in paths if p.suffix.lower() != ".zarr"]
    if not_zarr:
        raise InputError(f"{not_zarr[0]}: --workers/--scheduler take zarr arrays")
    model = str(resolve_model(args.model, progress=not args.no_progress))
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    client = open_client(args.scheduler, args.workers)
    try:
        for path in paths:
            start = time.perf_counter()
            target = out_dir / f"{image_name(path)}.zarr"
            summary = predict_zarr_distributed(model, path, target, client, block=args.block)
            seconds = time.perf_counter() - start
            print(
                f"{target}: {summary['blocks']} blocks on {len(summary['workers'])} "
                f"worker(s), {summary['pixels'] / seconds / 1e6:.2f} Mpixel/s"
            )
    finally:
        cluster = None if args.scheduler else client.cluster
        client.close()
        if cluster is not None:
            cluster.close()
    return 0
