"""The README demo runs end to end (tiny sizes here; the real run is minutes)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_tagan.cli import main
from napari_tagan.cli.demo import image_scores, otsu_foreground

TINY = ["--iterations", "2", "--ngf", "4", "--train", "2", "--valid", "1", "--size", "48"]
TINY += ["--test", "2", "--test-size", "48", "--crop", "32", "--batch-size", "2"]


def test_demo_writes_results_metrics_and_picture(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--output", str(out), *TINY]) == 0
    log = capsys.readouterr().out
    assert "2 held-out 48² images — TA-GAN: PSNR" in log
    assert "S on the real STED" in log
    metrics = json.loads((out / "metrics.json").read_text())
    for who in ("tagan", "confocal"):
        assert set(metrics[who]) == {"psnr", "ssim", "dice"}
        assert np.isfinite(metrics[who]["psnr"])
        assert 0.0 <= metrics[who]["dice"] <= 1.0
    for who in ("real_sted", "whole_structure"):
        assert 0.0 <= metrics[who]["dice"] <= 1.0
    assert [row["seed"] for row in metrics["heldout"]] == [2000, 2001]
    assert metrics["training"]["iterations"] == 2
    assert metrics["settings"]["n_test"] == 2
    sted = tifffile.imread(out / "heldout_synthetic_sted.tif")
    assert sted.shape == (48, 48) and sted.dtype == np.float32
    with tifffile.TiffFile(out / "heldout_synthetic_sted.tif") as tif:
        assert tif.imagej_metadata["unit"] == "um"
    png = (out / "demo.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert (out / "training" / "latest.tagan").is_file()


def test_demo_without_held_out_images_is_a_user_error(tmp_path, capsys):
    assert main(["demo", "--output", str(tmp_path / "d"), "--test", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "held-out" in err and len(err.splitlines()) == 1


def test_image_scores_ignore_gain_and_offset():
    rng = np.random.default_rng(0)
    reference = rng.random((40, 40)).astype(np.float32)
    same = image_scores(3.0 * reference + 7.0, reference)
    assert same["psnr"] > 60 and same["ssim"] == pytest.approx(1.0, abs=1e-4)
    noisy = image_scores(reference + rng.normal(0, 0.3, reference.shape), reference)
    assert noisy["psnr"] < 25 and noisy["ssim"] < 0.9


def test_otsu_foreground_finds_a_bright_object_on_noise():
    rng = np.random.default_rng(1)
    image = rng.poisson(2.0, (64, 64)).astype(np.float32)
    image[20:40, 10:30] += 30.0
    fg = otsu_foreground(image)
    truth = np.zeros_like(fg)
    truth[20:40, 10:30] = True
    assert (fg & truth).sum() / (fg | truth).sum() > 0.8


@pytest.mark.parametrize("hardware", [True, False])
def test_demo_amp_trains_in_mixed_precision_where_the_cpu_can(
    tmp_path, capsys, monkeypatch, hardware
):
    import napari_tagan.core.device as device_module
    from napari_tagan.core import read_bundle

    # Our own hardware query: both branches on any CPU (bf16 is emulated where it lacks).
    monkeypatch.setattr(device_module, "cpu_has_native_bf16", lambda: hardware)
    out = tmp_path / "demo"
    assert main(["demo", "--output", str(out), "--amp", *TINY]) == 0
    captured = capsys.readouterr()
    state = read_bundle(out / "training" / "latest.tagan").training_state
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["settings"]["amp"] is True
    if hardware:
        assert "bfloat16 mixed precision" in captured.out
        assert state["amp_dtype"] == "bfloat16"
    else:  # one warning line, and the demo goes on in fp32
        warned = [line for line in captured.err.splitlines() if "mixed precision is off" in line]
        assert len(warned) == 1 and warned[0].startswith("napari-tagan demo: warning:")
        assert state["amp_dtype"] is None
    assert np.isfinite(metrics["tagan"]["psnr"])
