"""Presets carry the original TA-GAN defaults; configs validate and round-trip."""

from __future__ import annotations

import pydantic
import pytest

from napari_tagan.core.config import PRESET_NAMES, PRESETS, ModelConfig, preset_config


def test_every_preset_identifier_exists():
    assert (
        set(PRESET_NAMES)
        == set(PRESETS)
        == {
            "axons",
            "dendrites",
            "synprot",
            "saureus",
            "nanodomains",
            "live",
            "generic",
        }
    )
    for name, cfg in PRESETS.items():
        assert cfg.preset == name


@pytest.mark.parametrize(
    "name,batch,crop,niter,decay,lam_seg,classes,norm_kind",
    [
        ("axons", 8, 128, 900, 100, 10, ("rings",), "legacy8"),
        ("dendrites", 32, 128, 500, 0, 1, ("rings", "fibers"), "legacy8"),
        ("synprot", 32, 128, 1000, 0, 1, ("spots 561", "spots 640"), "legacy8_minmax"),
        ("saureus", 8, 128, 900, 100, 10, ("bacteria",), "minmax"),
        ("nanodomains", 64, 0, 900, 100, 100, ("nanodomains",), "legacy8"),
        ("live", 8, 128, 900, 100, 1, ("rings", "fibers"), "minmax"),
    ],
)
def test_original_defaults(name, batch, crop, niter, decay, lam_seg, classes, norm_kind):
    cfg = preset_config(name)
    assert (cfg.batch_size, cfg.crop_size, cfg.niter, cfg.niter_decay) == (
        batch,
        crop,
        niter,
        decay,
    )
    assert cfg.lambda_seg == lam_seg and cfg.lambda_gan == 1
    assert cfg.class_names == classes
    assert cfg.normalization.kind == norm_kind
    # Conventions common to every preset
    assert cfg.norm == "batch" and cfg.gan_mode == "vanilla" and cfg.pool_size == 0
    assert (cfg.ngf, cfg.nsf, cfg.ndf) == (64, 64, 64)  # the original builds S with 64
    assert cfg.generator == "resnet_9blocks" and cfg.lambda_pixel == 0
    assert (cfg.lr, cfg.beta1, cfg.lr_policy) == (2e-4, 0.5, "linear")


def test_preset_specifics():
    live = preset_config("live")
    assert live.input_nc == 3 and live.sted_regions_input and live.freeze_segmenter
    assert live.segmenter == "unet_128" and live.seg_target == "segmenter_on_real"
    assert live.seg_thresholds == (-0.86, -0.92)
    assert preset_config("synprot").input_nc == preset_config("synprot").output_nc == 2
    saureus = preset_config("saureus")
    assert saureus.normalization.out_range == (0.0, 1.0) and saureus.mask_range == (0.0, 1.0)
    assert preset_config("generic").normalization.kind == "percentile"


def test_presets_are_not_shared_mutable_state():
    cfg = preset_config("axons")
    cfg.lambda_seg = 3.0
    assert preset_config("axons").lambda_seg == 10.0


def test_generic_with_user_channels_and_classes():
    cfg = preset_config("generic", image_channels=2, class_names=("a", "b", "c"))
    assert (cfg.input_nc, cfg.output_nc, cfg.n_classes) == (2, 2, 3)
    assert len(cfg.channel_names) == 2


def test_validation_on_assignment_and_messages():
    cfg = preset_config("axons")
    with pytest.raises(pydantic.ValidationError, match="lr"):
        cfg.lr = -1.0
    with pytest.raises(pydantic.ValidationError, match="norm"):
        cfg.norm = "layer"  # type: ignore[assignment]
    with pytest.raises(pydantic.ValidationError, match="input_nc must be 1"):
        ModelConfig(input_nc=3)
    with pytest.raises(pydantic.ValidationError, match="p_low"):
        cfg.with_overrides(normalization={"kind": "percentile", "p_low": 90, "p_high": 10})
    with pytest.raises(ValueError, match="unknown preset 'axon'.*axons"):
        preset_config("axon")
    with pytest.raises(pydantic.ValidationError, match="extra"):
        ModelConfig.model_validate({"nfg": 3})


def test_json_round_trip():
    for cfg in PRESETS.values():
        assert ModelConfig.model_validate_json(cfg.model_dump_json()) == cfg
