"""Training engine: labels, datasets, augmentation, objectives, schedules, the loop."""

from __future__ import annotations

import math
import os
import threading

import numpy as np
import pytest
import tifffile
import torch
from scipy import ndimage

from napari_tagan.core import TAGANModel, preset_config, read_bundle, save_bundle
from napari_tagan.core.errors import InputError
from napari_tagan.core.normalization import ClippingWarning
from napari_tagan.core.simulate import simulate, write_dataset
from napari_tagan.core.training import (
    BatchSampler,
    GANLoss,
    LRSchedule,
    Trainer,
    TrainerCallbacks,
    dataset_from_arrays,
    dataset_from_folder,
    gradient_penalty,
    labels_to_targets,
    load_pretrained_segmenter,
    masked_mse,
    model_for_fine_tuning,
)
from napari_tagan.core.training.batches import make_batch


def blob_pair(seed: int, size: int = 64):
    """Blurred (confocal) vs sharp (STED) random spots, and the spots' mask."""
    rng = np.random.default_rng(seed)
    density = np.zeros((size, size), np.float32)
    for _ in range(10):
        y, x = rng.integers(4, size - 4, 2)
        density[y, x] = rng.uniform(0.6, 1.0)
    sharp = ndimage.gaussian_filter(density, 2.0)
    sharp /= sharp.max()
    blurred = ndimage.gaussian_filter(density, 4.0)
    blurred /= blurred.max()
    sted = rng.poisson(sharp * 150 + 5).astype(np.float32)
    confocal = rng.poisson(blurred * 150 + 5).astype(np.float32)
    return confocal, sted, sharp > 0.25


def tiny(preset: str = "axons", **overrides):
    base = {"ngf": 4, "nsf": 4, "ndf": 4, "batch_size": 2, "crop_size": 32}
    base.update(overrides)
    return preset_config(preset, **base)


def blob_datasets(cfg, n_train: int = 4, n_valid: int = 1):
    pairs = [blob_pair(i) for i in range(n_train + n_valid)]
    conf, sted, masks = (list(x) for x in zip(*pairs, strict=True))
    train = dataset_from_arrays(cfg, conf[:n_train], sted[:n_train], masks[:n_train])
    valid = dataset_from_arrays(cfg, conf[n_train:], sted[n_train:], masks[n_train:])
    return train, valid


def fresh(cfg, seed: int = 0) -> TAGANModel:
    torch.manual_seed(seed)
    return TAGANModel.from_config(cfg, with_discriminator=True)


def weights_equal(a: TAGANModel, b: TAGANModel) -> bool:
    for role, net in a.networks().items():
        other = getattr(b, role).state_dict()
        for key, value in net.state_dict().items():
            if not torch.equal(value.cpu(), other[key].cpu()):
                return False
    return True


# --------------------------------------------------------------------------- labels


def test_label_image_semantics():
    labels = np.array([[0, 1, 2], [3, 0, 2]], np.uint8)
    targets, weights = labels_to_targets(labels, 2)
    assert targets.shape == weights.shape == (2, 2, 3)
    assert targets.dtype == weights.dtype == np.float32
    np.testing.assert_array_equal(weights[0], [[0, 1, 1], [1, 0, 1]])
    np.testing.assert_array_equal(weights[1], weights[0])
    np.testing.assert_array_equal(targets[0], [[-1, -1, 1], [-1, -1, 1]])
    np.testing.assert_array_equal(targets[1], [[-1, -1, -1], [1, -1, -1]])


def test_per_class_label_images_for_overlapping_classes():
    rings = np.array([[0, 1, 2, 2]])
    fibers = np.array([[2, 2, 0, 1]])
    targets, weights = labels_to_targets([rings, fibers], 2, mask_range=(0.0, 1.0))
    np.testing.assert_array_equal(targets[0], [[0, 0, 1, 1]])
    np.testing.assert_array_equal(targets[1], [[1, 1, 0, 0]])
    np.testing.assert_array_equal(weights[0], [[0, 1, 1, 1]])
    np.testing.assert_array_equal(weights[1], [[1, 1, 0, 1]])


def test_masks_are_annotated_everywhere():
    masks = np.zeros((1, 2, 2), bool)
    masks[0, 0, 0] = True
    targets, weights = labels_to_targets(masks, 1)
    np.testing.assert_array_equal(targets[0], [[1, -1], [-1, -1]])
    assert weights.min() == 1
    soft, _ = labels_to_targets(np.array([[0.0, 0.5]], np.float32), 1)
    np.testing.assert_allclose(soft[0], [[-1, 0]])


@pytest.mark.parametrize(
    ("labels", "n", "match"),
    [
        (np.array([[0, 4]]), 2, "0 \\(not annotated\\)"),
        ([np.array([[0, 3]])], 1, "per-class label image"),
        ([np.zeros((2, 2), int)], 2, "1 per-class label images for 2"),
        (np.zeros((3, 4, 4), bool), 2, "mask array of shape"),
        (np.array([[np.nan]]), 1, "NaN"),
    ],
)
def test_bad_labels_are_explained(labels, n, match):
    with pytest.raises(InputError, match=match):
        labels_to_targets(labels, n)


# --------------------------------------------------------------------------- datasets


def test_dataset_from_arrays_normalizes_each_image():
    cfg = tiny()
    conf = np.array([[0, 255], [100, 300]], np.float32)
    with pytest.warns(ClippingWarning, match="25%"):  # 300 is clipped (legacy8)
        ds = dataset_from_arrays(cfg, [conf], [conf * 0.5], [None])
    s = ds[0]
    assert s.confocal.shape == (1, 2, 2) and s.sted.shape == (1, 2, 2)
    np.testing.assert_allclose(s.confocal[0], [[-1, 1], [100 / 127.5 - 1, 1]], atol=1e-6)
    assert s.targets is None and not ds.has_targets
    assert len(ds.fingerprint) == 64
    with pytest.warns(ClippingWarning):
        other = dataset_from_arrays(cfg, [conf + 1], [conf * 0.5], [None])
    assert other.fingerprint != ds.fingerprint


def test_dataset_from_arrays_rejects_mismatches():
    cfg = tiny()
    img = np.zeros((8, 8), np.float32)
    with pytest.raises(InputError, match="1 confocal image"):
        dataset_from_arrays(cfg, [img], [img, img])
    with pytest.raises(InputError, match="differ in size"):
        dataset_from_arrays(cfg, [img], [np.zeros((8, 9))])
    with pytest.raises(InputError, match="expected"):
        dataset_from_arrays(cfg, [np.zeros((2, 8, 8))], [img])
    with pytest.raises(InputError, match="labels"):
        dataset_from_arrays(cfg, [img], [img], [np.ones((7, 8), np.uint8)])


def test_crops_come_from_annotated_regions():
    cfg = tiny(crop_size=16)
    img = np.random.default_rng(0).uniform(0, 200, (96, 96)).astype(np.float32)
    labels = np.zeros((96, 96), np.uint8)
    labels[80:86, 4:10] = 1
    labels[82:84, 6:8] = 2
    ds = dataset_from_arrays(cfg, [img], [img], [labels])
    sampler = BatchSampler(ds, seed=0)
    for _ in range(20):
        batch = make_batch(ds, sampler.draw(2, (16, 16)), (16, 16))
        assert batch.weights.reshape(2, -1).max(axis=1).min() == 1


def test_augmentation_is_identical_for_every_channel():
    cfg = tiny(crop_size=16)
    yy, xx = np.mgrid[:40, :40]
    img = ((yy * 3 + xx * 7) % 200).astype(np.float32)
    mask = img > 100
    ds = dataset_from_arrays(cfg, [img], [img], [mask])
    sampler = BatchSampler(ds, seed=1)
    seen = set()
    for _ in range(30):
        crops = sampler.draw(1, (16, 16))
        seen.add((crops[0].flip_y, crops[0].flip_x, crops[0].rot))
        b = make_batch(ds, crops, (16, 16))
        np.testing.assert_array_equal(b.g_input, b.sted)
        np.testing.assert_array_equal(b.targets > 0, b.sted > (100.5 / 127.5 - 1))
    assert len(seen) > 6  # flips and rotations vary


def test_sampler_state_round_trip():
    cfg = tiny()
    train, _ = blob_datasets(cfg, 3, 1)
    a = BatchSampler(train, seed=5)
    a.draw(2, (32, 32))
    state = a.state_dict()
    b = BatchSampler(train, seed=99)
    b.load_state_dict(state)
    assert a.draw(4, (32, 32)) == b.draw(4, (32, 32))


def _write_stack(path, channels):
    tifffile.imwrite(path, np.stack(channels).astype(np.uint16), photometric="minisblack")


@pytest.mark.parametrize("preset", ["axons", "dendrites", "nanodomains", "saureus"])
def test_simulated_original_layouts_load(tmp_path, preset):
    write_dataset(tmp_path, preset, n_train=2, n_valid=1, shape=(32, 32), seed=0)
    cfg = preset_config(preset)
    train = dataset_from_folder(tmp_path, cfg)
    valid = dataset_from_folder(tmp_path, cfg, split="valid")
    assert (len(train), len(valid)) == (2, 1)
    s = train[0]
    assert s.confocal.shape == (1, 32, 32) and s.sted.shape == (1, 32, 32)
    assert s.targets.shape == (cfg.n_classes, 32, 32) and s.weights.min() == 1
    assert set(np.unique(s.targets)) <= set(cfg.mask_range)
    lo, hi = cfg.normalization.out_range
    assert lo <= s.confocal.min() and s.confocal.max() <= hi


def test_synprot_layout_groups_three_channels_per_protein(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 200, (2, 3, 16, 16))
    mask_a = (a[0, 0] > 100) * 255
    _write_stack(tmp_path / "s.tif", [a[0, 0], a[0, 1], mask_a, a[1, 0], a[1, 1], 0 * mask_a])
    ds = dataset_from_folder(tmp_path, preset_config("synprot"))
    s = ds[0]
    assert s.confocal.shape == s.sted.shape == s.targets.shape == (2, 16, 16)
    np.testing.assert_array_equal(s.targets[0] > 0, mask_a > 0)
    assert (s.targets[1] < 0).all()


def test_live_and_generic_layouts(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 4000, (2, 30, 34))
    _write_stack(tmp_path / "live.tif", [img[0], img[1]])
    live = dataset_from_folder(tmp_path, preset_config("live"))
    assert live[0].targets is None and live[0].confocal.shape == (1, 30, 34)
    assert live[0].confocal.min() == -1 and live[0].confocal.max() == 1  # min-max
    generic_dir = tmp_path / "generic"
    generic_dir.mkdir()
    _write_stack(generic_dir / "g.tif", [img[0], img[1], img[0] > 2000])
    gen = dataset_from_folder(generic_dir, preset_config("generic"))
    assert gen[0].targets.shape == (1, 30, 34)
    bad = tmp_path / "bad"
    bad.mkdir()
    _write_stack(bad / "b.tif", [img[0], img[1], img[0], img[1]])
    with pytest.raises(InputError, match="expects 1 confocal"):
        dataset_from_folder(bad, preset_config("axons"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no TIFF"):
        dataset_from_folder(tmp_path / "empty", preset_config("axons"))
    with pytest.raises(InputError, match="not found"):
        dataset_from_folder(tmp_path / "missing", preset_config("axons"))


# --------------------------------------------------------------------------- objectives


def test_gan_losses():
    logits = torch.zeros(2, 1, 4, 4)
    assert GANLoss("vanilla")(logits, True).item() == pytest.approx(math.log(2))
    assert GANLoss("lsgan")(logits, True).item() == pytest.approx(1.0)
    assert GANLoss("lsgan")(logits, False).item() == pytest.approx(0.0)
    x = torch.full((1, 1, 2, 2), 3.0)
    assert GANLoss("wgangp")(x, True).item() == -3.0
    assert GANLoss("wgangp")(x, False).item() == 3.0
    with pytest.raises(ValueError, match="gan_mode"):
        GANLoss("hinge")  # type: ignore[arg-type]


def test_masked_mse_ignores_unannotated_pixels():
    pred = torch.tensor([[[[1.0, 5.0]]]], requires_grad=True)
    target = torch.tensor([[[[0.0, 0.0]]]])
    w = torch.tensor([[[[1.0, 0.0]]]])
    loss = masked_mse(pred, target, w)
    assert loss.item() == pytest.approx(1.0)
    loss.backward()
    assert pred.grad[0, 0, 0, 1] == 0
    assert masked_mse(pred, target, torch.zeros_like(w)).item() == 0.0
    assert masked_mse(pred, target).item() == pytest.approx(13.0)


@pytest.mark.parametrize(
    ("c", "expected"), [(0.5, 10 * (0.5 * 128**0.5 - 1) ** 2), (128**-0.5, 0)]
)
def test_gradient_penalty_of_a_linear_critic(c, expected):
    # A linear D with every weight c has the input gradient c everywhere: norm c·√128.
    d = torch.nn.Conv2d(2, 1, 8, bias=False)
    torch.nn.init.constant_(d.weight, c)
    real, fake = torch.randn(2, 2, 8, 8), torch.randn(2, 2, 8, 8)
    gp = gradient_penalty(d, real, fake, weight=10.0)
    assert gp.item() == pytest.approx(expected, abs=1e-4)


def test_gradient_penalty_is_differentiable():
    d = torch.nn.Conv2d(2, 1, 3)
    real, fake = torch.randn(2, 2, 8, 8), torch.randn(2, 2, 8, 8)
    gradient_penalty(d, real, fake, weight=10.0).backward()
    assert d.weight.grad is not None and d.weight.grad.abs().sum() > 0


def test_schedules():
    lin = LRSchedule("linear", niter=2, niter_decay=2, lr_decay_iters=1)
    assert [lin.factor(e) for e in range(4)] == pytest.approx([1, 1, 2 / 3, 1 / 3])
    step = LRSchedule("step", niter=0, niter_decay=0, lr_decay_iters=3)
    assert [step.factor(e) for e in (0, 2, 3, 6)] == pytest.approx([1, 1, 0.1, 0.01])
    cos = LRSchedule("cosine", niter=4, niter_decay=0, lr_decay_iters=1)
    assert [cos.factor(e) for e in (0, 2, 4, 9)] == pytest.approx([1, 0.5, 0, 0])
    plateau = LRSchedule("plateau", niter=0, niter_decay=0, lr_decay_iters=1)
    plateau.observe(10.0)
    for _ in range(6):
        plateau.observe(10.0)
    assert plateau.factor(0) == pytest.approx(0.2)
    restored = LRSchedule("plateau", 0, 0, 1)
    restored.load_state_dict(plateau.state_dict())
    assert restored == plateau


# --------------------------------------------------------------------------- training


def simulated_datasets(cfg, n_train: int = 6, n_valid: int = 2, size: int = 64):
    """Simulated axon pairs (napari_tagan.core.simulate) with their complete masks."""

    def make(seeds):
        samples = [simulate("axons", (size, size), seed=i) for i in seeds]
        conf, sted = [x.confocal for x in samples], [x.sted for x in samples]
        return dataset_from_arrays(cfg, conf, sted, [x.masks for x in samples])

    return make(range(n_train)), make(range(100, 100 + n_valid))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One 40-iteration run of tiny networks, with everything its callbacks reported."""
    out = tmp_path_factory.mktemp("run")
    cfg = tiny(ngf=16, nsf=16, ndf=16, batch_size=4, lr=1e-3)
    train, valid = simulated_datasets(cfg)
    seen: dict[str, list] = {"it": [], "val": [], "preview": [], "ckpt": []}
    callbacks = TrainerCallbacks(
        on_iteration=lambda i, n, losses, lr: seen["it"].append((i, n, losses, lr)),
        on_validation=lambda i, m: seen["val"].append((i, m)),
        on_preview=lambda i, img: seen["preview"].append((i, img.shape)),
        on_checkpoint=lambda i, p: seen["ckpt"].append((i, p.name)),
    )
    preview = simulate("axons", (48, 64), seed=99).confocal
    trainer = Trainer(
        fresh(cfg, seed=2), train, valid, output_dir=out, iterations=40, validate_every=20,
        checkpoint_every=20, preview_image=preview, callbacks=callbacks, seed=2,
    )  # fmt: skip
    summary = trainer.run()
    return {"out": out, "train": train, "trainer": trainer, "summary": summary,
            "seen": seen, "preview": preview}  # fmt: skip


def test_training_improves_validation(trained):
    # Seed 2 of this setting gains about 19 dB PSNR and 0.56 Dice (margins: 2 dB, 0.05).
    summary = trained["summary"]
    first, last = summary.metrics[0], summary.metrics[-1]
    assert [m["iteration"] for m in summary.metrics] == [0, 20, 40]
    assert last["psnr"] > first["psnr"] + 2
    assert last["dice"] > first["dice"] + 0.05
    assert summary.iterations == 40 and not summary.stopped_early


def test_best_bundle_is_the_best_validation(trained):
    summary, trainer = trained["summary"], trained["trainer"]
    assert summary.best is not None and summary.best.is_file()
    best_dice = max(m["dice"] for m in summary.metrics if m["iteration"] > 0)
    assert trainer.best_value == best_dice
    best = read_bundle(summary.best)
    assert best.model.provenance.iterations == trainer.best_iteration > 0


def test_callbacks_report_every_iteration_validation_preview_and_checkpoint(trained):
    seen, preview = trained["seen"], trained["preview"]
    assert [x[0] for x in seen["it"]] == list(range(1, 41)) and seen["it"][-1][1] == 40
    for name in ("D_real", "D_fake", "D", "G_GAN", "G_seg", "G", "S"):
        assert all(math.isfinite(x[2][name]) for x in seen["it"])
    assert [i for i, _ in seen["val"]] == [0, 20, 40]
    assert seen["preview"] == [(0, preview.shape), (20, preview.shape), (40, preview.shape)]
    best_at_40 = [(40, "best.tagan")] if trained["trainer"].best_iteration == 40 else []
    first = [(20, "best.tagan"), (20, "iter_000020.tagan"), (20, "latest.tagan")]
    assert seen["ckpt"] == [*first, *best_at_40, (40, "latest.tagan")]


def test_csv_logs_hold_one_row_per_iteration_and_validation(trained):
    out = trained["out"]
    losses = (out / "losses.csv").read_text().splitlines()
    assert losses[0] == "iteration,D_real,D_fake,D,G_GAN,G_seg,G,S,lr,epoch"
    assert len(losses) == 41 and losses[1].startswith("1,")
    metrics = (out / "metrics.csv").read_text().splitlines()
    assert metrics[0] == "iteration,psnr,ssim,dice,iou,epoch" and metrics[1].startswith("0,")
    assert len(metrics) == 4


def test_latest_bundle_carries_provenance_and_state(trained):
    bundle = read_bundle(trained["out"] / "latest.tagan")
    assert bundle.model.provenance.iterations == 40
    assert bundle.model.provenance.training_data_fingerprint == trained["train"].fingerprint
    assert bundle.training_state["iteration"] == 40


@pytest.mark.parametrize(("pool_size", "channels_last"), [(0, False), (3, False), (0, True)])
def test_resume_equals_uninterrupted_run_bitwise(tmp_path, pool_size, channels_last):
    # channels-last: the saved (contiguous) Adam moments must take the parameters' layout
    cfg = tiny(lr=1e-3, pool_size=pool_size)
    train, valid = blob_datasets(cfg, 3, 1)
    kwargs = {"iterations": 8, "validate_every": 3, "seed": 3, "channels_last": channels_last}
    Trainer(fresh(cfg), train, valid, output_dir=tmp_path / "a", **kwargs).run()

    callbacks = TrainerCallbacks()
    t = Trainer(fresh(cfg), train, valid, output_dir=tmp_path / "b", callbacks=callbacks, **kwargs)
    callbacks.should_stop = lambda: t.iteration >= 5
    first = t.run()
    assert first.stopped_early and first.iterations == 5
    torch.manual_seed(1234)  # whatever happens in between must not matter
    second = Trainer.from_checkpoint(tmp_path / "b", train, valid).run()
    assert second.iterations == 8 and not second.stopped_early

    a = read_bundle(tmp_path / "a" / "latest.tagan").model
    b = read_bundle(tmp_path / "b" / "latest.tagan").model
    assert weights_equal(a, b)
    for name in ("losses.csv", "metrics.csv"):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text()


def test_request_stop_from_another_thread_saves_latest(tmp_path):
    cfg = tiny()
    train, _ = blob_datasets(cfg, 2, 1)
    holder: dict[str, Trainer] = {}

    def on_iteration(i, n, losses, lr):
        if i == 2:
            t = threading.Thread(target=holder["t"].request_stop)
            t.start()
            t.join()

    holder["t"] = Trainer(
        fresh(cfg),
        train,
        output_dir=tmp_path,
        iterations=50,
        callbacks=TrainerCallbacks(on_iteration=on_iteration),
    )
    summary = holder["t"].run()
    assert summary.stopped_early and summary.iterations == 2 and summary.best is None
    assert read_bundle(summary.latest).training_state["iteration"] == 2
    with pytest.raises(InputError, match="already holds a training run"):
        Trainer(fresh(cfg), train, output_dir=tmp_path, iterations=3)
    resumed = Trainer.from_checkpoint(tmp_path, train, iterations=4).run()
    assert resumed.iterations == 4


def test_interrupted_checkpoint_write_keeps_previous_latest(tmp_path, monkeypatch):
    cfg = tiny()
    train, _ = blob_datasets(cfg, 2, 1)
    real_replace = os.replace

    def failing_replace(src, dst):
        raise OSError("disk full")

    def on_checkpoint(i, path):
        if path.name == "latest.tagan":
            monkeypatch.setattr(os, "replace", failing_replace)

    trainer = Trainer(
        fresh(cfg),
        train,
        output_dir=tmp_path,
        iterations=4,
        checkpoint_every=2,
        callbacks=TrainerCallbacks(on_checkpoint=on_checkpoint),
    )
    with pytest.raises(OSError, match="disk full"):
        trainer.run()
    monkeypatch.setattr(os, "replace", real_replace)
    assert read_bundle(tmp_path / "latest.tagan").training_state["iteration"] == 2
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_labels_required_unless_preset_needs_none(tmp_path):
    cfg = tiny()
    conf, sted, _ = blob_pair(0)
    ds = dataset_from_arrays(cfg, [conf], [sted], [None])
    with pytest.raises(InputError, match="no annotated pixels"):
        Trainer(fresh(cfg), ds, output_dir=tmp_path, iterations=1)


def test_partial_labels_and_unlabelled_samples_train(tmp_path):
    cfg = tiny()
    (c1, s1, m1), (c2, s2, _) = blob_pair(0), blob_pair(1)
    labels = np.zeros(m1.shape, np.uint8)
    labels[:20, :20] = 1 + m1[:20, :20]
    ds = dataset_from_arrays(cfg, [c1, c2], [s1, s2], [labels, None])
    trainer = Trainer(fresh(cfg), ds, output_dir=tmp_path, iterations=3)
    summary = trainer.run()
    assert summary.iterations == 3

    # A batch without annotated pixels leaves S untouched (no Adam momentum step)...
    def s_state():
        return {k: v.clone() for k, v in trainer.model.segmenter.state_dict().items()}

    batch = trainer._next_batch()
    batch.weights.zero_()
    before = s_state()
    g_before = next(trainer.model.generator.parameters()).clone()
    losses = trainer.train_step(batch)
    assert losses["S"] == 0.0 and losses["G_seg"] == 0.0
    after = s_state()
    params = [k for k in before if "running" not in k and "num_batches" not in k]
    assert all(torch.equal(before[k], after[k]) for k in params)
    assert not torch.equal(g_before, next(trainer.model.generator.parameters()))
    # ... while an annotated one trains it.
    batch = trainer._next_batch()
    batch.weights.fill_(1.0)
    trainer.train_step(batch)
    assert not all(torch.equal(after[k], v) for k, v in s_state().items())


@pytest.mark.parametrize(
    "overrides",
    [
        {"gan_mode": "wgangp"},
        {"gan_mode": "lsgan", "lambda_pixel": 100.0, "pixel_loss": "mse"},
        {"lr_policy": "cosine", "niter": 1, "pool_size": 2},
    ],
)
def test_other_objectives_run(tmp_path, overrides):
    cfg = tiny(**overrides)
    train, valid = blob_datasets(cfg, 2, 1)
    seen = []
    Trainer(
        fresh(cfg),
        train,
        valid,
        output_dir=tmp_path,
        iterations=3,
        callbacks=TrainerCallbacks(on_iteration=lambda i, n, losses, lr: seen.append(losses)),
    ).run()
    assert all(math.isfinite(v) for losses in seen for v in losses.values())
    if overrides.get("gan_mode") == "wgangp":
        assert "D_gp" in seen[0]
    if "lambda_pixel" in overrides:
        assert "G_pixel" in seen[0]


def test_live_preset_trains_g_against_frozen_pretrained_s(tmp_path):
    cfg = tiny("live", crop_size=128, batch_size=1)
    pretrained = fresh(cfg, seed=7)
    save_bundle(pretrained, tmp_path / "s.tagan")
    model = load_pretrained_segmenter(fresh(cfg), tmp_path / "s.tagan")
    before = {k: v.clone() for k, v in model.segmenter.state_dict().items()}
    rng = np.random.default_rng(0)
    conf = [rng.gamma(2.0, 300.0, (128, 160)).astype(np.float32) for _ in range(2)]
    train = dataset_from_arrays(cfg, conf, [c * 2 for c in conf])
    seen = []
    Trainer(
        model,
        train,
        train,
        output_dir=tmp_path / "run",
        iterations=2,
        callbacks=TrainerCallbacks(on_iteration=lambda i, n, losses, lr: seen.append(losses)),
    ).run()
    assert "S" not in seen[0] and "G_seg" in seen[0]
    after = read_bundle(tmp_path / "run" / "latest.tagan").model.segmenter.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_fine_tune_from_bundle_and_original_checkpoint(tmp_path):
    cfg = tiny()
    train, _ = blob_datasets(cfg, 2, 1)
    base = fresh(cfg, seed=4)
    save_bundle(base, tmp_path / "base.tagan")
    model = model_for_fine_tuning(tmp_path / "base.tagan", overrides={"lambda_seg": 5.0})
    assert model.config.lambda_seg == 5.0 and model.discriminator is not None
    Trainer(model, train, output_dir=tmp_path / "ft", iterations=2).run()
    prov = read_bundle(tmp_path / "ft" / "latest.tagan").model.provenance
    assert prov.iterations == 2 and "base.tagan" in prov.model_extra["fine_tuned_from"]
    with pytest.raises(InputError, match="cannot change ngf"):
        model_for_fine_tuning(tmp_path / "base.tagan", overrides={"ngf": 8})

    ckpt = tmp_path / "original"
    ckpt.mkdir()
    torch.save(base.generator.state_dict(), ckpt / "latest_net_G.pth")
    torch.save(base.segmenter.state_dict(), ckpt / "latest_net_S.pth")
    model = model_for_fine_tuning(ckpt, preset="axons")
    assert model.discriminator is None  # no D saved: the trainer builds a new one
    Trainer(model, train, output_dir=tmp_path / "ft2", iterations=1).run()
    assert read_bundle(tmp_path / "ft2" / "latest.tagan").model.discriminator is not None

    # With D saved too, all three networks continue from the checkpoint.
    torch.save(base.discriminator.state_dict(), ckpt / "latest_net_D.pth")
    model = model_for_fine_tuning(ckpt, preset="axons")
    assert weights_equal(model, base)
    Trainer(model, train, output_dir=tmp_path / "ft3", iterations=1).run()


@pytest.mark.parametrize("hardware", [True, False])
def test_mixed_precision_on_the_cpu(tmp_path, monkeypatch, hardware):
    """bf16 autocast where the CPU has bf16 hardware; elsewhere fp32 and one warning."""
    import napari_tagan.core.device as device_module
    from napari_tagan.core.device import AmpUnavailableWarning

    # The hardware query is ours; bf16 itself runs (emulated, slower) on any x86 CPU.
    monkeypatch.setattr(device_module, "cpu_has_native_bf16", lambda: hardware)
    monkeypatch.setattr(device_module, "cpu_prefers_channels_last", lambda: False)  # AVX2
    cfg = tiny()
    train, valid = blob_datasets(cfg, 2, 1)
    model = fresh(cfg)
    seen_dtypes: set[torch.dtype] = set()
    conv = next(m for m in model.generator.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda m, i, o: seen_dtypes.add(o.dtype))
    losses = []
    callbacks = TrainerCallbacks(on_iteration=lambda i, n, loss, lr: losses.append(loss))
    kwargs = {"output_dir": tmp_path / "run", "iterations": 2, "callbacks": callbacks}
    if hardware:
        trainer = Trainer(model, train, valid, amp=True, **kwargs)
        assert trainer.amp_dtype == torch.bfloat16
    else:
        with pytest.warns(AmpUnavailableWarning, match="no bf16 hardware"):
            trainer = Trainer(model, train, valid, amp=True, **kwargs)
        assert trainer.amp_dtype is None
    # bf16 convolutions on the CPU run channels-last, fp32 ones contiguous.
    assert trainer.memory_format == (torch.channels_last if hardware else torch.contiguous_format)
    trainer.run()
    assert seen_dtypes == ({torch.bfloat16} if hardware else {torch.float32})
    assert all(math.isfinite(v) for loss in losses for v in loss.values())
    # Weights and optimizer state stay float32; the bundle loads as any other.
    saved = read_bundle(tmp_path / "run" / "latest.tagan")
    assert saved.training_state["amp_dtype"] == ("bfloat16" if hardware else None)
    for net in saved.model.networks().values():
        assert all(p.dtype == torch.float32 for p in net.parameters())
    assert all(
        v.dtype == torch.float32
        for opt in trainer.optimizers.values()
        for state in opt.state.values()
        for v in state.values()
        if torch.is_tensor(v) and v.is_floating_point() and v.ndim > 0
    )


@pytest.mark.parametrize("avx512", [True, False])
def test_cpu_memory_format_follows_the_measured_policy(tmp_path, monkeypatch, avx512):
    """fp32 on the CPU: channels-last where ATen has AVX512 kernels, contiguous on AVX2."""
    import napari_tagan.core.device as device_module

    monkeypatch.setattr(device_module, "cpu_prefers_channels_last", lambda: avx512)
    cfg = tiny()
    train, _ = blob_datasets(cfg, 2, 1)
    expected = torch.channels_last if avx512 else torch.contiguous_format
    trainer = Trainer(fresh(cfg), train, output_dir=tmp_path / "a", iterations=1)
    assert trainer.memory_format == expected
    conv = next(m for m in trainer.model.generator.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=expected)
    trainer.run()
    assert read_bundle(tmp_path / "a" / "latest.tagan").training_state["channels_last"] is avx512
    # An explicit choice wins.
    other = Trainer(fresh(cfg), train, output_dir=tmp_path / "b", channels_last=not avx512)
    assert (other.memory_format == torch.channels_last) is (not avx512)
