"""Prediction speed and memory: the tiled engine against the plain eager forward.

Measured in one run on this machine, with the real axons preset sizes (ResNet-9 G at
ngf 64, ResNet-6 S at nsf 64; random weights with calibrated BatchNorm statistics):

* the machine's fp32 matmul rate (a large ``torch.matmul``) and the networks' FLOPs per
  pixel (``torch.utils.flop_counter.FlopCounterMode``);
* start-up of a fresh interpreter importing the prediction path;
* for each image side, round robin: the reference (a plain ``torch.no_grad()`` eager
  forward of G then S on the whole image, fp32), and ``napari_tagan.core.predict`` per
  backend (OpenVINO, ONNX Runtime, channels-last, eager; bf16 on CPUs with bf16
  hardware): seconds, ratio to the reference, GFLOP/s, max |Δ| of G vs the reference;
* per side, the stages of a CLI-like run with the fastest backend: model load, export
  and compile (cold cache), read, normalise, tiles (time inside the networks), other
  engine work, write; and the non-network share;
* forced tiling vs the whole image at the measured and the receptive-field halos;
* bf16 vs fp32 on the simulated axons sample: deviation vs the mc std, Dice of masks;
* with ``--rss-size N``: the peak RSS (``ru_maxrss`` of a child) predicting N².

With ``--device cuda``: MP/s at 4096² in fp32 and with bf16/fp16 mixed precision.

Run: ``flock /tmp/bench.lock python benchmarks/bench_predict.py [--quick]``; the 8192²
RSS run alone takes about 40 min on 2 cores (``--rss-size N`` adds it, ``--rss-only``
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
from napari_tagan.core.checkpoints import load_model
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


class NetworkTimer:
    """Seconds spent inside the backends' runners (the networks) during ``predict``."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __enter__(self) -> NetworkTimer:
        from napari_tagan.core.prediction import engine

        self._make = engine.make_runner

        def timed_make(*args, **kwargs):
            run = self._make(*args, **kwargs)

            def timed(x, release=False):
                start = time.perf_counter()
                try:
                    return run(x, release)
                finally:
                    self.seconds += time.perf_counter() - start

            return timed

        engine.make_runner = timed_make
        return self

    def __exit__(self, *exc) -> None:
        from napari_tagan.core.prediction import engine

        engine.make_runner = self._make


def startup_seconds() -> float:
    """Wall time of a fresh interpreter importing the CLI's prediction path."""
    code = "import napari_tagan.cli.predict, napari_tagan.core.prediction"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - start


def stages(model: TAGANModel, side: int, backend: str, folder: str) -> dict[str, float]:
    """Seconds per stage of a CLI-like run: load, export/compile, read, normalise, tiles,
    other engine work, write (the export is timed from a cold cache)."""
    from napari_tagan.core.backends.export import cache_dir
    from napari_tagan.core.checkpoints import save_bundle
    from napari_tagan.core.tiff import read_tiff_array, write_float32_tiff

    bundle, tif = os.path.join(folder, "m.tagan"), os.path.join(folder, f"in{side}.tif")
    save_bundle(model, bundle, include_discriminator=False)
    write_float32_tiff(tif, make_image(side), axes="YX")
    times: dict[str, float] = {}
    t = time.perf_counter()
    loaded = load_model(bundle).to("cpu")
    times["model load"] = time.perf_counter() - t
    for f in cache_dir().glob("*.onnx") if cache_dir().is_dir() else ():
        f.unlink()
    t = time.perf_counter()
    predict(loaded, make_image(64), backend=backend)  # export, read, compile (small shape)
    times["export/compile"] = time.perf_counter() - t
    t = time.perf_counter()
    image = read_tiff_array(tif)
    times["read"] = time.perf_counter() - t
    t = time.perf_counter()
    normalized(loaded, image)
    times["normalise"] = time.perf_counter() - t
    with NetworkTimer() as nets:
        t = time.perf_counter()
        result = predict(loaded, image, backend=backend)
        total = time.perf_counter() - t
    times["tiles (networks)"] = nets.seconds
    times["other engine work"] = total - nets.seconds - times["normalise"]
    t = time.perf_counter()
    out = os.path.join(folder, "out_sted.tif")
    write_float32_tiff(out, result.synthetic_sted, axes="YX")
    write_float32_tiff(out, result.segmentation, axes="CYX")
    times["write"] = time.perf_counter() - t
    return times


VARIANTS = (
    ("engine openvino fp32", {"backend": "openvino"}),
    ("engine onnx fp32", {"backend": "onnx"}),
    ("engine channels_last fp32", {"backend": "channels_last"}),
    ("engine eager fp32", {"backend": "eager"}),
    ("engine openvino bf16", {"backend": "openvino", "precision": "bf16"}),
    ("engine channels_last bf16", {"backend": "channels_last", "precision": "bf16"}),
)


def usable(kwargs: dict) -> bool:
    from napari_tagan.core.backends import onnx_available, ov

    if kwargs.get("precision") == "bf16" and not cpu_has_native_bf16():
        return False
    if kwargs["backend"] == "openvino":
        return ov.supports(kwargs.get("precision", "fp32"))
    return kwargs["backend"] != "onnx" or onnx_available()


def run_cpu(args: argparse.Namespace) -> None:
    sizes = args.sizes or ([256, 512] if args.quick else [1024, 2048])
    threads = torch.get_num_threads()
    print(f"CPU benchmark: torch {torch.__version__}, {threads} threads, {os.cpu_count()} cores")
    print(f"load average at start: {os.getloadavg()[0]:.1f}")
    peak = matmul_rate()
    print(f"fp32 matmul (4096² · 4096²): {peak / 1e9:.1f} GFLOP/s")
    model = load_model(args.model).to("cpu").eval() if args.model else build_model()
    fpp = flops_per_pixel(model)
    print(f"G+S FLOPs per pixel (FlopCounterMode): {fpp / 1e6:.3f} MFLOP")
    print(f"start-up (fresh interpreter, imports): {startup_seconds():.2f} s")
    variants = [(name, kw) for name, kw in VARIANTS if usable(kw)]
    for _name, kw in variants:  # warm-up: exports, compiles of small shapes
        predict(model, make_image(64), **kw)
    for side in sizes:
        image = make_image(side)
        x = normalized(model, image)
        mp = side * side / 1e6
        t_ref, g_ref = reference(model, x, "cpu")
        rows = [("eager reference (no_grad, whole image)", t_ref, 0.0, "")]
        for name, kw in variants:  # round robin: every variant once per size, in turn
            start = time.perf_counter()
            result = predict(model, image, device="cpu", **kw)
            t = time.perf_counter() - start
            diff = float(np.abs(sted_network_units(result) - g_ref).max())
            meta = result.metadata
            rows.append((name, t, diff, f"tile {meta['tile']['generator']}"))
        for name, t, diff, extra in rows:
            print(
                f"{side}² {name}: {t:.1f} s, {t_ref / t:.2f}x reference, "
                f"{fpp * mp * 1e6 / t / 1e9:.0f} GFLOP/s, max |Δ| G vs reference {diff:.1e} "
                f"{extra}",
                flush=True,
            )
    best = variants[0][1]["backend"] if variants else "eager"
    with tempfile.TemporaryDirectory() as folder:
        for side in sizes:
            times = stages(model, side, best, folder)
            total = sum(times.values())
            overhead = total - times["tiles (networks)"] - times["export/compile"]
            parts = ", ".join(f"{k} {v:.2f} s" for k, v in times.items())
            print(
                f"{side}² stages ({best}): {parts} | total {total:.1f} s, non-network "
                f"(without the one-off export) {overhead / total:.1%}",
                flush=True,
            )
    tiled_vs_whole(model, sizes[0])
    if cpu_has_native_bf16():
        bf16_quality(model, args.quality_size)
    if args.rss_size:
        run_rss(args.rss_size)


def tiled_vs_whole(model: TAGANModel, side: int) -> None:
    """Forced tiles against the whole image (same backend) at ``side``²."""
    image = make_image(side, seed=2)
    whole = predict(model, image, device="cpu")
    tile = side // 3
    backend = whole.metadata["backend"]
    tiled = predict(model, image, device="cpu", tile=tile, backend=backend)
    full = predict(model, image, device="cpu", tile=tile, backend=backend, halo="full")
    d_full = float(np.abs(sted_network_units(full) - sted_network_units(whole)).max())
    d_sted = float(np.abs(sted_network_units(tiled) - sted_network_units(whole)).max())
    d_seg = float(np.abs(tiled.segmentation - whole.segmentation).max())
    print(
        f"tiled ({tile}-px cores, halos {tiled.metadata['halo']}) vs whole at {side}²: "
        f"max |Δ| STED {d_sted:.2e} (network units), segmentation {d_seg:.2e} (probability); "
        f"with the receptive-field halos {full.metadata['halo']}: STED {d_full:.2e}",
        flush=True,
    )


def bf16_quality(model: TAGANModel, side: int) -> None:
    """bf16 against fp32 on the simulated axons sample: deviation next to the mc std
    (4 dropout generations, fp32), and Dice between the fp32 and bf16 masks (> 0.5)."""
    from napari_tagan.core.simulate import simulate

    image = simulate("axons", (side, side), seed=0).confocal
    exact = predict(model, image, device="cpu")
    mc = predict(model, image, device="cpu", mode="mc", generations=4, seed=1)
    for backend in ("openvino", "channels_last"):
        mixed = predict(model, image, device="cpu", precision="bf16", backend=backend)
        d = np.abs(mixed.synthetic_sted - exact.synthetic_sted)
        a, b = exact.segmentation > 0.5, mixed.segmentation > 0.5
        dice = 2 * (a & b).sum() / max(1, a.sum() + b.sum())
        print(
            f"bf16 ({backend}) vs fp32 on the axons sample {side}²: STED |Δ| mean "
            f"{d.mean():.3g} / max {d.max():.3g} vs mc std mean {mc.variability.mean():.3g} "
            f"(intensity units); masks Dice {dice:.4f} ({int(a.sum())} / {int(b.sum())} px)",
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
    parser.add_argument("--sizes", type=int, nargs="+", help="image sides (default 1024 2048)")
    parser.add_argument("--quality-size", type=int, default=256, help="side of the bf16 check")
    parser.add_argument("--model", help="a trained .tagan bundle (default: random weights)")
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
