"""``napari-tagan train``: trains, stops, resumes, fine-tunes; errors are one line."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time

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


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("ngf=abc", "--set ngf=abc: Input should be a valid integer"),
        ("gan_mode=hinge", "--set gan_mode=hinge: Input should be 'vanilla', 'lsgan' or 'wgangp'"),
        ("lr=-1", "--set lr=-1: Input should be greater than 0"),
        ("input_nc=5", "input_nc must be 1"),
        ("normalization.kind=zscore", "--set normalization.kind=zscore: Input should be"),
        ("normalization.bogus=1", "--set normalization.bogus=1: Extra inputs are not permitted"),
    ],
)
def test_cli_bad_values_are_one_line(dataset, tmp_path, capsys, setting, message):
    argv = ["train", "--data", str(dataset), "--preset", "axons", "--output", str(tmp_path)]
    assert main([*argv, "--set", setting, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "latest.tagan").exists()


def _start(dataset, out, *extra):
    argv = [sys.executable, "-m", "napari_tagan.cli", "train", "--data", str(dataset)]
    argv += ["--preset", "axons", "--output", str(out), "--iterations", "1000", "--no-progress"]
    argv += ["--batch-size", "2", "--crop", "32", "--validate-every", "1000", *TINY, *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    pipe = subprocess.PIPE
    return subprocess.Popen(argv, stdout=pipe, stderr=pipe, text=True, env=env)


def _wait_for(proc, condition, what, timeout=120.0):
    end = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"training exited early ({proc.returncode}): {proc.stderr.read()[-2000:]}")
        if time.monotonic() > end:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.002)


def _logged(path):
    return len(rows(path)) if path.is_file() else 0


def test_cli_ctrl_c_stops_keeps_latest_and_resumes(dataset, tmp_path, capsys):
    out = tmp_path / "run"
    proc = _start(dataset, out)
    _wait_for(proc, lambda: _logged(out / "losses.csv") >= 2, "two iterations")
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-2000:]
    done = read_bundle(out / "latest.tagan").training_state["iteration"]
    assert f"stopped at iteration {done}/1000" in stdout
    assert done >= 2 and _logged(out / "losses.csv") == done

    resume = ["train", "--data", str(dataset), "--output", str(out), "--resume"]
    assert main([*resume, "--iterations", str(done + 2), "--no-progress"]) == 0
    assert f"finished at iteration {done + 2}/{done + 2}" in capsys.readouterr().out
    assert [int(r["iteration"]) for r in rows(out / "losses.csv")] == list(range(1, done + 3))


def test_killed_during_a_checkpoint_write_keeps_the_previous_one(dataset, tmp_path, capsys):
    # A real SIGKILL while latest.tagan is being rewritten (its temporary file exists):
    # the previous latest.tagan must stay whole, and the run resumes from it.
    out = tmp_path / "run"
    proc = _start(dataset, out, "--checkpoint-every", "1", "--set", "ngf=16")
    _wait_for(proc, lambda: (out / "latest.tagan").is_file(), "a first checkpoint")

    def writing():
        return any(p.name.startswith(".latest.tagan.") for p in os.scandir(out))

    _wait_for(proc, writing, "a checkpoint write")
    proc.kill()
    proc.communicate(timeout=60)
    saved = read_bundle(out / "latest.tagan").training_state["iteration"]
    assert saved >= 1
    resume = ["train", "--data", str(dataset), "--output", str(out), "--resume"]
    assert main([*resume, "--iterations", str(saved + 1), "--no-progress"]) == 0
    assert read_bundle(out / "latest.tagan").training_state["iteration"] == saved + 1
    assert not [p for p in os.scandir(out) if p.name.endswith(".part")]


def test_set_one_key_of_a_sub_config():
    """``--set normalization.kind=percentile`` keeps the preset's other normalization keys."""
    from napari_tagan.cli.train import parse_overrides
    from napari_tagan.core import preset_config

    overrides = parse_overrides(
        ["normalization.kind=percentile", "normalization.p_high=99.5", "ngf=8"]
    )
    assert overrides == {"normalization": {"kind": "percentile", "p_high": 99.5}, "ngf": 8}
    config = preset_config("saureus", **overrides)
    assert config.normalization.kind == "percentile" and config.normalization.p_high == 99.5
    assert config.normalization.out_range == (0.0, 1.0)  # S. aureus' range is kept
    assert config.ngf == 8
