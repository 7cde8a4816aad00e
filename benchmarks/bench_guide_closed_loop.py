"""Simulated closed loop: does acquiring the regions ``propose_regions`` picks pay off?

On the sample-data simulator (axons), a small TA-GAN is trained on the CPU (as the demo
does, smaller). For each held-out field (one per seed) it proposes blocks; "acquiring" K
of them pastes the simulated real STED there, the synthetic STED is trusted elsewhere,
and the error to the full simulated STED is measured. Choices compared for each K:

* guided: :func:`~napari_tagan.core.guide.propose_regions`' ranking (STED variability
  and segmentation disagreement over dropout generations);
* guided, variability only (``seg_weight=0``);
* random: K blocks drawn uniformly (20 draws per field);
* brightest: the K blocks of highest confocal intensity (the live preset's own rule);
* oracle: the K blocks where the synthetic STED is actually worst (unknowable in
  practice; the best any ranking can do).

The synthetic STED is put in the STED's intensity units by a least-squares affine fit
on the whole field (the same for every choice, so only the choice of blocks differs).
The error is the RMSE over the whole field; reported relative to K = 0 (no real STED),
mean ± std over the seeds (fields). It also scores the per-block "rings present" calls
against the simulator's truth, confident calls apart from uncertain ones.

Run: ``PYTHONPATH=src python benchmarks/bench_guide_closed_loop.py [--seeds 3]
[--iterations 200] [--figure docs/images/guide_closed_loop.png]`` (about 5 min on 2
shared cores).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from napari_tagan.core import NormalizationSpec, TAGANModel, preset_config
from napari_tagan.core.guide import block_means, propose_regions
from napari_tagan.core.simulate import simulate
from napari_tagan.core.training import Trainer, TrainerCallbacks, dataset_from_arrays

KS = (0, 1, 2, 4, 8, 12, 16, 24, 32)
RANDOM_DRAWS = 20


def train_model(args: argparse.Namespace, out: Path) -> TAGANModel:
    """A small axons model on simulated pairs (percentile normalization, as the demo)."""
    train = [simulate("axons", (128, 128), seed=i) for i in range(args.n_train)]
    batches_per_epoch = -(-args.n_train // 4)
    epochs = max(2, -(-args.iterations // batches_per_epoch))
    config = preset_config(
        "axons",
        normalization=NormalizationSpec(kind="percentile"),
        ngf=args.ngf,
        nsf=args.ngf,
        ndf=args.ngf,
        batch_size=4,
        lr_policy="linear",
        niter=epochs // 2,
        niter_decay=epochs - epochs // 2,
    )
    data = dataset_from_arrays(
        config, [s.confocal for s in train], [s.sted for s in train], [s.masks for s in train]
    )
    torch.manual_seed(0)
    model = TAGANModel.from_config(config, with_discriminator=True)
    t0 = time.perf_counter()

    def on_iteration(it: int, total: int, terms: dict[str, float], lr: float) -> None:
        if it % 50 == 0 or it == total:
            print(f"  iteration {it}/{total} [{time.perf_counter() - t0:.0f} s]", flush=True)

    Trainer(
        model,
        data,
        None,
        output_dir=out,
        iterations=args.iterations,
        crop_size=64,
        device="cpu",
        seed=0,
        overwrite=True,
        callbacks=TrainerCallbacks(on_iteration=on_iteration),
    ).run()
    if args.save_model is not None:
        from napari_tagan.core import save_bundle

        save_bundle(model, args.save_model)
    return model.eval()


def affine(x: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``a·x + b`` fitted to ``reference`` by least squares."""
    a, b = np.polyfit(x.ravel().astype(np.float64), reference.ravel().astype(np.float64), 1)
    return a * x + b


def block_errors(synthetic: np.ndarray, sted: np.ndarray, block: tuple[int, int]) -> np.ndarray:
    """Sum of squared errors of each block (row-major order)."""
    return (block_means((synthetic - sted) ** 2, block) * block[0] * block[1]).ravel()


def curve(order: np.ndarray, sse: np.ndarray, total_px: int) -> np.ndarray:
    """RMSE of the field after acquiring the first K blocks of ``order``, for each K."""
    total = sse.sum()
    return np.array([np.sqrt(max(0.0, total - sse[order[:k]].sum()) / total_px) for k in KS])


def run_field(model: TAGANModel, seed: int, args: argparse.Namespace) -> dict[str, np.ndarray]:
    """All choices' error curves (relative to K = 0) for one simulated field."""
    sample = simulate("axons", (args.size, args.size), seed=10_000 + seed)
    proposal = propose_regions(
        model,
        sample.confocal,
        budget=1,
        block_um=args.block_um,
        pixel_size_um=sample.pixel_size_um,
        generations=args.generations,
        seed=seed,
        device="cpu",
    )
    block = proposal.block_px
    ny = -(-args.size // block[0])
    nx = -(-args.size // block[1])

    def flat(r) -> int:
        return (r.y0 // block[0]) * nx + r.x0 // block[1]

    sted = sample.sted.astype(np.float64)
    synthetic = affine(proposal.summary.synthetic_sted, sted)
    sse = block_errors(synthetic, sted, block)
    px = sted.size
    base = np.sqrt(sse.sum() / px)
    summary = proposal.summary
    ranked_var = np.argsort(-block_means(summary.variability, block).ravel(), kind="stable")
    rng = np.random.default_rng(seed)
    random = np.mean(
        [curve(rng.permutation(ny * nx), sse, px) for _ in range(RANDOM_DRAWS)], axis=0
    )
    brightness = block_means(sample.confocal.astype(np.float64), block).ravel()
    truth = (block_means(sample.masks[0].astype(np.float64), block) >= 0.02).ravel()
    calls = {flat(r): (r.present[0], r.confidence[0]) for r in proposal.ranked}
    right = np.array([calls[i][0] == truth[i] for i in range(ny * nx)])
    sure = np.array([calls[i][1] >= 0.9 for i in range(ny * nx)])
    return {
        "guided": curve(np.array([flat(r) for r in proposal.ranked]), sse, px) / base,
        "guided (variability only)": curve(ranked_var, sse, px) / base,
        "random": random / base,
        "brightest": curve(np.argsort(-brightness, kind="stable"), sse, px) / base,
        "oracle": curve(np.argsort(-sse, kind="stable"), sse, px) / base,
        "rmse0": np.array([base]),
        "calls": np.array(
            [
                right[sure].mean() if sure.any() else np.nan,
                sure.mean(),
                right[~sure].mean() if (~sure).any() else np.nan,
            ]
        ),
        "blocks": np.array([ny * nx]),
    }


def figure(results: list[dict[str, np.ndarray]], path: Path) -> None:
    """Relative error vs K, mean ± std over fields."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    styles = {
        "guided": ("C0", "-"),
        "guided (variability only)": ("C0", ":"),
        "random": ("C1", "-"),
        "brightest": ("C2", "--"),
        "oracle": ("0.5", "-."),
    }
    for name, (colour, line) in styles.items():
        values = np.stack([r[name] for r in results])
        mean, std = values.mean(0), values.std(0)
        ax.plot(KS, mean, line, color=colour, label=name, marker="o", ms=3)
        ax.fill_between(KS, mean - std, mean + std, color=colour, alpha=0.15, lw=0)
    n_blocks = int(results[0]["blocks"][0])
    ax.set_xlabel(f"regions acquired with real STED, K (of {n_blocks})")
    ax.set_ylabel("field RMSE to the real STED\n(relative to synthetic only)")
    ax.set_title(f"Simulated closed loop (axons), mean ± std over {len(results)} fields")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--save-model", type=Path, help="also save the trained model here")
    parser.add_argument("--n-train", type=int, default=8)
    parser.add_argument("--ngf", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--block-um", type=float, default=0.64)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--figure", type=Path, default=Path("docs/images/guide_closed_loop.png"))
    args = parser.parse_args()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        model = train_model(args, Path(tmp))
    print(
        f"trained {args.iterations} iterations (ngf {args.ngf}) [{time.perf_counter() - t0:.0f} s]"
    )
    results = [run_field(model, seed, args) for seed in range(args.seeds)]
    print(f"{args.seeds} fields {args.size}² [{time.perf_counter() - t0:.0f} s]")
    print("RMSE at K = 0 (synthetic only): " + ", ".join(f"{r['rmse0'][0]:.2f}" for r in results))
    names = ["guided", "guided (variability only)", "random", "brightest", "oracle"]
    print("| K | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for i, k in enumerate(KS):
        cells = []
        for name in names:
            v = np.array([r[name][i] for r in results])
            cells.append(f"{v.mean():.3f} ± {v.std():.3f}")
        print(f"| {k} | " + " | ".join(cells) + " |")
    calls = np.stack([r["calls"] for r in results])
    print(
        "rings present/absent calls vs truth: confident (≥ 0.9) "
        f"{np.nanmean(calls[:, 0]):.2f} right on {calls[:, 1].mean():.0%} of blocks; "
        f"uncertain {np.nanmean(calls[:, 2]):.2f} right"
    )
    figure(results, args.figure)
    print(f"wrote {args.figure} [{time.perf_counter() - t0:.0f} s]")


if __name__ == "__main__":
    main()
