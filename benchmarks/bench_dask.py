"""Throughput of prediction on a local dask.distributed cluster against one process.

One run, same machine: a ``--side``² uint16 zarr image (default 2048²), the axons preset
(``--ngf`` filters in G and S; 64 is the real size), eval mode, fp32, eager backend.

* one process: ``napari_tagan.core.predict`` on the zarr array (all cores, the engine's
  own tiling);
* ``--workers`` processes (default 2, one torch thread each, as dask starts them):
  :func:`~napari_tagan.core.distributed_predict.predict_zarr_distributed`, blocks of
  ``--block`` pixels, wall time including the workers' model loads;
* the largest difference between the two results (network units of the output).

Run: ``flock /tmp/bench.lock python benchmarks/bench_dask.py [--side 2048] [--ngf 64]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import zarr

from napari_tagan.core import TAGANModel, predict, preset_config, save_bundle
from napari_tagan.core.distributed_predict import open_client, predict_zarr_distributed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=2048)
    parser.add_argument("--ngf", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--block", type=int, default=1024)
    args = parser.parse_args()
    torch.manual_seed(0)
    config = preset_config("axons", ngf=args.ngf, nsf=args.ngf)
    model = TAGANModel.from_config(config).eval()
    image = np.random.default_rng(0).poisson(40, (args.side, args.side)).astype(np.uint16)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        bundle = save_bundle(model, folder / "m.tagan")
        zarr.create_array(str(folder / "in.zarr"), data=image, chunks=(512, 512), zarr_format=2)
        source = zarr.open_array(str(folder / "in.zarr"), mode="r")
        start = time.perf_counter()
        single = predict(model, source, backend="eager")
        one = time.perf_counter() - start
        client = open_client(workers=args.workers)
        try:
            start = time.perf_counter()
            summary = predict_zarr_distributed(
                bundle, folder / "in.zarr", folder / "out.zarr", client, block=args.block
            )
            many = time.perf_counter() - start
        finally:
            cluster = client.cluster
            client.close()
            cluster.close()
        out = zarr.open_group(str(folder / "out.zarr"), mode="r")
        diff = float(np.max(np.abs(out["sted"][:] - single.synthetic_sted)))
    mp = image.size / 1e6
    print(
        f"image {args.side}², axons ngf={args.ngf}, fp32 eager, {torch.get_num_threads()} threads"
    )
    print(f"1 process          : {one:7.1f} s  {mp / one:6.3f} MP/s")
    print(
        f"{args.workers} workers ({summary['blocks']:3d} blocks): {many:7.1f} s  "
        f"{mp / many:6.3f} MP/s  (x{one / many:.2f})"
    )
    print(f"max |difference| of the synthetic STED: {diff:.2e} (8-bit intensity units)")


if __name__ == "__main__":
    main()
