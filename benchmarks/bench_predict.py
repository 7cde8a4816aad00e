"""Prediction speed and memory: the tiled engine against the plain eager forward.

Measured in one run on this machine, with the real axons preset sizes (ResNet-9 G at
ngf 64, ResNet-6 S at nsf 64; random weights with calibrated BatchNorm statistics):

* the machine's fp32 matmul rate (a large ``torch.matmul``) and the networks' FLOPs per
  pixel (``torch.utils.flop_counter.FlopCounterMode``);
* for each image side: the reference (a plain ``torch.no_grad()`` eager forward of G then
  S on the whole image, fp32), and ``napari_tagan.core.predict`` with its defaults
  (MP/s of G+S, ratio to the reference, fraction of the matmul rate);
* the largest difference, in network units ([-1, 1]), between the engine and the
  reference, and between a forced tiling and the whole image;
* on CPUs with bf16 hardware (AMX or AVX512-BF16), the engine in bf16 mixed precision;
* the peak RSS (``ru_maxrss`` of a child process) predicting a large float32 image.

With ``--device cuda``: MP/s at 4096² in fp32 and with bf16/fp16 mixed precision.

Run: ``flock /tmp/bench.lock python benchmarks/bench_predict.py [--quick]``; the 8192²
RSS run alone takes about 40 min on 2 cores (``--rss-size 0`` skips it, ``--rss-only``
runs only it).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from napari_tagan.core import TAGANModel, predict, preset_config
from napari_tagan.core.device import cpu_has_native_bf16


def build_model(seed: int = 0) -> TAGANModel:
    """The axons preset at full width, random weights, calibrated BatchNorm statistics."""
    torch.manual_seed(seed)
    model = TAGANModel.from_config(preset_config("axons"))
    for net in model.networks().values():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None
        net.train()
    with torch.no_grad():
        g = model.generator(torch.randn(2, 1, 64, 64))
        model.segmenter(g)
    return model.eval()


def make_image(side: int, seed: int = 1) -> np.ndarray:
    """A float32 confocal-like image, generated in row blocks (no float64 copy)."""
    rng = np.random.default_rng(seed)
    image = np.empty((side, side), np.float32)
    for r in range(0, side, 512):
        block = image[r : r + 512]
        block[...] = rng.gamma(2.0, 30.0, size=block.shape)
    return image


def matmul_rate(n: int = 4096, repeats: int = 3, device: str = "cpu") -> float:
    """Best fp32 FLOP/s of an n × n matmul."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        if device != "cpu":
            torch.cuda.synchronize()
        t = time.perf_counter()
        torch.matmul(a, b)
        if device != "cpu":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def flops_per_pixel(model: TAGANModel, side: int = 256) -> float:
    """FLOPs of G then S per input pixel (multiply-add = 2 FLOPs)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 1, side, side)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model.segmenter(model.generator(x))
    return counter.get_total_flops() / side**2


def normalized(model: TAGANModel, image: np.ndarray) -> np.ndarray:
    """The network input of ``image`` as the engine computes it (whole-image statistics)."""
    from napari_tagan.core.normalization import normalize

    x, _ = normalize(image[None], model.config.normalization)
    return x


def reference(model: TAGANModel, x: np.ndarray, device: str) -> tuple[float, np.ndarray]:
    """Plain eager whole-image forward (fp32, no tricks): seconds and G's output."""
    t = torch.from_numpy(x)[None].to(device)
    if device != "cpu":
        torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.no_grad():
        g = model.generator(t)
        s = model.segmenter(g)
        g_np, _ = g.cpu().numpy(), s.cpu().numpy()
    return time.perf_counter() - start, g_np[0, 0]


def sted_network_units(result) -> np.ndarray:
    """legacy8 STED intensities → network units."""
    return np.asarray(result.synthetic_sted, np.float32) / 127.5 - 1.0


def child_rss(side: int) -> None:
    """Child process: predict a ``side``² float32 image, print its time and peak RSS."""
    model = build_model()
    image = make_image(side)
    start = time.perf_counter()
    result = predict(model, image, device="cpu")
    elapsed = time.perf_counter() - start
    meta = result.metadata
    finite = bool(np.isfinite(result.synthetic_sted[:: max(1, side // 256)]).all())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(
        f"child: {side}² in {elapsed:.0f} s ({side * side / elapsed / 1e6:.3f} MP/s), "
        f"backend {meta['backend']}, tiles {meta['tile']}, halos {meta['halo']}, "
        f"finite {finite}, self-reported peak RSS {peak / 1e9:.2f} GB",
        flush=True,
    )


def run_cpu(args: argparse.Namespace) -> None:
    sizes = [256, 512] if args.quick else [1024, 2048]
    rss_side = args.rss_size or (2048 if args.quick else 8192)
    threads = torch.get_num_threads()
    print(f"CPU benchmark: torch {torch.__version__}, {threads} threads, {os.cpu_count()} cores")
    peak = matmul_rate()
    print(f"fp32 matmul (4096² · 4096²): {peak / 1e9:.1f} GFLOP/s")
    model = build_model()
    fpp = flops_per_pixel(model)
    print(f"G+S FLOPs per pixel (FlopCounterMode): {fpp / 1e6:.3f} MFLOP")
    # Warm-up: export to ONNX (cached in memory and on disk) on a small image, timed.
    start = time.perf_counter()
    predict(model, make_image(64), backend="onnx")
    print(f"one-off ONNX export and session set-up: {time.perf_counter() - start:.1f} s")
    predict(model, make_image(64), backend="eager")
    bf16 = cpu_has_native_bf16()
    print(f"CPU bf16 hardware (AMX or AVX512-BF16): {bf16}")
    if bf16:
        predict(model, make_image(64), precision="bf16")
    for side in sizes:
        image = make_image(side)
        x = normalized(model, image)
        t_ref, g_ref = reference(model, x, "cpu")
        start = time.perf_counter()
        result = predict(model, image, device="cpu")
        t_eng = time.perf_counter() - start
        mp = side * side / 1e6
        meta = result.metadata
        diff = float(np.abs(sted_network_units(result) - g_ref).max())
        print(
            f"{side}²: reference eager {mp / t_ref:.4f} MP/s ({t_ref:.1f} s, "
            f"{fpp * mp * 1e6 / t_ref / peak:.0%} of matmul) | engine {mp / t_eng:.4f} MP/s "
            f"({t_eng:.1f} s, {fpp * mp * 1e6 / t_eng / peak:.0%} of matmul, backend "
            f"{meta['backend']}, tile {meta['tile']['generator']}) | speed-up "
            f"{t_ref / t_eng:.2f}x | engine vs reference max |Δ| {diff:.2e}",
            flush=True,
        )
        if bf16:
            start = time.perf_counter()
            mixed = predict(model, image, device="cpu", precision="bf16")
            t_bf = time.perf_counter() - start
            diff = float(np.abs(sted_network_units(mixed) - g_ref).max())
            mean = float(np.abs(sted_network_units(mixed) - g_ref).mean())
            print(
                f"{side}²: engine bf16 (mixed precision) {mp / t_bf:.4f} MP/s ({t_bf:.1f} s, "
                f"backend {mixed.metadata['backend']}) | speed-up {t_ref / t_bf:.2f}x vs "
                f"reference, {t_eng / t_bf:.2f}x vs fp32 engine | max |Δ| {diff:.2e}, "
                f"mean |Δ| {mean:.2e} (network units)",
                flush=True,
            )
    tiled_vs_whole(model, sizes[0])
    if args.rss_size == 0:
        return
    run_rss(rss_side)


def tiled_vs_whole(model: TAGANModel, side: int) -> None:
    """Forced tiles against the whole image (same backend) at ``side``²."""
    image = make_image(side, seed=2)
    whole = predict(model, image, device="cpu")
    tile = side // 3
    tiled = predict(model, image, device="cpu", tile=tile, backend=whole.metadata["backend"])
    d_sted = float(np.abs(sted_network_units(tiled) - sted_network_units(whole)).max())
    d_seg = float(np.abs(tiled.segmentation - whole.segmentation).max())
    print(
        f"tiled ({tile}-px cores, halos {tiled.metadata['halo']}) vs whole at {side}²: "
        f"max |Δ| STED {d_sted:.2e} (network units), segmentation {d_seg:.2e} (probability)",
        flush=True,
    )


def run_rss(rss_side: int) -> None:
    """Peak RSS of a child process predicting a ``rss_side``² float32 image."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--child-rss", str(rss_side)], check=False, text=True
    )
    child_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    print(
        f"peak RSS predicting a {rss_side}² float32 image (child ru_maxrss): "
        f"{child_peak / 1e9:.2f} GB (exit {proc.returncode}, "
        f"{time.perf_counter() - start:.0f} s wall)"
    )


def run_cuda(args: argparse.Namespace) -> None:
    if not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device")
    side = 2048 if args.quick else 4096
    print(f"CUDA benchmark: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    peak = matmul_rate(8192, device="cuda")
    print(f"fp32 matmul (8192² · 8192²): {peak / 1e12:.1f} TFLOP/s")
    model = build_model()
    fpp = flops_per_pixel(model)
    model.to("cuda")
    image = make_image(side)
    x = normalized(model, image)
    reference(model, x[:, :256, :256], "cuda")  # warm-up (cuDNN autotuning)
    t_ref, g_ref = reference(model, x, "cuda")
    mp = side * side / 1e6
    print(f"{side}² reference eager fp32: {mp / t_ref:.2f} MP/s ({t_ref:.2f} s)")
    for precision in ("fp32", "bf16", "fp16"):
        predict(model, image[:512, :512], device="cuda", precision=precision)  # warm-up
        start = time.perf_counter()
        result = predict(model, image, device="cuda", precision=precision)
        t = time.perf_counter() - start
        diff = float(np.abs(sted_network_units(result) - g_ref).max())
        print(
            f"{side}² engine {precision}: {mp / t:.2f} MP/s ({t:.2f} s, "
            f"{fpp * mp * 1e6 / t / peak:.0%} of fp32 matmul, tile "
            f"{result.metadata['tile']['generator']}) | max |Δ| vs eager fp32 {diff:.1e}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--rss-size", type=int, default=None, help="side of the RSS image (0: skip the RSS run)"
    )
    parser.add_argument("--rss-only", action="store_true", help="only the RSS run")
    parser.add_argument("--child-rss", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_rss:
        child_rss(args.child_rss)
        return
    # ONNX exports of the benchmark's networks go to a private cache shared with the child.
    os.environ.setdefault(
        "NAPARI_TAGAN_CACHE", os.path.join(tempfile.gettempdir(), "napari-tagan-bench")
    )
    if args.rss_only:
        run_rss(args.rss_size or 8192)
    elif args.device == "cuda":
        run_cuda(args)
    else:
        run_cpu(args)


if __name__ == "__main__":
    main()
