"""The README demo: simulate axons, train a small TA-GAN on CPU, enhance a held-out image.

Headless (no Qt). ``napari-tagan demo`` runs :func:`run_demo`; the figure needs
matplotlib (the ``demo`` extra) and is skipped with a note when it is missing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

Log = Callable[[str], None]


@dataclass
class DemoSettings:
    """Sizes of the demo run; the defaults take a few minutes on a 2-core CPU."""

    structure: str = "axons"
    n_train: int = 16
    n_valid: int = 4
    train_size: int = 128
    test_size: int = 256
    iterations: int = 400
    batch_size: int = 4
    crop_size: int = 96
    ngf: int = 16
    seed: int = 0
    device: str = "auto"


@dataclass
class DemoResult:
    """Paths written and the figures measured on the held-out image."""

    output: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)


def _fit_affine(x: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Least-squares ``a·x + b`` to the reference: compares structure, not photon budgets."""
    a, b = np.polyfit(x.ravel().astype(np.float64), reference.ravel().astype(np.float64), 1)
    return (a * x + b).astype(np.float32)


def image_scores(candidate: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """PSNR/SSIM of ``candidate`` (affinely matched) against ``reference``."""
    from napari_tagan.core.metrics import psnr, ssim

    matched = _fit_affine(candidate, reference)
    data_range = float(reference.max() - reference.min())
    return {
        "psnr": psnr(matched, reference, data_range),
        "ssim": ssim(matched, reference, data_range),
    }


def run_demo(
    output: str | Path, settings: DemoSettings | None = None, *, log: Log = print
) -> DemoResult:
    """Simulate, train, enhance, score, and write results and a picture to ``output``."""
    import tifffile
    import torch

    from napari_tagan.core import TAGANModel, predict, preset_config
    from napari_tagan.core.io import atomic_output
    from napari_tagan.core.metrics import dice_iou
    from napari_tagan.core.predict import finish, network_mode, prepare_input
    from napari_tagan.core.simulate import simulate
    from napari_tagan.core.training import (
        Trainer,
        TrainerCallbacks,
        dataset_from_arrays,
    )

    s = settings or DemoSettings()
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    def make(n: int, size: int, offset: int) -> list[Any]:
        return [simulate(s.structure, (size, size), seed=s.seed + offset + i) for i in range(n)]

    train = make(s.n_train, s.train_size, 0)
    valid = make(s.n_valid, s.train_size, 1000)
    (test,) = make(1, s.test_size, 2000)
    log(
        f"simulated {len(train)} training and {len(valid)} validation {s.structure} pairs "
        f"({s.train_size}²) and one held-out {s.test_size}² image "
        f"[{time.perf_counter() - t0:.1f} s]"
    )

    config = preset_config(s.structure, ngf=s.ngf, nsf=s.ngf, ndf=s.ngf, batch_size=s.batch_size)

    def dataset(samples: list[Any]) -> Any:
        return dataset_from_arrays(
            config,
            [x.confocal for x in samples],
            [x.sted for x in samples],
            [x.masks for x in samples],
        )

    torch.manual_seed(s.seed)
    model = TAGANModel.from_config(config, with_discriminator=True)
    losses: list[tuple[int, dict[str, float]]] = []
    validations: list[tuple[int, dict[str, float]]] = []
    every = max(1, s.iterations // 10)

    def on_iteration(it: int, total: int, terms: dict[str, float], lr: float) -> None:
        losses.append((it, dict(terms)))
        if it % every == 0 or it == total:
            shown = ", ".join(f"{k} {v:.3f}" for k, v in terms.items() if k in ("D", "G", "S"))
            log(f"  iteration {it}/{total}: {shown} [{time.perf_counter() - t0:.0f} s]")

    trainer = Trainer(
        model,
        dataset(train),
        dataset(valid),
        output_dir=out / "training",
        iterations=s.iterations,
        crop_size=s.crop_size,
        device=s.device,
        seed=s.seed,
        validate_every=max(1, s.iterations // 4),
        callbacks=TrainerCallbacks(
            on_iteration=on_iteration,
            on_validation=lambda it, m: validations.append((it, dict(m))),
        ),
        overwrite=True,
    )
    size = f"ngf={s.ngf}, batch {s.batch_size}, crop {s.crop_size}"
    log(f"training {s.iterations} iterations ({size})")
    summary = trainer.run()
    train_seconds = time.perf_counter() - t0

    result = predict(model.eval(), test.confocal, device=s.device)
    sted_hat = result.synthetic_sted
    truth = test.masks
    seg = result.segmentation
    assert seg is not None
    # Baseline: the confocal itself, and S applied to it (S was trained on real STED).
    x, stats, _ = prepare_input(model, test.confocal)
    with network_mode(model, "eval") as net, torch.inference_mode():
        seg_conf = net.segmenter(torch.from_numpy(x)[None].to(model.device))
    _, seg_conf_prob = finish(model, x, seg_conf[0].float().cpu().numpy(), stats)

    metrics = {
        "tagan": {
            **image_scores(sted_hat, test.sted),
            "dice": dice_iou(seg > 0.5, truth)[0],
        },
        "confocal": {
            **image_scores(test.confocal, test.sted),
            "dice": dice_iou(seg_conf_prob > 0.5, truth)[0],
        },
        "training": {
            "iterations": summary.iterations,
            "seconds": round(train_seconds, 1),
            "validations": [{"iteration": it, **m} for it, m in validations],
        },
        "settings": asdict(s),
    }
    files = []
    px = test.pixel_size_um
    for name, array in (
        ("heldout_confocal", test.confocal),
        ("heldout_sted_truth", test.sted),
        ("heldout_synthetic_sted", sted_hat),
        ("heldout_segmentation", seg),
        ("heldout_masks_truth", truth.astype(np.uint8)),
    ):
        path = out / f"{name}.tif"
        with atomic_output(path) as tmp:
            tifffile.imwrite(
                tmp,
                np.asarray(array),
                imagej=True,
                resolution=(1 / px, 1 / px),
                metadata={"unit": "um"},
            )
        files.append(path)
    metrics_path = out / "metrics.json"
    metrics_path.write_text(json.dumps(metrics, indent=2, default=float))
    files.append(metrics_path)
    figure = _figure(out / "demo.png", test, sted_hat, seg, losses, metrics, log)
    if figure is not None:
        files.append(figure)
    t, c = metrics["tagan"], metrics["confocal"]
    log(
        f"held-out {s.test_size}² image — TA-GAN: PSNR {t['psnr']:.2f} dB, SSIM {t['ssim']:.3f}, "
        f"Dice {t['dice']:.3f} | confocal: PSNR {c['psnr']:.2f} dB, SSIM {c['ssim']:.3f}, "
        f"Dice (S on confocal) {c['dice']:.3f}"
    )
    log(f"wrote {len(files)} files to {out} [{time.perf_counter() - t0:.0f} s in all]")
    return DemoResult(out, metrics, files)


def _figure(
    path: Path,
    sample: Any,
    sted_hat: np.ndarray,
    seg: np.ndarray,
    losses: list[tuple[int, dict[str, float]]],
    metrics: dict[str, Any],
    log: Log,
) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed: no picture (pip install 'napari-tagan[demo]')")
        return None
    from napari_tagan.core.io import atomic_output

    fig, axes = plt.subplots(2, 3, figsize=(12, 8.2), constrained_layout=True)
    hi = float(np.percentile(sample.sted, 99.8))
    t, c = metrics["tagan"], metrics["confocal"]
    panels = [
        (sample.confocal, f"confocal (PSNR {c['psnr']:.1f} dB, SSIM {c['ssim']:.2f})", None),
        (sted_hat, f"TA-GAN synthetic STED (PSNR {t['psnr']:.1f} dB, SSIM {t['ssim']:.2f})", hi),
        (sample.sted, "real STED (simulated)", hi),
        (seg[0], f"S on synthetic STED (Dice {t['dice']:.2f})", 1.0),
        (sample.masks[0], f"true {sample.class_names[0]} regions", 1.0),
    ]
    for ax, (img, title, vmax) in zip(axes.ravel(), panels, strict=False):
        ax.imshow(img, cmap="magma", vmin=0, vmax=vmax)
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
    ax = axes.ravel()[-1]
    if losses:
        its = [it for it, _ in losses]
        for key in ("D", "G", "S"):
            if key in losses[0][1]:
                ax.plot(its, [terms[key] for _, terms in losses], label=key, lw=1)
        ax.set_yscale("log")
        ax.set_xlabel("iteration")
        ax.set_title("training losses", fontsize=10)
        ax.legend()
    scale_px = 1.0 / sample.pixel_size_um  # 1 µm bar
    axes[0, 0].plot([10, 10 + scale_px], [sample.confocal.shape[0] - 10] * 2, "w-", lw=3)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return path
