"""What a run saves and logs: TrainingState, the CSV logs, invalid settings."""

from __future__ import annotations

import pytest
import torch

from napari_tagan.core import preset_config
from napari_tagan.core.checkpoints import config_with_overrides
from napari_tagan.core.errors import ConfigError, ModelLoadError
from napari_tagan.core.training.reporting import CsvLog
from napari_tagan.core.training.state import TrainingState


def state(**changes) -> TrainingState:
    base = dict(
        iteration=4, total=10, optimizers={"generator": {}}, schedule={}, sampler={},
        pool={}, torch_rng=torch.get_rng_state(), seed=3, batch_size=2, crop_size=32,
        validate_every=5, checkpoint_every=5, channels_last=True, device_type="cpu",
        best_metric="dice", best_value=0.5, best_iteration=2,
    )  # fmt: skip
    base.update(changes)
    return TrainingState(**base)


def test_state_round_trips_through_the_bundle_layout():
    s = state()
    d = s.to_dict()
    assert d["best"] == {"metric": "dice", "value": 0.5, "iteration": 2}
    assert "cuda_rng" not in d and "best_value" not in d
    back = TrainingState.from_dict(d)
    assert back.to_dict().keys() == d.keys()
    assert (back.iteration, back.best_value, back.channels_last) == (4, 0.5, True)
    assert torch.equal(back.torch_rng, s.torch_rng)


def test_no_best_yet_is_saved_as_none():
    assert state(best_value=float("-inf")).to_dict()["best"]["value"] is None


def test_a_bundle_without_state_is_refused():
    with pytest.raises(ModelLoadError, match="no training state"):
        TrainingState.from_dict({}, "m.tagan")
    with pytest.raises(ModelLoadError, match="incomplete"):
        TrainingState.from_dict({"iteration": 1}, "m.tagan")


def test_resume_options_take_saved_settings_unless_given():
    options = state().resume_options({"batch_size": 8, "device": "cpu"})
    assert options["batch_size"] == 8 and options["crop_size"] == 32 and options["seed"] == 3
    assert options["iterations"] == 10 and options["channels_last"] is True
    assert options["overwrite"] is True
    assert "iterations" not in state().resume_options({"epochs": 3, "device": "cpu"})


def test_csv_log_keeps_rows_up_to_the_resumed_iteration(tmp_path):
    log = CsvLog(tmp_path / "l.csv", ("iteration", "x"))
    log.start(None)
    for i in range(1, 5):
        log.append({"iteration": i, "x": i / 2})
    with open(log.path, "a") as fh:
        fh.write("5\n")  # cut short by a killed process
    log.start(keep_until=2)
    assert log.path.read_text().splitlines() == ["iteration,x", "1,0.5", "2,1"]
    log.append({"iteration": 3})
    assert log.path.read_text().splitlines()[-1] == "3,nan"
    CsvLog(tmp_path / "off.csv", ("iteration",), enabled=False).start(None)
    assert not (tmp_path / "off.csv").exists()


def test_invalid_settings_carry_field_value_and_reason():
    with pytest.raises(ConfigError) as info:
        config_with_overrides(preset_config("axons"), {"lr": -1, "gan_mode": "hinge"})
    fields = [(p.field, p.value) for p in info.value.problems]
    assert sorted(fields) == [("gan_mode", "hinge"), ("lr", -1)]
    assert "lr=-1: Input should be greater than 0" in str(info.value)
