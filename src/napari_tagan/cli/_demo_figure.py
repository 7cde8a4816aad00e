"""The demo's picture: five image panels and the training losses (needs matplotlib)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .demo import Log, fit_affine


def draw_figure(
    path: Path,
    sample: Any,
    got: dict[str, np.ndarray],
    row: dict[str, Any],
    losses: list[tuple[int, dict[str, float]]],
    metrics: dict[str, Any],
    log: Log,
) -> Path | None:
    """Five image panels and the training losses, written atomically as a PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed: no picture (pip install 'napari-tagan[demo]')")
        return None
    from napari_tagan.core.io import atomic_output

    fig, axes = plt.subplots(2, 3, figsize=(12, 8.6), constrained_layout=True)
    for i, (ax, (img, title, vmax)) in enumerate(
        zip(axes.ravel(), _panels(sample, got, row), strict=False)
    ):
        ax.imshow(img, cmap="magma", vmin=0, vmax=vmax)
        if i >= 3:
            ax.contour(sample.masks[0], levels=[0.5], colors="cyan", linewidths=0.8)
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
    _plot_losses(axes.ravel()[-1], losses)
    scale_px = 1.0 / sample.pixel_size_um  # 1 µm bar
    axes[0, 0].plot([10, 10 + scale_px], [sample.confocal.shape[0] - 10] * 2, "w-", lw=3)
    name = sample.class_names[0]
    mt, mc = metrics["tagan"], metrics["confocal"]
    fig.suptitle(
        f"{len(metrics['heldout'])} held-out images — TA-GAN: PSNR {mt['psnr']:.1f} dB, "
        f"SSIM {mt['ssim']:.2f}, {name} Dice {mt['dice']:.2f} | confocal: PSNR "
        f"{mc['psnr']:.1f} dB, SSIM {mc['ssim']:.2f} | Dice of S on real STED "
        f"{metrics['real_sted']['dice']:.2f}, of the whole structure "
        f"{metrics['whole_structure']['dice']:.2f}\n(cyan: true {name} regions)",
        fontsize=10,
    )
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return path


def _panels(
    sample: Any, got: dict[str, np.ndarray], row: dict[str, Any]
) -> list[tuple[np.ndarray, str, float | None]]:
    """(image, title, display maximum) of the five image panels."""
    hi = float(np.percentile(sample.sted, 99.8))
    t, c = row["tagan"], row["confocal"]
    return [
        (sample.confocal, f"confocal (PSNR {c['psnr']:.1f} dB, SSIM {c['ssim']:.2f})", None),
        (
            # Shown on the real STED's scale (the gain and offset the scores allow).
            fit_affine(got["synthetic_sted"], sample.sted),
            f"TA-GAN synthetic STED (PSNR {t['psnr']:.1f} dB, SSIM {t['ssim']:.2f})",
            hi,
        ),
        (sample.sted, "real STED (simulated)", hi),
        (got["segmentation"][0], f"S on synthetic STED (Dice {t['dice']:.2f})", 1.0),
        (got["seg_sted"][0], f"S on real STED (Dice {row['real_sted']['dice']:.2f})", 1.0),
    ]


def _plot_losses(ax: Any, losses: list[tuple[int, dict[str, float]]]) -> None:
    if not losses:
        return
    its = [it for it, _ in losses]
    for key in ("D", "G", "S"):
        if key in losses[0][1]:
            ax.plot(its, [terms[key] for _, terms in losses], label=key, lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_title("training losses", fontsize=10)
    ax.legend()
