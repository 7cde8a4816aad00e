"""One typed configuration per model, and the TA-GAN presets as configuration values.

A :class:`ModelConfig` is everything needed to rebuild a model's networks, normalize its
inputs, and train it; it travels inside every model bundle. Presets are plain config
values (see :data:`PRESETS`), not subclasses. The fields that decide the networks' layout
are marked in the class (:func:`_architecture`), and :data:`ARCHITECTURE_FIELDS` is read
from those marks, so a fine-tune cannot change the architecture by accident.

This module does not import torch: the CLI builds its parser (preset choices) from it.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import (
    ArchitectureChangeError,
    ConfigError,
    ConfigProblem,
    UnknownPresetError,
)

CONFIG_SCHEMA_VERSION = 1

PresetName = Literal["axons", "dendrites", "synprot", "saureus", "nanodomains", "live", "generic"]
PRESET_NAMES: tuple[str, ...] = get_args(PresetName)

# The networks' names (napari_tagan.core.networks builds them; a test checks the two agree).
NormName = Literal["batch", "instance", "none"]
GeneratorName = Literal["resnet_9blocks", "resnet_6blocks", "unet_128", "unet_256"]
SegmenterName = Literal["resnet_6blocks", "unet_128", "unet_32"]
DiscriminatorName = Literal["basic", "n_layers", "pixel"]
InitName = Literal["normal", "xavier", "kaiming", "orthogonal"]
NormalizationKind = Literal["legacy8", "legacy8_minmax", "minmax", "minmax8", "percentile"]
GanMode = Literal["vanilla", "lsgan", "wgangp"]

#: The ``json_schema_extra`` mark of a field that decides the networks' layout.
_ARCHITECTURE_MARK = "architecture"


def _architecture(default: Any, **constraints: Any) -> Any:
    """A field that decides the networks' layout: the weights fix it once they exist."""
    return Field(default, json_schema_extra={_ARCHITECTURE_MARK: True}, **constraints)


class NormalizationSpec(BaseModel):
    """How raw intensities become network inputs in [-1, 1] (or [0, 1]), and back.

    kind
        ``legacy8``: clip to [0, 255], truncate to integers, /255, then to ``out_range``
        (what the original data pipeline does; original checkpoints expect it).
        ``legacy8_minmax``: ``legacy8``, then each channel min-max rescaled to
        ``out_range`` (synprot).
        ``minmax``: each image and channel min-max scaled to ``out_range``.
        ``minmax8``: each image and channel min-max scaled to 0-255, 8-bit converted (clip,
        truncate), then to ``out_range``; the live preset's STED regions take the
        confocal's min/max (the original live test input; original live checkpoints).
        ``percentile``: each image and channel's ``p_low`` / ``p_high`` percentiles mapped
        to the ends of ``out_range`` (not clipped; the default for new models).
    out_range
        The network's input/output range: (-1, 1) for every preset but S. aureus (0, 1).
    regions
        Where prediction takes its statistics: ``image`` (the whole image) or ``halves``
        (the top and bottom half each its own, as the original's ``--preprocess
        tophalf``/``bottomhalf`` runs for synprot checkpoints). Training ignores it.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=True)

    kind: NormalizationKind = "percentile"
    p_low: float = Field(1.0, ge=0.0, lt=100.0)
    p_high: float = Field(99.8, gt=0.0, le=100.0)
    out_range: tuple[float, float] = (-1.0, 1.0)
    regions: Literal["image", "halves"] = "image"

    @model_validator(mode="after")
    def _check(self) -> NormalizationSpec:
        if self.p_low >= self.p_high:
            raise ValueError(f"p_low ({self.p_low}) must be below p_high ({self.p_high})")
        if self.out_range[0] >= self.out_range[1]:
            raise ValueError(f"out_range must be increasing, got {self.out_range}")
        return self


class ModelConfig(BaseModel):
    """Architecture, data and training settings of one TA-GAN model.

    Channel vocabulary: ``image_channels`` is what the user supplies per sample (1 for a
    confocal image, 2 for the two-protein synprot data); ``input_nc`` is what G receives
    (3 for the live preset: confocal, STED regions, decision map); ``output_nc`` is the
    number of STED channels G makes and S reads; ``class_names`` are S's output channels.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    schema_version: int = CONFIG_SCHEMA_VERSION
    preset: PresetName = "generic"
    description: str = ""

    # Networks (the fields marked ``_architecture`` fix the weights' layout)
    generator: GeneratorName = _architecture("resnet_9blocks")
    segmenter: SegmenterName | None = _architecture("resnet_6blocks")
    discriminator: DiscriminatorName = _architecture("basic")
    n_layers_d: int = _architecture(3, ge=1, le=8)
    image_channels: int = _architecture(1, ge=1)
    input_nc: int = _architecture(1, ge=1)
    output_nc: int = _architecture(1, ge=1)
    channel_names: tuple[str, ...] = ("confocal",)
    class_names: tuple[str, ...] = _architecture(("structure",))
    ngf: int = _architecture(64, ge=1)
    nsf: int = _architecture(64, ge=1)
    ndf: int = _architecture(64, ge=1)
    norm: NormName = _architecture("batch")
    dropout: bool = True
    init_type: InitName = "normal"
    init_gain: float = 0.02

    # Intensities
    normalization: NormalizationSpec = NormalizationSpec()
    #: Range of S's targets: masks map to (off, on) = (-1, 1), or (0, 1) for S. aureus.
    mask_range: tuple[float, float] = (-1.0, 1.0)

    # Objectives
    gan_mode: GanMode = "vanilla"
    lambda_gan: float = Field(1.0, ge=0.0)
    lambda_seg: float = Field(10.0, ge=0.0)
    lambda_pixel: float = Field(0.0, ge=0.0)
    pixel_loss: Literal["l1", "mse"] = "l1"
    lambda_gp: float = Field(10.0, ge=0.0)
    #: ``labels``: S(synthetic) against the annotations; ``segmenter_on_real``: against
    #: S(real STED) thresholded (the live preset, whose S is pretrained and frozen).
    seg_target: Literal["labels", "segmenter_on_real"] = "labels"
    seg_thresholds: tuple[float, ...] = ()
    freeze_segmenter: bool = False
    #: The live preset's G also receives STED sub-regions and a map of where they are.
    sted_regions_input: bool = _architecture(False)

    # Optimisation
    lr: float = Field(2e-4, gt=0.0)
    beta1: float = Field(0.5, ge=0.0, lt=1.0)
    lr_policy: Literal["linear", "step", "plateau", "cosine"] = "linear"
    niter: int = Field(900, ge=0)
    niter_decay: int = Field(100, ge=0)
    lr_decay_iters: int = Field(50, ge=1)
    pool_size: int = Field(0, ge=0)
    batch_size: int = Field(8, ge=1)
    #: Training crop side in pixels; 0 means whole images.
    crop_size: int = Field(128, ge=0)

    @model_validator(mode="after")
    def _check_channels(self) -> ModelConfig:
        if len(self.channel_names) != self.image_channels:
            raise ValueError(
                f"channel_names has {len(self.channel_names)} names for "
                f"{self.image_channels} image channel(s)"
            )
        expected_input = self.image_channels + (2 if self.sted_regions_input else 0)
        if self.input_nc != expected_input:
            why = " + 2 for the STED regions and decision map" if self.sted_regions_input else ""
            raise ValueError(
                f"input_nc must be {expected_input} (image_channels{why}), got {self.input_nc}"
            )
        if self.segmenter is not None and not self.class_names:
            raise ValueError("a model with a segmenter needs at least one class name")
        if self.seg_target == "segmenter_on_real" and len(self.seg_thresholds) not in (
            0,
            len(self.class_names),
        ):
            raise ValueError("seg_thresholds needs one threshold per class")
        return self

    @property
    def n_classes(self) -> int:
        """Number of segmentation classes (S's output channels)."""
        return len(self.class_names) if self.segmenter is not None else 0

    def with_overrides(self, **overrides: Any) -> ModelConfig:
        """Return a validated copy with some fields replaced (e.g. from ``--set``).

        A dict for a sub-config (``normalization={"kind": "percentile"}``) changes only the
        keys it gives.

        Changing ``image_channels`` alone also adapts the fields that follow from it
        (``input_nc``, ``output_nc``, ``channel_names``) unless they are given too.

        Raises
        ------
        ConfigError
            If the result is not a valid config; its ``problems`` name the fields.
        """
        data = self.model_dump()
        for key, value in self._derived_channels(overrides).items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}  # a sub-config: change only what is given
            else:
                data[key] = value
        try:
            return ModelConfig.model_validate(data)
        except ValidationError as exc:
            raise config_error(exc) from exc

    def with_training_overrides(self, **overrides: Any) -> ModelConfig:
        """:meth:`with_overrides` for a model whose weights exist (fine-tuning).

        Training fields (losses, lr, schedule, batch, crop, ...) may change; the fields
        marked as architecture may not, since the weights fix them.

        Raises
        ------
        ArchitectureChangeError
            If an override changes an architecture field (its ``fields`` name them).
        ConfigError
            If the result is not a valid config.
        """
        new = self.with_overrides(**overrides)
        changed = [f for f in ARCHITECTURE_FIELDS if getattr(new, f) != getattr(self, f)]
        named = [f for f in changed if f in overrides] or changed  # not the derived ones
        if named:
            raise ArchitectureChangeError({f: getattr(new, f) for f in named})
        return new

    def _derived_channels(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """``overrides`` plus the channel fields that follow from a new ``image_channels``."""
        try:
            n = int(overrides["image_channels"])
        except (KeyError, TypeError, ValueError):
            return overrides  # no change, or a bad value that validation reports
        out = dict(overrides)
        extra = 2 if out.get("sted_regions_input", self.sted_regions_input) else 0
        out.setdefault("input_nc", n + extra)
        out.setdefault("output_nc", n)
        if n != len(self.channel_names):
            names = ("confocal",) if n == 1 else tuple(f"channel {i}" for i in range(n))
            out.setdefault("channel_names", names)
        return out


#: Config fields that decide the networks' layout (marked in :class:`ModelConfig`).
ARCHITECTURE_FIELDS: tuple[str, ...] = tuple(
    name
    for name, info in ModelConfig.model_fields.items()
    if isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get(_ARCHITECTURE_MARK)
)


def config_error(exc: ValidationError) -> ConfigError:
    """The :class:`ConfigError` of a pydantic validation error: one problem per error."""
    problems = []
    for err in exc.errors():
        loc = err.get("loc", ())
        reason = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        problems.append(
            ConfigProblem(".".join(map(str, loc)), err.get("input") if loc else None, reason)
        )
    return ConfigError(problems)


_AXONS = ModelConfig(
    preset="axons",
    description="Axonal F-actin periodic rings (confocal → STED, S segments ring regions).",
    channel_names=("confocal",),
    class_names=("rings",),
    normalization=NormalizationSpec(kind="legacy8"),
    batch_size=8,
    crop_size=128,
    niter=900,
    niter_decay=100,
    lambda_gan=1.0,
    lambda_seg=10.0,
)


def _preset(base: ModelConfig, **changes: Any) -> ModelConfig:
    return base.with_overrides(**changes)


#: The TA-GAN presets with the original defaults (conventions: norm batch, GAN vanilla,
#: no image pool; the original builds S with 64 filters whatever ``nsf`` says).
PRESETS: dict[str, ModelConfig] = {
    "axons": _AXONS,
    "dendrites": _preset(
        _AXONS,
        preset="dendrites",
        description="Dendritic F-actin: periodic rings and longitudinal fibers (2 classes).",
        class_names=("rings", "fibers"),
        batch_size=32,
        niter=500,
        niter_decay=0,
        lambda_seg=1.0,
    ),
    "synprot": _preset(
        _AXONS,
        preset="synprot",
        description="Two synaptic proteins imaged together (channels 561 and 640 nm).",
        image_channels=2,
        input_nc=2,
        output_nc=2,
        channel_names=("confocal 561", "confocal 640"),
        class_names=("spots 561", "spots 640"),
        normalization=NormalizationSpec(kind="legacy8_minmax"),
        batch_size=32,
        niter=1000,
        niter_decay=0,
        lambda_seg=1.0,
    ),
    "saureus": _preset(
        _AXONS,
        preset="saureus",
        description="S. aureus: brightfield → SIM, S segments the bacteria.",
        channel_names=("brightfield",),
        class_names=("bacteria",),
        normalization=NormalizationSpec(kind="minmax", out_range=(0.0, 1.0)),
        mask_range=(0.0, 1.0),
    ),
    "nanodomains": _preset(
        _AXONS,
        preset="nanodomains",
        description="Simulated synaptic-protein nanodomains (64×64 images).",
        class_names=("nanodomains",),
        batch_size=64,
        crop_size=0,
        lambda_seg=100.0,
    ),
    "live": _preset(
        _AXONS,
        preset="live",
        description=(
            "Live-cell F-actin: G also sees STED sub-regions; S is pretrained and frozen."
        ),
        input_nc=3,
        sted_regions_input=True,
        segmenter="unet_128",
        class_names=("rings", "fibers"),
        normalization=NormalizationSpec(kind="minmax"),
        seg_target="segmenter_on_real",
        seg_thresholds=(-0.86, -0.92),
        freeze_segmenter=True,
        lambda_seg=1.0,
        # the original's options: batch 1 on whole images, 100 + 100 epochs
        batch_size=1,
        crop_size=0,
        niter=100,
        niter_decay=100,
    ),
    "generic": _preset(
        _AXONS,
        preset="generic",
        description="Your own data with the axons settings and your channel/class counts.",
        class_names=("structure",),
        normalization=NormalizationSpec(kind="percentile"),
    ),
}


def preset_config(name: str, **overrides: Any) -> ModelConfig:
    """Return the config of preset ``name``, with optional field overrides.

    Raises
    ------
    UnknownPresetError
        If ``name`` is not a preset; it lists the presets.
    ConfigError
        If the overrides do not make a valid config.
    """
    if name not in PRESETS:
        raise UnknownPresetError(name, PRESET_NAMES)
    return PRESETS[name].with_overrides(**overrides)
