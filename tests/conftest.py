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
