"""Original checkpoints and model bundles: loading, round trips, and clear failures."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_tagan.core import (
    ArchitectureMismatchError,
    ModelLoadError,
    load_model,
    load_original_checkpoint,
    read_bundle,
    save_bundle,
)
from napari_tagan.core.checkpoints import (
    convert_original,
    find_original_checkpoint,
    infer_network,
    read_state_dict,
)
from napari_tagan.core.io import atomic_output, atomic_write_bytes

from conftest import tiny_model


def _write_original(folder: Path, model, epoch="latest", *, s=True, d=False, prefix=""):
    folder.mkdir(parents=True, exist_ok=True)
    sd = {prefix + k: v for k, v in model.generator.state_dict().items()}
    torch.save(sd, folder / f"{epoch}_net_G.pth")
    if s:
        torch.save(model.segmenter.state_dict(), folder / f"{epoch}_net_S.pth")
    if d:
        torch.save(model.discriminator.state_dict(), folder / f"{epoch}_net_D.pth")
    return folder


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------ original checkpoints


def test_original_folder_loads_unchanged(tmp_path):
    model = tiny_model("dendrites", with_discriminator=True)
    folder = _write_original(tmp_path / "exp", model, epoch="1000", d=True)
    loaded = load_original_checkpoint(folder, with_discriminator=True)  # preset inferred
    assert loaded.config.preset == "dendrites"
    assert loaded.config.ngf == 4 and loaded.config.nsf == 4
    assert _same_weights(loaded.generator, model.generator)
    assert _same_weights(loaded.segmenter, model.segmenter)
    assert _same_weights(loaded.discriminator, model.discriminator)
    assert not loaded.generator.training  # eval mode by default
    assert "epoch 1000" in loaded.source
    assert all(p.requires_grad for p in loaded.generator.parameters())


def test_epoch_choice_and_listing(tmp_path):
    model = tiny_model("axons")
    for epoch in ("100", "900", "best"):
        _write_original(tmp_path, model, epoch=epoch)
    assert find_original_checkpoint(tmp_path)["generator"].name == "best_net_G.pth"
    _write_original(tmp_path, model, epoch="latest")
    assert find_original_checkpoint(tmp_path)["generator"].name == "latest_net_G.pth"
    assert find_original_checkpoint(tmp_path, 900)["segmenter"].name == "900_net_S.pth"
    assert (
        find_original_checkpoint(tmp_path / "100_net_G.pth")["generator"].name == "100_net_G.pth"
    )
    with pytest.raises(ModelLoadError, match=r"epoch '5'.*available: 100, 900, best, latest"):
        find_original_checkpoint(tmp_path, 5)
    with pytest.raises(ModelLoadError, match="no original TA-GAN checkpoint"):
        find_original_checkpoint(tmp_path / "sub" if (tmp_path / "sub").mkdir() is None else "")


def test_module_prefix_is_stripped_and_nested_state_dict_accepted(tmp_path):
    model = tiny_model("axons")
    _write_original(tmp_path, model, prefix="module.")
    loaded = load_original_checkpoint(tmp_path, preset="axons")
    assert _same_weights(loaded.generator, model.generator)
    torch.save({"state_dict": model.generator.state_dict()}, tmp_path / "x_net_G.pth")
    assert read_state_dict(tmp_path / "x_net_G.pth").keys() == model.generator.state_dict().keys()


def test_live_uses_pretrained_segmenter(tmp_path):
    model = tiny_model("live")
    _write_original(tmp_path, model, s=False)
    torch.save(model.segmenter.state_dict(), tmp_path / "pretrained_net_S.pth")
    loaded = load_original_checkpoint(tmp_path)
    assert loaded.config.preset == "live" and loaded.config.segmenter == "unet_128"
    assert _same_weights(loaded.segmenter, model.segmenter)


def test_ambiguous_preset_names_candidates(tmp_path):
    _write_original(tmp_path, tiny_model("axons"))
    with pytest.raises(ModelLoadError, match="several presets fit.*axons, saureus, nanodomains"):
        load_original_checkpoint(tmp_path)
    assert (
        load_original_checkpoint(tmp_path, preset="saureus").config.normalization.kind == "minmax"
    )


def test_wrong_architecture_says_what_differs_and_what_fits(tmp_path):
    _write_original(tmp_path, tiny_model("dendrites"))
    with pytest.raises(ArchitectureMismatchError) as err:
        load_original_checkpoint(tmp_path, preset="axons")
    msg = str(err.value)
    assert "latest_net_S.pth does not fit" in msg
    assert "shape difference(s): model.23.weight (2, 4, 7, 7) (expected (1, 4, 7, 7))" in msg
    assert "fits preset(s): dendrites" in msg


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    sd = tiny_model("axons").generator.state_dict()
    sd.pop("model.26.bias")
    sd["model.99.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "latest_net_G.pth")
    with pytest.raises(
        ArchitectureMismatchError,
        match=r"1 missing key\(s\): model.26.bias.*1 unexpected key\(s\): model.99.weight",
    ):
        load_original_checkpoint(tmp_path, preset="axons")


def test_generic_takes_any_original_architecture(tmp_path):
    from napari_tagan.core import TAGANModel, preset_config

    cfg = preset_config("generic", generator="unet_256", ngf=4, nsf=4, class_names=("a", "b", "c"))
    model = TAGANModel.from_config(cfg)
    _write_original(tmp_path, model)
    loaded = load_original_checkpoint(tmp_path)
    assert loaded.config.preset == "generic" and loaded.config.generator == "unet_256"
    assert loaded.config.n_classes == 3 and loaded.config.normalization.kind == "legacy8"
    guess = infer_network(model.generator.state_dict(), "generator")
    assert guess is not None and (guess.arch, guess.width, guess.norm) == ("unet_256", 4, "batch")


def test_missing_segmenter_when_segmentation_is_asked(tmp_path):
    _write_original(tmp_path, tiny_model("axons"), s=False)
    model = load_original_checkpoint(tmp_path, preset="axons")
    assert model.segmenter is None
    with pytest.raises(ModelLoadError, match="no segmenter checkpoint.*latest_net_S.pth"):
        load_original_checkpoint(tmp_path, preset="axons", require_segmenter=True)


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_PICKLE",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_malicious_pickle_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"model.1.weight": _Payload()}, tmp_path / "latest_net_G.pth")
    with open(tmp_path / "plain_net_G.pth", "wb") as fh:  # a bare pickle, not a zip
        pickle.dump(_Payload(), fh)
    for name in ("latest_net_G.pth", "plain_net_G.pth"):
        with pytest.raises(ModelLoadError, match="refusing to unpickle|not a readable"):
            read_state_dict(tmp_path / name)
        with pytest.raises(ModelLoadError):
            load_model(tmp_path / name, preset="axons")
    assert not (tmp_path / "PWNED_BY_PICKLE").exists()


def test_not_a_checkpoint_and_truncated(tmp_path):
    (tmp_path / "latest_net_G.pth").write_text("hello, I am a text file")
    with pytest.raises(ModelLoadError, match="not a readable PyTorch checkpoint"):
        load_model(tmp_path, preset="axons")
    good = tmp_path / "good"
    _write_original(good, tiny_model("axons"))
    data = (good / "latest_net_G.pth").read_bytes()
    (good / "latest_net_G.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="corrupted or truncated"):
        load_model(good, preset="axons")
    torch.save([1, 2, 3], tmp_path / "list_net_G.pth")
    with pytest.raises(ModelLoadError, match="not a state dict"):
        read_state_dict(tmp_path / "list_net_G.pth")
    with pytest.raises(ModelLoadError, match="not found"):
        load_model(tmp_path / "nope.tagan")


# ----------------------------------------------------------------------------- bundles


def test_bundle_round_trip_is_exact(tmp_path):
    model = tiny_model("synprot", with_discriminator=True)
    model.provenance.iterations = 123
    model.provenance.training_data_fingerprint = "abc"
    opt = torch.optim.Adam(model.generator.parameters(), lr=1e-3)
    model.generator(torch.randn(1, 2, 16, 16)).mean().backward()
    opt.step()
    state = {
        "iteration": 7,
        "optimizer_G": opt.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": np.random.default_rng(5).bit_generator.state,
        "history": [1.5, float("inf")],
    }
    path = save_bundle(model, tmp_path / "m.tagan", training_state=state)
    bundle = read_bundle(path)
    loaded = bundle.model
    assert loaded.config == model.config
    assert loaded.config.normalization == model.config.normalization
    assert loaded.provenance.iterations == 123 and loaded.provenance.package_version
    for role in ("generator", "segmenter", "discriminator"):
        assert _same_weights(getattr(loaded, role), getattr(model, role))
    ts = bundle.training_state
    assert ts["iteration"] == 7 and ts["history"] == [1.5, float("inf")]
    assert torch.equal(ts["torch_rng"], state["torch_rng"])
    assert ts["numpy_rng"] == state["numpy_rng"]
    opt2 = torch.optim.Adam(loaded.generator.parameters(), lr=1e-3)
    opt2.load_state_dict(ts["optimizer_G"])
    assert opt2.state_dict()["param_groups"] == opt.state_dict()["param_groups"]
    for k, v in opt.state_dict()["state"].items():
        assert torch.equal(opt2.state_dict()["state"][k]["exp_avg"], v["exp_avg"])
    assert load_model(path).discriminator is None  # prediction does not need D


def test_convert_original_to_bundle(tmp_path):
    model = tiny_model("nanodomains", with_discriminator=True)
    _write_original(tmp_path / "exp", model, d=True)
    out = convert_original(tmp_path / "exp", tmp_path / "nano.tagan", preset="nanodomains")
    loaded = read_bundle(out).model
    assert loaded.config.preset == "nanodomains" and loaded.discriminator is not None
    assert _same_weights(loaded.generator, model.generator)


def test_bundle_failures_have_clear_messages(tmp_path):
    path = save_bundle(tiny_model("axons"), tmp_path / "m.tagan")
    data = path.read_bytes()
    (tmp_path / "trunc.tagan").write_bytes(data[: len(data) - 100])
    with pytest.raises(ModelLoadError, match="corrupted or truncated"):
        read_bundle(tmp_path / "trunc.tagan")
    (tmp_path / "text.tagan").write_text("not a model at all, really not")
    with pytest.raises(ModelLoadError, match="not a napari-tagan model bundle"):
        read_bundle(tmp_path / "text.tagan")
    (tmp_path / "empty.tagan").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="empty or truncated"):
        read_bundle(tmp_path / "empty.tagan")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, tmp_path / "other.safetensors")
    with pytest.raises(ModelLoadError, match="safetensors file but not a napari-tagan"):
        read_bundle(tmp_path / "other.safetensors")
    with pytest.raises(ModelLoadError, match="'axons' model, but preset 'dendrites'"):
        load_model(path, preset="dendrites")


def test_newer_bundle_format_is_refused(tmp_path):
    from safetensors.torch import load_file, safe_open, save_file

    path = save_bundle(tiny_model("axons"), tmp_path / "m.tagan")
    with safe_open(path, "pt") as fh:
        meta = fh.metadata()
    meta["format_version"] = "99"
    save_file(load_file(path), tmp_path / "new.tagan", metadata=meta)
    with pytest.raises(ModelLoadError, match="format 99, made by a newer napari-tagan"):
        read_bundle(tmp_path / "new.tagan")


def test_interrupted_write_keeps_the_previous_file(tmp_path):
    path = save_bundle(tiny_model("axons"), tmp_path / "m.tagan")
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="disk died"), atomic_output(path) as tmp:
        tmp.write_bytes(b"half a file")
        raise RuntimeError("disk died")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.tagan"]  # no temp file left


def test_atomic_outputs_get_ordinary_file_modes(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    new = atomic_write_bytes(tmp_path / "new.bin", b"x")
    assert new.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's owner-only 0o600
    os.chmod(new, 0o640)
    atomic_write_bytes(new, b"y")
    assert new.stat().st_mode & 0o777 == 0o640  # replacing keeps the file's mode
