"""``napari-tagan train``: trains, stops, resumes, fine-tunes; errors are one line."""

from __future__ import annotations

import csv

import pytest

from napari_tagan.cli import main
from napari_tagan.core import read_bundle
from napari_tagan.core.simulate import write_dataset

TINY = ["--set", "ngf=4", "--set", "nsf=4", "--set", "ndf=4"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return write_dataset(root, "axons", n_train=4, n_valid=1, shape=(48, 48), seed=0)


def rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_cli_trains_then_resumes(dataset, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--data", str(dataset), "--preset", "axons", "--output", str(out)]
    common = ["--batch-size", "2", "--crop", "32", "--validate-every", "2", "--no-progress"]
    assert main([*args, "--iterations", "3", *common, *TINY, "--set", "lambda_seg=5"]) == 0
    assert "finished at iteration 3/3" in capsys.readouterr().out
    cfg = read_bundle(out / "latest.tagan").model.config
    assert (cfg.ngf, cfg.lambda_seg, cfg.batch_size, cfg.crop_size) == (4, 5.0, 2, 32)
    metrics = rows(out / "metrics.csv")
    assert [r["iteration"] for r in metrics] == ["0", "2", "3"]
    assert {"psnr", "ssim", "dice"} <= set(metrics[0])

    # Starting again in the same folder is refused; --resume extends the run.
    assert main([*args, "--iterations", "3", *common, *TINY]) == 2
    assert "already holds a training run" in capsys.readouterr().err
    resume = ["train", "--data", str(dataset), "--output", str(out), "--resume"]
    assert main([*resume, "--iterations", "5", "--no-progress"]) == 0
    losses = rows(out / "losses.csv")
    assert [r["iteration"] for r in losses] == ["1", "2", "3", "4", "5"]
    assert {"D", "G_GAN", "G_seg", "G", "S", "lr"} <= set(losses[0])
    assert (out / "best.tagan").is_file()
    assert read_bundle(out / "latest.tagan").training_state["iteration"] == 5

    # Fine-tune from the result into a new folder, with epochs.
    ft = tmp_path / "ft"
    fine = ["train", "--data", str(dataset), "--from", str(out / "latest.tagan")]
    assert main([*fine, "--output", str(ft), "--epochs", "1", "--no-progress"]) == 0
    assert read_bundle(ft / "latest.tagan").training_state["iteration"] == 2  # 4 samples / 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--set", "nonsense=1"], "no such config field"),
        (["--set", "ngf"], "KEY=VALUE"),
        (["--preset", "nope"], "unknown preset"),
        (["--resume"], "drop --from/--preset/--set"),
    ],
)
def test_cli_errors_are_one_line(dataset, tmp_path, capsys, extra, message):
    argv = ["train", "--data", str(dataset), "--output", str(tmp_path / "o"), "--no-progress"]
    if "--preset" not in extra:
        argv += ["--preset", "axons"]
    assert main([*argv, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_cli_missing_data(tmp_path, capsys):
    argv = ["train", "--data", str(tmp_path / "none"), "--preset", "axons"]
    assert main([*argv, "--output", str(tmp_path / "o")]) == 2
    assert "not found" in capsys.readouterr().err
