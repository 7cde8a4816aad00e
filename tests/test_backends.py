"""Backends: OpenVINO and ONNX Runtime against eager, and the one place that picks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import napari_tagan.core.backends as backends
from napari_tagan.core import InputError, predict
from napari_tagan.core.backends import decide_backend, ov

from conftest import calibrated, tiny_model

needs_openvino = pytest.mark.skipif(not ov.available(), reason="openvino not installed")
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("NAPARI_TAGAN_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="module")
def model():
    return calibrated(tiny_model("axons"))


def _image(shape=(70, 90), seed=8):
    return np.random.default_rng(seed).gamma(2.0, 30.0, size=shape).astype(np.float32)


@needs_openvino
def test_openvino_matches_eager_and_runs_f32_in_exact_mode(model):
    image = _image()
    eager = predict(model, image, backend="eager")
    vino = predict(model, image, backend="openvino", tile=32)
    assert vino.metadata["backend"] == "openvino" and vino.metadata["precision"] == "fp32"
    assert np.abs(vino.synthetic_sted - eager.synthetic_sted).max() <= 1e-4 * 127.5
    assert np.abs(vino.segmentation - eager.segmentation).max() <= 1e-4
    # Exact mode really compiled f32 (OpenVINO's default on bf16 hardware is bf16).
    x = np.zeros((1, 1, 32, 32), np.float32)
    fp32 = ov.compiled(model.generator, 1, 4, "fp32", x.shape)
    assert ov.compiled_precision(fp32) == "fp32"
    assert ov.compiled(model.generator, 1, 4, "fp32", x.shape) is fp32  # cached per shape
    with pytest.raises(InputError, match="openvino backend"):
        predict(model, image, backend="openvino", mode="mc", generations=2)


@needs_openvino
@pytest.mark.skipif(not ov.supports("bf16"), reason="no bf16 hardware")
def test_openvino_bf16_on_bf16_hardware(model):
    image = _image()
    exact = predict(model, image, backend="eager")
    mixed = predict(model, image, backend="openvino", precision="bf16")
    assert mixed.metadata["precision"] == "bf16"
    x = np.zeros((1, 1, 72, 92), np.float32)
    assert ov.compiled_precision(ov.compiled(model.generator, 1, 4, "bf16", x.shape)) == "bf16"
    diff = np.abs(mixed.synthetic_sted - exact.synthetic_sted) / 127.5
    assert 0 < diff.max() <= 0.1


def test_auto_falls_back_openvino_then_onnx_then_eager(monkeypatch):
    big = {"device": CPU, "mode": "eval", "precision": "fp32", "pixels": 1 << 22}
    monkeypatch.setattr(backends, "openvino_available", lambda: True)
    monkeypatch.setattr(backends.ov, "supports", lambda precision: True)
    assert decide_backend("auto", **big).name == "openvino"
    assert decide_backend("auto", **{**big, "precision": "bf16"}).name == "openvino"
    monkeypatch.setattr(backends, "openvino_available", lambda: False)
    monkeypatch.setattr(backends, "onnx_available", lambda: True)
    choice = decide_backend("auto", **big)
    assert choice.name == "onnx" and "OpenVINO not installed" in choice.reason
    monkeypatch.setattr(backends, "onnx_available", lambda: False)
    assert decide_backend("auto", **big).name in ("eager", "channels_last")
    # Small images without an export, and the stochastic modes, stay eager.
    monkeypatch.setattr(backends, "openvino_available", lambda: True)
    small = {**big, "pixels": 100}
    assert decide_backend("auto", **small).name in ("eager", "channels_last")
    assert decide_backend("auto", **small, exported=lambda: True).name == "openvino"
    assert decide_backend("auto", **{**big, "mode": "mc"}).name in ("eager", "channels_last")
    assert decide_backend("auto", **{**big, "device": torch.device("meta")}).name == "eager"


def test_asked_for_backends_are_checked(monkeypatch):
    big = {"device": CPU, "mode": "eval", "precision": "fp32", "pixels": 1 << 22}
    with pytest.raises(InputError, match="unknown backend"):
        decide_backend("tensorrt", **big)
    with pytest.raises(InputError, match="onnx backend"):
        decide_backend("onnx", **{**big, "precision": "bf16"})
    monkeypatch.setattr(backends, "openvino_available", lambda: False)
    with pytest.raises(InputError, match="pip install openvino"):
        decide_backend("openvino", **big)
    assert decide_backend("eager", **{**big, "mode": "mc"}).name == "eager"


def test_info_system_says_which_backend_and_precision_and_why(capsys, monkeypatch):
    import napari_tagan.core.device as device_module
    from napari_tagan.cli import main

    monkeypatch.setattr(device_module, "cpu_has_native_bf16", lambda: False)
    assert main(["info", "--system", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    expected = decide_backend(
        "auto", device=CPU, mode="eval", precision="fp32", pixels=backends.ONNX_AUTO_MIN_PIXELS
    )
    assert f"fp32 run:   backend {expected.name}, precision fp32 — {expected.reason}" in out
    # Without bf16 hardware a bf16 run is fp32 (the one precision policy), and it says why.
    assert "bf16 run:   backend" in out and "precision fp32 (mixed precision is off" in out
    assert main(["info"]) == 2


def test_cli_backend_choices_are_the_cores():
    from napari_tagan.cli.predict import BACKEND_CHOICES
    from napari_tagan.core.backends import BACKENDS

    assert BACKEND_CHOICES == BACKENDS
