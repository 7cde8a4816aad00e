"""The README's picture of simulated pairs: confocal, STED and ground truth per structure.

    python scripts/figure_simulated_pairs.py [OUTPUT.png]

Needs matplotlib (the ``demo`` extra). Writes ``docs/images/simulated-pairs.png`` by default.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from napari_tagan.core.io import atomic_output
from napari_tagan.core.simulate import simulate

STRUCTURES = ("axons", "dendrites", "nanodomains", "saureus")
SIZE = 256
SCALE_BAR_NM = 1000.0


def _stretch(image: np.ndarray) -> np.ndarray:
    low, high = np.percentile(image, (0.5, 99.8))
    return np.clip((image - low) / max(high - low, 1e-6), 0, 1)


def _scale_bar(ax, pixel_nm: float) -> None:
    length = SCALE_BAR_NM / pixel_nm
    ax.plot([SIZE - 12 - length, SIZE - 12], [SIZE - 12, SIZE - 12], color="white", lw=3)


def main(output: Path) -> None:
    """Simulate one sample per structure and draw the three panels of each."""
    fig, axes = plt.subplots(len(STRUCTURES), 3, figsize=(9, 3 * len(STRUCTURES)))
    for row, structure in zip(axes, STRUCTURES, strict=True):
        sample = simulate(structure, shape=(SIZE, SIZE), seed=3)
        first = "brightfield" if structure == "saureus" else "confocal"
        second = "super-resolution" if structure == "saureus" else "STED"
        truth = np.zeros((SIZE, SIZE, 3))
        colours = ((1.0, 0.3, 0.3), (0.3, 0.8, 1.0))
        for k, mask in enumerate(sample.masks):
            truth[mask > 0] = colours[k % 2]
        panels = (
            (_stretch(sample.confocal.astype(np.float32)), f"{structure}: {first}"),
            (_stretch(sample.sted.astype(np.float32)), second),
            (truth, "truth: " + ", ".join(sample.class_names)),
        )
        for ax, (image, title) in zip(row, panels, strict=True):
            ax.imshow(image, cmap="magma" if image.ndim == 2 else None, interpolation="nearest")
            ax.set_title(title, fontsize=10)
            ax.set_axis_off()
        _scale_bar(row[0], sample.pixel_size_nm)
    fig.suptitle(f"Simulated pairs ({SIZE}², scale bar 1 µm), napari_tagan.core.simulate")
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(output) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    print(f"wrote {output}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/images/simulated-pairs.png"))
