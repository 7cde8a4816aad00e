"""Presets carry the original TA-GAN defaults; configs validate and round-trip."""

from __future__ import annotations

from typing import get_args

import pydantic
import pytest

from napari_tagan.core import config, networks
from napari_tagan.core.config import (
    ARCHITECTURE_FIELDS,
    PRESET_NAMES,
    PRESETS,
    ModelConfig,
    preset_config,
)
from napari_tagan.core.errors import (
    ArchitectureChangeError,
    ConfigError,
    ConfigProblem,
    InputError,
    UnknownPresetError,
)
from napari_tagan.core.model import TAGANModel
from napari_tagan.core.training import losses


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
        ("live", 1, 0, 100, 100, 1, ("rings", "fibers"), "minmax"),
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
    with pytest.raises(ConfigError, match="p_low") as refused:
        cfg.with_overrides(normalization={"kind": "percentile", "p_low": 90, "p_high": 10})
    (problem,) = refused.value.problems
    assert problem.field == "normalization"
    assert problem.reason == "p_low (90.0) must be below p_high (10.0)"
    with pytest.raises(UnknownPresetError, match="unknown preset 'axon'.*axons") as unknown:
        preset_config("axon")
    assert unknown.value.name == "axon" and unknown.value.choices == PRESET_NAMES
    with pytest.raises(pydantic.ValidationError, match="extra"):
        ModelConfig.model_validate({"nfg": 3})


def test_json_round_trip():
    for cfg in PRESETS.values():
        assert ModelConfig.model_validate_json(cfg.model_dump_json()) == cfg


def test_override_errors_carry_one_problem_per_field():
    with pytest.raises(ConfigError) as refused:
        preset_config("axons", ngf="abc", lr=-1, gan_mode="hinge")
    exc = refused.value
    assert isinstance(exc, InputError) and isinstance(exc, ValueError)
    assert [(p.field, p.value) for p in exc.problems] == [
        ("ngf", "abc"),
        ("gan_mode", "hinge"),
        ("lr", -1),
    ]
    assert exc.problems[2].reason == "Input should be greater than 0"
    assert str(exc).startswith("ngf=abc: Input should be a valid integer")
    # a whole-config rule has no field and no value
    with pytest.raises(ConfigError) as whole:
        preset_config("axons", input_nc=3)
    assert whole.value.problems == (
        ConfigProblem("", None, "input_nc must be 1 (image_channels), got 3"),
    )


def test_image_channels_override_adapts_the_channel_fields_and_bad_counts_are_reported():
    cfg = preset_config("axons").with_overrides(image_channels=3)
    assert (cfg.input_nc, cfg.output_nc) == (3, 3)
    assert cfg.channel_names == ("channel 0", "channel 1", "channel 2")
    with pytest.raises(ConfigError, match="image_channels=two: Input should be a valid integer"):
        preset_config("axons", image_channels="two")


# One changed value per config field (with the companions a valid config needs). The first
# key is the field; the layout of G, S and D changes exactly for the architecture fields.
CHANGES = {
    "schema_version": {"schema_version": 2},
    "preset": {"preset": "dendrites"},
    "description": {"description": "other"},
    "generator": {"generator": "unet_128"},
    "segmenter": {"segmenter": "unet_32"},
    "discriminator": {"discriminator": "pixel"},
    "n_layers_d": {"n_layers_d": 4},
    "image_channels": {"image_channels": 2},
    "input_nc": {"input_nc": 3, "sted_regions_input": True},
    "output_nc": {"output_nc": 2},
    "channel_names": {"channel_names": ("brightfield",)},
    "class_names": {"class_names": ("a", "b")},
    "ngf": {"ngf": 8},
    "nsf": {"nsf": 8},
    "ndf": {"ndf": 8},
    "norm": {"norm": "instance"},
    "dropout": {"dropout": False},
    "init_type": {"init_type": "kaiming"},
    "init_gain": {"init_gain": 0.5},
    "normalization": {"normalization": {"kind": "minmax"}},
    "mask_range": {"mask_range": (0.0, 1.0)},
    "gan_mode": {"gan_mode": "wgangp"},
    "lambda_gan": {"lambda_gan": 2.0},
    "lambda_seg": {"lambda_seg": 2.0},
    "lambda_pixel": {"lambda_pixel": 2.0},
    "pixel_loss": {"pixel_loss": "mse"},
    "lambda_gp": {"lambda_gp": 2.0},
    "seg_target": {"seg_target": "segmenter_on_real"},
    "seg_thresholds": {"seg_thresholds": (0.5,)},
    "freeze_segmenter": {"freeze_segmenter": True},
    "sted_regions_input": {"sted_regions_input": True, "input_nc": 3},
    "lr": {"lr": 1e-3},
    "beta1": {"beta1": 0.9},
    "lr_policy": {"lr_policy": "cosine"},
    "niter": {"niter": 10},
    "niter_decay": {"niter_decay": 10},
    "lr_decay_iters": {"lr_decay_iters": 10},
    "pool_size": {"pool_size": 50},
    "batch_size": {"batch_size": 2},
    "crop_size": {"crop_size": 64},
}


def _layout(cfg: ModelConfig) -> dict[str, dict[str, tuple[int, ...]]]:
    model = TAGANModel.from_config(cfg, with_discriminator=True, initialize=False, device="meta")
    return {
        role: {k: tuple(v.shape) for k, v in net.state_dict().items()}
        for role, net in model.networks().items()
    }


def test_every_field_is_classified_and_architecture_fields_are_those_that_shape_the_weights():
    assert set(CHANGES) == set(ModelConfig.model_fields)  # a new field must be added here
    # n_layers: the discriminator that reads n_layers_d (basic always has 3 layers)
    base = preset_config("axons", discriminator="n_layers", ngf=4, nsf=4, ndf=4)
    reference = _layout(base)
    shaping = {
        f for f, change in CHANGES.items() if _layout(base.with_overrides(**change)) != reference
    }
    assert shaping == set(ARCHITECTURE_FIELDS)
    assert set(ARCHITECTURE_FIELDS) == {
        "generator",
        "segmenter",
        "discriminator",
        "n_layers_d",
        "image_channels",
        "input_nc",
        "output_nc",
        "class_names",
        "ngf",
        "nsf",
        "ndf",
        "norm",
        "sted_regions_input",
    }


def test_a_fine_tune_cannot_change_the_architecture():
    cfg = preset_config("axons")
    tuned = cfg.with_training_overrides(lr=1e-3, batch_size=2, ngf=64, class_names=["rings"])
    assert (tuned.lr, tuned.batch_size, tuned.ngf) == (1e-3, 2, 64)  # same ngf: allowed
    with pytest.raises(ArchitectureChangeError, match="cannot change ngf, norm when") as exc:
        cfg.with_training_overrides(lr=1e-3, ngf=32, norm="instance")
    assert exc.value.fields == ("ngf", "norm")
    assert [p.value for p in exc.value.problems] == [32, "instance"]
    # a derived change is named by the field that was given
    with pytest.raises(ArchitectureChangeError) as derived:
        cfg.with_training_overrides(image_channels=2)
    assert derived.value.fields == ("image_channels",)
    with pytest.raises(ConfigError, match="lr=-1"):
        cfg.with_training_overrides(lr=-1)


def test_config_names_are_the_ones_the_networks_and_losses_take():
    for name in ("NormName", "GeneratorName", "SegmenterName", "DiscriminatorName", "InitName"):
        assert get_args(getattr(config, name)) == get_args(getattr(networks, name)), name
    assert get_args(config.GanMode) == get_args(losses.GanMode)
