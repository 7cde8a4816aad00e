"""``napari-tagan demo``: simulate axons, train a small TA-GAN on CPU, enhance held-out images.

Headless (no Qt). :func:`run_demo` runs it in steps (simulate, train, enhance, score,
write); the figure needs matplotlib (the ``demo`` extra) and is skipped with a note when
it is missing.
"""

from __future__ import annotations

import argparse
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
    """Sizes of the demo run; the defaults take a few minutes on a small CPU."""

    structure: str = "axons"
    n_train: int = 16
    n_valid: int = 4
    n_test: int = 4
    train_size: int = 128
    test_size: int = 256
    iterations: int = 700
    batch_size: int = 4
    crop_size: int = 96
    ngf: int = 16
    seed: int = 0
    device: str = "auto"
    amp: bool = False


@dataclass
class DemoResult:
    """Paths written and the figures measured on the held-out images."""

    output: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)


@dataclass
class _Training:
    """What the training step hands on: the model, its summary and the logged curves."""

    model: Any
    iterations: int
    seconds: float
    losses: list[tuple[int, dict[str, float]]]
    validations: list[tuple[int, dict[str, float]]]


def add_parser(sub: argparse._SubParsersAction) -> None:  # noqa: D103
    d = DemoSettings()
    p = sub.add_parser(
        "demo",
        help="simulate axons, train a small model on them, enhance a held-out image",
        description=(
            "The one-command demo: simulated confocal/STED axons with ring masks, a small "
            "TA-GAN trained on CPU for a few minutes, then held-out images enhanced and "
            "scored (PSNR/SSIM against the simulated STED, Dice against the masks) next to "
            "the confocal, with the Dice of S on the real STED as an upper bound. Writes "
            "TIFFs, metrics.json and demo.png."
        ),
    )
    p.add_argument("--output", default="demo-output", help="folder to write (default demo-output)")
    p.add_argument("--iterations", type=int, default=d.iterations)
    p.add_argument("--ngf", type=int, default=d.ngf, help="filters of G, S and D")
    p.add_argument("--train", type=int, default=d.n_train, help="training images")
    p.add_argument("--valid", type=int, default=d.n_valid, help="validation images")
    p.add_argument("--size", type=int, default=d.train_size, help="training image side")
    p.add_argument("--test", type=int, default=d.n_test, help="held-out images")
    p.add_argument("--test-size", type=int, default=d.test_size, help="held-out image side")
    p.add_argument("--crop", type=int, default=d.crop_size)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--amp", action="store_true", help="train in mixed precision (see napari-tagan train)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:  # noqa: D103
    settings = DemoSettings(
        iterations=args.iterations,
        ngf=args.ngf,
        n_train=args.train,
        n_valid=args.valid,
        n_test=args.test,
        train_size=args.size,
        test_size=args.test_size,
        crop_size=args.crop,
        batch_size=args.batch_size,
        device=args.device,
        seed=args.seed,
        amp=args.amp,
    )
    run_demo(args.output, settings)
    return 0


# --- scores ------------------------------------------------------------------------------


def fit_affine(x: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Least-squares ``a·x + b`` to the reference: compares structure, not photon budgets."""
    a, b = np.polyfit(x.ravel().astype(np.float64), reference.ravel().astype(np.float64), 1)
    return (a * x + b).astype(np.float32)


def image_scores(candidate: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """PSNR/SSIM of ``candidate`` (affinely matched) against ``reference``."""
    from napari_tagan.core.metrics import psnr, ssim

    matched = fit_affine(candidate, reference)
    data_range = float(reference.max() - reference.min())
    return {
        "psnr": psnr(matched, reference, data_range),
        "ssim": ssim(matched, reference, data_range),
    }


def otsu_foreground(image: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    """Pixels above Otsu's threshold of the smoothed image: the structure, ring or not."""
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(np.asarray(image, np.float64), sigma)
    counts, edges = np.histogram(smooth, bins=256)
    centres = 0.5 * (edges[1:] + edges[:-1])
    w0 = np.cumsum(counts)[:-1].astype(np.float64)
    w1 = w0[-1] + counts[-1] - w0
    m0 = np.cumsum(counts * centres)[:-1] / np.maximum(w0, 1)
    m1 = (np.sum(counts * centres) - np.cumsum(counts * centres)[:-1]) / np.maximum(w1, 1)
    k = int(np.argmax(w0 * w1 * (m0 - m1) ** 2))
    return smooth > edges[k + 1]


def _pooled_dice(predictions: list[np.ndarray], truths: list[np.ndarray]) -> float:
    """Dice over all held-out pixels together (counts summed, as in validation)."""
    from napari_tagan.core.metrics import dice_iou_from_counts, overlap_counts

    counts = [overlap_counts(p, t) for p, t in zip(predictions, truths, strict=True)]
    return dice_iou_from_counts(*(sum(c[i] for c in counts) for i in range(3)))[0]


# --- the steps ---------------------------------------------------------------------------


def run_demo(
    output: str | Path, settings: DemoSettings | None = None, *, log: Log = print
) -> DemoResult:
    """Simulate, train, enhance, score, and write results and a picture to ``output``.

    Training uses the preset's networks and losses with two changes for a short run:
    the learning rate is constant for the first half of the iterations and decays
    linearly to zero over the second half (the original's ``niter``/``niter_decay``
    schedule, in epochs of the small training set), without which S in eval mode
    (running BatchNorm statistics) swings from good to useless between validations; and
    intensities are normalized by percentiles, because the simulated STED's photon
    counts fill only a quarter of the preset's 8-bit ("legacy8") range. The model of the
    last iteration is scored; nothing is selected on the held-out images.
    """
    from napari_tagan.core.errors import InputError

    from ._demo_figure import draw_figure

    s = settings or DemoSettings()
    if min(s.n_train, s.n_test) < 1 or s.n_valid < 0:
        raise InputError(
            f"the demo needs training and held-out images (got {s.n_train} and {s.n_test})"
        )
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    train, valid, tests = _simulate(s, log, t0)
    training = _train(s, train, valid, out / "training", log, t0)
    outputs = [_enhance(training.model, test, s.device) for test in tests]
    rows = [_scores(test, got) for test, got in zip(tests, outputs, strict=True)]
    metrics = _metrics(s, tests, outputs, rows, training)
    # The held-out image with the most ring area is written and drawn.
    k = int(np.argmax([r["ring_fraction"] for r in rows]))
    files = _write_heldout(out, tests[k], outputs[k], metrics)
    figure = draw_figure(
        out / "demo.png", tests[k], outputs[k], rows[k], training.losses, metrics, log
    )
    if figure is not None:
        files.append(figure)
    _log_summary(log, s, metrics, len(tests))
    log(f"wrote {len(files)} files to {out} [{time.perf_counter() - t0:.0f} s in all]")
    return DemoResult(out, metrics, files)


def _simulate(s: DemoSettings, log: Log, t0: float) -> tuple[list[Any], list[Any], list[Any]]:
    """Training, validation and held-out samples (disjoint seeds)."""
    from napari_tagan.core.simulate import simulate

    def make(n: int, size: int, offset: int) -> list[Any]:
        return [simulate(s.structure, (size, size), seed=s.seed + offset + i) for i in range(n)]

    train = make(s.n_train, s.train_size, 0)
    valid = make(s.n_valid, s.train_size, 1000)
    tests = make(s.n_test, s.test_size, 2000)
    log(
        f"simulated {len(train)} training and {len(valid)} validation {s.structure} pairs "
        f"({s.train_size}²) and {len(tests)} held-out {s.test_size}² images "
        f"[{time.perf_counter() - t0:.1f} s]"
    )
    return train, valid, tests


def _demo_config(s: DemoSettings) -> Any:
    """The preset with the demo's widths, percentile normalization and linear decay."""
    from napari_tagan.core import NormalizationSpec, preset_config

    epochs = max(1, -(-s.iterations // -(-s.n_train // s.batch_size)))
    return preset_config(
        s.structure,
        normalization=NormalizationSpec(kind="percentile"),
        ngf=s.ngf,
        nsf=s.ngf,
        ndf=s.ngf,
        batch_size=s.batch_size,
        lr_policy="linear",
        niter=epochs // 2,
        niter_decay=epochs - epochs // 2,
    )


def _train(
    s: DemoSettings, train: list[Any], valid: list[Any], folder: Path, log: Log, t0: float
) -> _Training:
    """Train a new model on the simulated pairs; log the losses ten times."""
    import torch

    from napari_tagan.core import TAGANModel
    from napari_tagan.core.training import Trainer, TrainerCallbacks, dataset_from_arrays

    config = _demo_config(s)

    def dataset(samples: list[Any]) -> Any:
        return dataset_from_arrays(
            config,
            [x.confocal for x in samples],
            [x.sted for x in samples],
            [x.masks for x in samples],
        )

    torch.manual_seed(s.seed)
    model = TAGANModel.from_config(config, with_discriminator=True)
    done = _Training(model, 0, 0.0, [], [])
    every = max(1, s.iterations // 10)

    def on_iteration(it: int, total: int, terms: dict[str, float], lr: float) -> None:
        done.losses.append((it, dict(terms)))
        if it % every == 0 or it == total:
            shown = ", ".join(f"{k} {v:.3f}" for k, v in terms.items() if k in ("D", "G", "S"))
            log(
                f"  iteration {it}/{total}: {shown}, lr {lr:.1e} "
                f"[{time.perf_counter() - t0:.0f} s]"
            )

    trainer = Trainer(
        model,
        dataset(train),
        dataset(valid) if valid else None,
        output_dir=folder,
        iterations=s.iterations,
        crop_size=s.crop_size,
        device=s.device,
        amp=s.amp,
        seed=s.seed,
        validate_every=max(1, s.iterations // 4),
        callbacks=TrainerCallbacks(
            on_iteration=on_iteration,
            on_validation=lambda it, m: done.validations.append((it, dict(m))),
        ),
        overwrite=True,
    )
    size = f"ngf={s.ngf}, batch {s.batch_size}, crop {s.crop_size}"
    if trainer.amp_name is not None:
        size += f", {trainer.amp_name} mixed precision"
    log(f"training {s.iterations} iterations ({size})")
    done.iterations = trainer.run().iterations
    done.seconds = time.perf_counter() - t0
    model.eval()
    return done


def _enhance(model: Any, test: Any, device: str) -> dict[str, np.ndarray]:
    """G and S on a held-out confocal, and S alone on the confocal and the real STED."""
    from napari_tagan.core.prediction import predict, segment

    result = predict(model, test.confocal, device=device)
    assert result.segmentation is not None
    return {
        "synthetic_sted": result.synthetic_sted,
        "segmentation": result.segmentation,
        "seg_confocal": segment(model, test.confocal),
        "seg_sted": segment(model, test.sted),
        "foreground": otsu_foreground(test.confocal)[None],
    }


def _scores(test: Any, got: dict[str, np.ndarray]) -> dict[str, Any]:
    """Per-image scores of TA-GAN, the confocal and S on the real STED."""
    truth = test.masks
    return {
        "seed": test.seed,
        "ring_fraction": float(truth.mean()),
        "tagan": {
            **image_scores(got["synthetic_sted"], test.sted),
            "dice": _pooled_dice([got["segmentation"] > 0.5], [truth]),
        },
        "confocal": image_scores(test.confocal, test.sted),
        "real_sted": {"dice": _pooled_dice([got["seg_sted"] > 0.5], [truth])},
    }


def _metrics(
    s: DemoSettings,
    tests: list[Any],
    outputs: list[dict[str, np.ndarray]],
    rows: list[dict[str, Any]],
    training: _Training,
) -> dict[str, Any]:
    """Means over the held-out images (Dice pooled over their pixels) and the run's facts."""
    truths = [t.masks for t in tests]

    def dice_of(key: str) -> float:
        return _pooled_dice([o[key] > 0.5 for o in outputs], truths)

    def mean_of(who: str, what: str) -> float:
        return float(np.mean([r[who][what] for r in rows]))

    return {
        "tagan": {
            "psnr": mean_of("tagan", "psnr"),
            "ssim": mean_of("tagan", "ssim"),
            "dice": dice_of("segmentation"),
        },
        "confocal": {
            "psnr": mean_of("confocal", "psnr"),
            "ssim": mean_of("confocal", "ssim"),
            "dice": dice_of("seg_confocal"),
        },
        "real_sted": {"dice": dice_of("seg_sted")},
        "whole_structure": {"dice": dice_of("foreground")},
        "heldout": rows,
        "training": {
            "iterations": training.iterations,
            "seconds": round(training.seconds, 1),
            "validations": [{"iteration": it, **m} for it, m in training.validations],
        },
        "settings": asdict(s),
    }


def _write_heldout(
    out: Path, test: Any, got: dict[str, np.ndarray], metrics: dict[str, Any]
) -> list[Path]:
    """The drawn held-out image's inputs, truths and results as TIFFs, and metrics.json."""
    import tifffile

    from napari_tagan.core.io import atomic_output

    files = []
    px = test.pixel_size_um
    for name, array in (
        ("heldout_confocal", test.confocal),
        ("heldout_sted_truth", test.sted),
        ("heldout_synthetic_sted", got["synthetic_sted"]),
        ("heldout_segmentation", got["segmentation"]),
        ("heldout_masks_truth", test.masks.astype(np.uint8)),
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
    with atomic_output(metrics_path) as tmp:
        Path(tmp).write_text(json.dumps(metrics, indent=2, default=float))
    files.append(metrics_path)
    return files


def _log_summary(log: Log, s: DemoSettings, metrics: dict[str, Any], n: int) -> None:
    t, c = metrics["tagan"], metrics["confocal"]
    log(
        f"{n} held-out {s.test_size}² images — TA-GAN: PSNR {t['psnr']:.2f} dB, "
        f"SSIM {t['ssim']:.3f}, Dice {t['dice']:.3f} | confocal: PSNR {c['psnr']:.2f} dB, "
        f"SSIM {c['ssim']:.3f}, Dice (S on confocal) {c['dice']:.3f}"
    )
    log(
        f"  reference Dice: S on the real STED {metrics['real_sted']['dice']:.3f} (upper "
        f"bound), the whole structure {metrics['whole_structure']['dice']:.3f} (no rings "
        "inferred)"
    )
