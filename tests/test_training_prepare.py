"""prepare_run: the one decision tree (new, fine-tune, resume) of the CLI and the widget."""

from __future__ import annotations

import pytest
import torch

from napari_tagan.cli import build_parser
from napari_tagan.cli.train import _prepare
from napari_tagan.core import TAGANModel, preset_config, save_bundle
from napari_tagan.core.errors import ConfigError, ConfigProblem, InputError
from napari_tagan.core.simulate import simulate, write_dataset
from napari_tagan.core.training import TrainerCallbacks, dataset_from_arrays
from napari_tagan.core.training.prepare import (
    NothingToResumeError,
    PresetRequiredError,
    ResumeConflictError,
    RunStart,
    prepare_run,
)

WIDTH = {"ngf": 4, "nsf": 4, "ndf": 4}
NOT_AN_INTEGER = "Input should be a valid integer, unable to parse string as an integer"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return write_dataset(root, "axons", n_train=2, n_valid=1, shape=(48, 48), seed=0)


def arrays(config):
    samples = [simulate("axons", (48, 48), seed=i) for i in range(2)]
    conf, sted = [x.confocal for x in samples], [x.sted for x in samples]
    return dataset_from_arrays(config, conf, sted, [x.masks for x in samples]), None


def weights(model: TAGANModel) -> dict[str, torch.Tensor]:
    return {
        f"{r}.{k}": v.clone()
        for r, n in model.networks().items()
        for k, v in n.state_dict().items()
    }


def test_cli_and_widget_paths_start_from_the_same_weights(folder, tmp_path):
    args = build_parser().parse_args(
        ["train", "--data", str(folder), "--preset", "axons", "--output", str(tmp_path / "cli"),
         "--seed", "7", "--iterations", "1", "--device", "cpu", "--no-progress",
         *[x for k, v in WIDTH.items() for x in ("--set", f"{k}={v}")]]
    )  # fmt: skip
    torch.rand(100)  # whatever the global RNG did before, the seed decides
    cli = _prepare(args, TrainerCallbacks())
    torch.rand(7)
    start = RunStart(tmp_path / "widget", preset="axons", overrides=WIDTH, seed=7)
    widget = prepare_run(start, arrays, iterations=1, device="cpu")
    a, b = weights(cli.model), weights(widget.model)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = prepare_run(RunStart(tmp_path / "other", preset="axons", overrides=WIDTH, seed=8),
                        arrays, iterations=1, device="cpu")  # fmt: skip
    c = weights(other.model)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_a_pretrained_segmenter_is_loaded(tmp_path):
    torch.manual_seed(123)
    donor = TAGANModel.from_config(preset_config("axons", **WIDTH))
    path = save_bundle(donor, tmp_path / "s.tagan")
    start = RunStart(tmp_path / "run", preset="axons", overrides=WIDTH, segmenter=path)
    trainer = prepare_run(start, arrays, iterations=1, device="cpu")
    mine, theirs = trainer.model.segmenter.state_dict(), donor.segmenter.state_dict()
    assert all(torch.equal(mine[k].cpu(), theirs[k]) for k in theirs)


def test_fine_tune_starts_from_the_saved_weights(tmp_path):
    torch.manual_seed(5)
    donor = TAGANModel.from_config(preset_config("axons", **WIDTH), with_discriminator=True)
    path = save_bundle(donor, tmp_path / "m.tagan")
    start = RunStart(tmp_path / "run", from_model=path, overrides={"lr": 1e-4})
    trainer = prepare_run(start, arrays, iterations=1, device="cpu")
    assert trainer.config.lr == 1e-4
    a, b = weights(trainer.model), weights(donor)
    assert all(torch.equal(a[k].cpu(), b[k]) for k in b)


def test_resume_continues_the_saved_run(tmp_path):
    start = RunStart(tmp_path, preset="axons", overrides=WIDTH, seed=3)
    prepare_run(start, arrays, iterations=1, device="cpu").run()
    resumed = prepare_run(RunStart(tmp_path, resume=True), arrays, iterations=2, device="cpu")
    assert (resumed.iteration, resumed.total, resumed.seed) == (1, 2, 3)


@pytest.mark.parametrize(
    ("start", "error", "data"),
    [
        (RunStart("out", resume=True, preset="axons"), ResumeConflictError, ("preset",)),
        (RunStart("out", resume=True, overrides={"lr": 1}, segmenter="s.tagan"),
         ResumeConflictError, ("overrides", "segmenter")),
        (RunStart("out"), PresetRequiredError, None),
        (RunStart("out", preset="axons", overrides={"ngf": "x"}), ConfigError,
         (ConfigProblem("ngf", "x", NOT_AN_INTEGER),)),
    ],
)  # fmt: skip
def test_bad_starts_raise_errors_carrying_data(tmp_path, start, error, data):
    with pytest.raises(error) as info:
        prepare_run(start, arrays, iterations=1, device="cpu")
    if error is ResumeConflictError:
        assert info.value.given == data
    if error is ConfigError:
        assert info.value.problems == data
        assert str(info.value) == "ngf=x: " + data[0].reason
    assert isinstance(info.value, InputError)


def test_nothing_to_resume_names_the_folder(tmp_path):
    with pytest.raises(NothingToResumeError) as info:
        prepare_run(RunStart(tmp_path, resume=True), arrays, iterations=1, device="cpu")
    assert info.value.output_dir == tmp_path
