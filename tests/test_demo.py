"""The README demo runs end to end (tiny sizes here; the real run is minutes)."""

from __future__ import annotations

import json

import numpy as np
import tifffile

from napari_tagan.cli import main


def test_demo_writes_results_metrics_and_picture(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--output", str(out), "--iterations", "3", "--ngf", "4", "--train", "2"]
    args += ["--size", "48", "--test-size", "64", "--crop", "32", "--batch-size", "2"]
    assert main(args) == 0
    log = capsys.readouterr().out
    assert "held-out 64² image — TA-GAN: PSNR" in log
    metrics = json.loads((out / "metrics.json").read_text())
    for who in ("tagan", "confocal"):
        assert set(metrics[who]) == {"psnr", "ssim", "dice"}
        assert np.isfinite(metrics[who]["psnr"])
    assert metrics["training"]["iterations"] == 3
    sted = tifffile.imread(out / "heldout_synthetic_sted.tif")
    assert sted.shape == (64, 64) and sted.dtype == np.float32
    with tifffile.TiffFile(out / "heldout_synthetic_sted.tif") as tif:
        assert tif.imagej_metadata["unit"] == "um"
    png = (out / "demo.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert (out / "training" / "latest.tagan").is_file()
