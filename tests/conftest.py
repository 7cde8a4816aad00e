"""Shared fixtures: tiny networks and small images keep the suite fast."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_tagan.core import ModelConfig, TAGANModel, preset_config


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield


def tiny_config(preset: str = "axons", **overrides) -> ModelConfig:
    """A preset's config with tiny filter counts (for behaviour, not quality)."""
    return preset_config(preset, ngf=4, nsf=4, ndf=4, **overrides)


def tiny_model(preset: str = "axons", *, with_discriminator: bool = False, **overrides):
    torch.manual_seed(0)
    return TAGANModel.from_config(
        tiny_config(preset, **overrides), with_discriminator=with_discriminator
    )


@pytest.fixture
def axons_model() -> TAGANModel:
    model = tiny_model("axons")
    # Non-trivial running statistics, so that eval and batch-statistics modes differ.
    model.generator.train()
    with torch.no_grad():
        for _ in range(3):
            model.generator(torch.randn(2, 1, 32, 32))
    return model.eval()


@pytest.fixture
def confocal() -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.gamma(2.0, 20.0, size=(45, 38))).astype(np.uint16)


@pytest.fixture
def private_settings(tmp_path, monkeypatch):
    """The widgets' settings (recent models) in a per-test folder, not the user's."""
    monkeypatch.setenv("NAPARI_TAGAN_CONFIG_DIR", str(tmp_path / "settings"))


@pytest.fixture
def one_torch_thread():
    """The test thread's own torch work (references, fixtures) on one thread.

    Tiny networks gain nothing from more, and a torch pool as wide as a small machine
    crawls when other processes share its cores (the widgets' workers do the same).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def calibrated(model):
    """Eval-mode BatchNorm statistics of real batches (cumulative average over passes).

    With pix2pix's N(0, 0.02) weights and fresh running statistics the signal dies out
    within a few layers (far pixels change the output by < 1e-20); calibrated statistics
    keep every layer near unit variance, so that a missing halo shows and the
    exactness tests have teeth.
    """
    for net in model.networks().values():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None
        net.train()
    with torch.no_grad():
        for _ in range(2):
            g = model.generator(torch.randn(4, model.config.input_nc, 64, 64))
            if model.segmenter is not None:
                model.segmenter(g)
    return model.eval()
