"""Time the confocal / STED simulator on the CPU.

Usage: ``python benchmarks/bench_simulate.py [--repeats N] [--sizes 256 512 1024]``.
Prints the median and best wall time per structure and size (one warm-up call first).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from napari_tagan.core.simulate import simulate, write_dataset

STRUCTURES = ("axons", "dendrites", "nanodomains", "saureus")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    args = parser.parse_args()

    simulate("axons", (64, 64))
    print(f"{'structure':<12} {'size':>6} {'median ms':>10} {'best ms':>8}")
    for structure in STRUCTURES:
        for size in args.sizes:
            times = []
            for seed in range(args.repeats):
                start = time.perf_counter()
                simulate(structure, (size, size), seed=seed)
                times.append(time.perf_counter() - start)
            print(
                f"{structure:<12} {size:>6} {1e3 * statistics.median(times):>10.1f} "
                f"{1e3 * min(times):>8.1f}"
            )

    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        write_dataset(root, "axons", n_train=40, n_valid=10, shape=(224, 224))
        elapsed = time.perf_counter() - start
    print(f"write_dataset axons 50 × 224²: {elapsed:.2f} s ({1e3 * elapsed / 50:.1f} ms/sample)")


if __name__ == "__main__":
    main()
