"""Data-parallel training: 2 gloo processes on CPU keep identical replicas."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

WORKER = textwrap.dedent(
    """
    import hashlib, json, sys
    import numpy as np
    import torch
    import torch.distributed as dist
    from napari_tagan.core import TAGANModel, preset_config
    from napari_tagan.core.training import Trainer, dataset_from_arrays
    from napari_tagan.core.training.distributed import shutdown_distributed

    torch.set_num_threads(1)
    out = sys.argv[1]
    cfg = preset_config("axons", ngf=4, nsf=4, ndf=4, batch_size=2, crop_size=32)
    rng = np.random.default_rng(0)
    conf = [rng.gamma(2.0, 30.0, (48, 48)).astype(np.float32) for _ in range(6)]
    sted = [c * 0.8 for c in conf]
    masks = [(c > 60)[None] for c in conf]
    train = dataset_from_arrays(cfg, conf[:5], sted[:5], masks[:5])
    valid = dataset_from_arrays(cfg, conf[5:], sted[5:], masks[5:])
    # A different initialisation per rank: DDP must broadcast rank 0's weights.
    torch.manual_seed(100 + int(__import__("os").environ["RANK"]))
    model = TAGANModel.from_config(cfg, with_discriminator=True)
    trainer = Trainer(model, train, valid, output_dir=out, iterations=3, device="cpu",
                      seed=1, validate_every=3)
    summary = trainer.run()
    digest = hashlib.sha256()
    for name, net in model.networks().items():
        for key, value in net.state_dict().items():
            digest.update(key.encode())
            digest.update(value.detach().contiguous().numpy().tobytes())
    digests = [None] * dist.get_world_size()
    dist.all_gather_object(digests, digest.hexdigest())
    if dist.get_rank() == 0:
        with open(out + "/ranks.json", "w") as fh:
            json.dump({"digests": digests, "iterations": summary.iterations,
                       "world": trainer.world}, fh)
    shutdown_distributed()
    assert not dist.is_initialized()
    """
)


def torchrun(*command: str) -> subprocess.CompletedProcess:
    """Two CPU processes under torchrun, one torch thread each; fails with their stderr."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    proc = subprocess.run(
        [*launcher, "--nproc-per-node", "2", *command],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_two_gloo_processes_keep_identical_replicas(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "run"
    torchrun(str(script), str(out))
    result = json.loads((out / "ranks.json").read_text())
    assert result["world"] == 2
    assert result["iterations"] == 3
    assert len(result["digests"]) == 2
    assert result["digests"][0] == result["digests"][1]
    # Only rank 0 writes: one header + 3 rows, validation at 0 and 3.
    assert len((out / "losses.csv").read_text().splitlines()) == 4
    assert len((out / "metrics.csv").read_text().splitlines()) == 3
    assert (out / "latest.tagan").is_file()


@pytest.mark.slow
def test_cli_train_under_torchrun(tmp_path):
    """The README's line: torchrun --no-python napari-tagan train …; only rank 0 writes."""
    from napari_tagan.core import read_bundle
    from napari_tagan.core.simulate import write_dataset

    data = write_dataset(tmp_path / "data", "axons", n_train=4, n_valid=1, shape=(48, 48))
    out = tmp_path / "run"
    cli = os.path.join(os.path.dirname(sys.executable), "napari-tagan")
    tiny = ["--set", "ngf=4", "--set", "nsf=4", "--set", "ndf=4"]
    train = ["train", "--data", str(data), "--preset", "axons", "--output", str(out)]
    short = ["--iterations", "2", "--batch-size", "1", "--crop", "32", "--no-progress"]
    proc = torchrun("--no-python", cli, *train, *short, *tiny)
    assert proc.stdout.count("finished at iteration 2/2") == 1  # rank 0 reports, alone
    state = read_bundle(out / "latest.tagan").training_state
    assert state["iteration"] == 2
    assert state["world_size"] == 2
