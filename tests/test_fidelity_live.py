"""The live preset's training step against the original's update, written out.

The original (``models/TAGAN_live_model.py``, ``TAGANLiveModel``): G's input is
[confocal, STED where the decision map is 1 and -1 elsewhere, map as ±1]; D sees the
confocal and a STED (2 channels); S, pretrained and frozen, is never put in eval mode, so
its BatchNorm uses the batch's statistics; S(real STED) is thresholded to {0, 1} at
-0.86 / -0.92. One iteration: D on (conf, G(x).detach()) → 0 and (conf, STED) → 1, mean
of the two; then with D frozen G on GAN(D(conf, G(x)) → 1) × λ_GAN + MSE(S(G(x)),
target) × λ_seg. (The original feeds D the *real* STED in G's step, a fault fixed here and
in this written-out update.)
"""

from __future__ import annotations

import copy
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from napari_tagan.core import TAGANModel, preset_config
from napari_tagan.core.device import Placement
from napari_tagan.core.errors import InputError
from napari_tagan.core.training import dataset_from_arrays
from napari_tagan.core.training.batches import Crop, make_batch
from napari_tagan.core.training.prepare import RunStart, SegmenterRequiredError, prepare_run
from napari_tagan.core.training.state import ImagePool
from napari_tagan.core.training.steps import UpdateSteps, loss_names


def _model(cfg) -> TAGANModel:
    torch.manual_seed(5)
    model = TAGANModel.from_config(cfg, with_discriminator=True)
    gen = torch.Generator().manual_seed(6)
    for m in model.segmenter.modules():  # "pretrained" running statistics, far from a batch's
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) * 3 + 0.2)
    return model


def _batch(cfg):
    rng = np.random.default_rng(1)
    conf = [rng.gamma(2.0, 300.0, (128, 128)).astype(np.float32) for _ in range(2)]
    sted = [c * 2 + rng.gamma(1.0, 50.0, c.shape).astype(np.float32) for c in conf]
    data = dataset_from_arrays(cfg, conf, sted)
    crops = [Crop(0, 0, 0, False, False, 0, 1), Crop(1, 0, 0, False, True, 1, 2)]
    return make_batch(data, crops, (128, 128)).map(torch.from_numpy)


def _original_update(model: TAGANModel, batch, cfg) -> dict[str, float]:
    g, d, s = (copy.deepcopy(n) for n in (model.generator, model.discriminator, model.segmenter))
    for net in (g, d, s):
        net.train()
    confocal, sted = batch.g_input[:, :1], batch.sted
    decision_map = (batch.g_input[:, 2:3] > 0).float()  # the loader's 0/1 map
    sted_regions = sted * decision_map
    sted_regions[decision_map == 0] = -1
    decision_map[decision_map == 0] = -1
    g_input = torch.cat((confocal, sted_regions, decision_map), 1)
    assert torch.equal(g_input, batch.g_input)  # the project builds the same G input

    torch.manual_seed(11)  # G's dropout: the same masks as the project's step
    fake = g(g_input)
    seg_fake = s(fake)
    seg_real = s(sted).detach()
    seg_real[:, 0] = seg_real[:, 0] > (0.07 * 2 - 1)
    seg_real[:, 1] = seg_real[:, 1] > (0.04 * 2 - 1)

    def bce(pred: torch.Tensor, real: bool) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(pred, torch.full_like(pred, float(real)))

    opt_d = torch.optim.Adam(d.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
    opt_g = torch.optim.Adam(g.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
    d_fake = bce(d(torch.cat((confocal, fake.detach()), 1)), False)
    d_real = bce(d(torch.cat((confocal, sted), 1)), True)
    loss_d = (d_fake + d_real) * 0.5
    opt_d.zero_grad()
    loss_d.backward()
    opt_d.step()
    for p in d.parameters():
        p.requires_grad_(False)
    g_gan = bce(d(torch.cat((confocal, fake), 1)), True) * cfg.lambda_gan
    g_seg = F.mse_loss(seg_fake, seg_real) * cfg.lambda_seg
    opt_g.zero_grad()
    (g_gan + g_seg).backward()
    opt_g.step()
    values = {"D_real": d_real, "D_fake": d_fake, "D": loss_d, "G_GAN": g_gan, "G_seg": g_seg}
    return {k: v.item() for k, v in values.items()} | {"G": (g_gan + g_seg).item()}


def test_live_step_computes_the_original_losses():
    cfg = preset_config("live", ngf=4, nsf=4, ndf=4)
    model = _model(cfg)
    assert model.discriminator.model[0].in_channels == 2  # confocal + STED, as the original
    batch = _batch(cfg)
    expected = _original_update(model, batch, cfg)
    s_before = copy.deepcopy(model.segmenter.state_dict())
    names = loss_names(model, train_segmenter=False)
    place = Placement(torch.device("cpu"), None, torch.contiguous_format)
    trained = {"generator": model.generator, "discriminator": model.discriminator}
    steps = UpdateSteps(
        model, trained, place, loss_names=names, uses_labels=False, pool=ImagePool(0, 0)
    )
    steps.train_mode()
    torch.manual_seed(11)
    got = steps.train_step(batch)
    assert set(got) == set(expected)
    for k, v in expected.items():
        assert got[k] == pytest.approx(v, rel=1e-5, abs=1e-6), k
    # the frozen S keeps its pretrained weights and running statistics
    after = model.segmenter.state_dict()
    assert all(torch.equal(s_before[k], after[k]) for k in s_before)


def test_eval_mode_s_would_give_other_targets():
    """The test above can fail: S's running statistics give another G_seg."""
    cfg = preset_config("live", ngf=4, nsf=4, ndf=4)
    model, batch = _model(cfg), _batch(cfg)
    s = model.segmenter
    with torch.no_grad():
        s.train()
        batch_stats = s(batch.sted)
        s.eval()
        running = s(batch.sted)
    assert not torch.allclose(batch_stats, running, atol=1e-3)


def test_live_training_without_a_segmenter_is_refused(tmp_path):
    with pytest.raises(SegmenterRequiredError) as info:
        prepare_run(
            RunStart(tmp_path / "run", preset="live", overrides={"ngf": 4, "nsf": 4, "ndf": 4}),
            lambda cfg: pytest.fail("no data is read before the refusal"),
            iterations=1,
            device="cpu",
        )
    assert info.value.preset == "live" and isinstance(info.value, InputError)


def test_cli_refuses_live_training_without_a_segmenter(tmp_path):
    argv = [sys.executable, "-m", "napari_tagan.cli", "train", "--preset", "live"]
    argv += ["--data", str(tmp_path), "--output", str(tmp_path / "run"), "--iterations", "1"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--segmenter PATH" in lines[0], proc.stderr


def test_original_live_checkpoints_get_the_original_test_input():
    """``minmax8`` (what an original live checkpoint loads with): STED on the confocal's
    min/max, 8-bit, in the brightest 100-px block; models trained here: the STED on its
    own min/max, everywhere without a mask."""
    from napari_tagan.core.normalization import NormalizationSpec, normalize
    from napari_tagan.core.prediction.inputs import sted_region_channels

    rng = np.random.default_rng(2)
    conf = rng.gamma(2.0, 100.0, (210, 150)).astype(np.float32)
    sted = conf * 1.5 + rng.gamma(1.0, 30.0, conf.shape).astype(np.float32)
    sted[120:180, 110:140] += 2000
    cfg = preset_config("live", ngf=4, nsf=4, ndf=4, normalization={"kind": "minmax8"})
    model = TAGANModel.from_config(cfg)
    _, conf_stats = normalize(conf[None], cfg.normalization)
    extra = sted_region_channels(model, conf.shape, sted, None, conf_stats)
    span = conf.max() - conf.min()
    eight = np.trunc(np.clip((sted - conf.min()) / span * 255, 0, 255))
    inside = extra[1] == 1
    # one block, stretched back by the nearest resize: 3 × 2 blocks over 210 × 150 pixels
    rows, cols = np.nonzero(inside)
    box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    assert inside.sum() == box == 70 * 75
    np.testing.assert_allclose(extra[0][inside], (eight / 255 * 2 - 1)[inside], atol=1e-6)
    assert (extra[0][~inside] == -1).all() and (extra[1][~inside] == -1).all()
    ours = TAGANModel.from_config(preset_config("live", ngf=4, nsf=4, ndf=4))
    mine = sted_region_channels(ours, conf.shape, sted, None)
    own, _ = normalize(sted[None], NormalizationSpec(kind="minmax"))
    assert (mine[1] == 1).all()
    np.testing.assert_array_equal(mine[0], own[0])
