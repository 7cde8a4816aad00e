"""A TA-GAN model: its config plus the networks G, S and (for training) D."""

from __future__ import annotations

import contextlib
import datetime as _dt
from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from .config import ModelConfig
from .networks import build_discriminator, build_generator, build_segmenter, init_weights


def _package_version() -> str:
    from napari_tagan import __version__

    return __version__


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class Provenance(BaseModel):
    """Where a model's weights came from; stored in bundles and in result metadata."""

    model_config = ConfigDict(extra="allow")

    package_version: str = ""
    created: str = ""
    iterations: int = 0
    epochs: float = 0.0
    training_data_fingerprint: str = ""
    source: str = ""

    @classmethod
    def new(cls, **fields: Any) -> Provenance:
        """A provenance stamped with this package's version and the current UTC time."""
        fields.setdefault("package_version", _package_version())
        fields.setdefault("created", _now())
        return cls(**fields)


@dataclass
class TAGANModel:
    """Config and networks of one model. ``segmenter`` and ``discriminator`` are optional.

    Build a fresh model with :meth:`from_config`; load one with
    :func:`napari_tagan.core.checkpoints.load_model`.
    """

    config: ModelConfig
    generator: nn.Module
    segmenter: nn.Module | None = None
    discriminator: nn.Module | None = None
    provenance: Provenance = field(default_factory=Provenance.new)
    #: Path (and epoch) the weights were read from, for result metadata.
    source: str = ""

    @classmethod
    def from_config(
        cls,
        config: ModelConfig,
        *,
        with_discriminator: bool = False,
        initialize: bool = True,
        device: torch.device | str | None = None,
    ) -> TAGANModel:
        """Build the networks that ``config`` describes, initialised as the original.

        With ``initialize=False`` and ``device="meta"`` nothing is allocated: useful to
        compare layouts.
        """
        with torch.device(device) if device is not None else contextlib.nullcontext():
            generator = build_generator(
                config.generator,
                config.input_nc,
                config.output_nc,
                config.ngf,
                config.norm,
                config.dropout,
            )
            segmenter = (
                build_segmenter(
                    config.segmenter, config.output_nc, config.n_classes, config.nsf, config.norm
                )
                if config.segmenter is not None
                else None
            )
            discriminator = (
                build_discriminator(
                    config.discriminator,
                    config.image_channels + config.output_nc,  # the confocal, not G's extras
                    config.ndf,
                    config.norm,
                    config.n_layers_d,
                )
                if with_discriminator
                else None
            )
        if initialize:
            for net in (generator, segmenter, discriminator):
                if net is not None:
                    init_weights(net, config.init_type, config.init_gain)
        return cls(config, generator, segmenter, discriminator)

    def networks(self) -> dict[str, nn.Module]:
        """The networks present, by role name (``generator``, ``segmenter``, ...)."""
        nets = {"generator": self.generator}
        if self.segmenter is not None:
            nets["segmenter"] = self.segmenter
        if self.discriminator is not None:
            nets["discriminator"] = self.discriminator
        return nets

    def to(self, device: torch.device | str) -> TAGANModel:
        """Move every network to ``device`` (in place); returns self."""
        for net in self.networks().values():
            net.to(device)
        return self

    def eval(self) -> TAGANModel:
        """Running BatchNorm statistics, no dropout: deterministic prediction."""
        for net in self.networks().values():
            net.eval()
        return self

    @property
    def device(self) -> torch.device:
        """Device of the generator's weights."""
        return next(self.generator.parameters()).device

    def describe(self) -> dict[str, Any]:
        """Short JSON-able description for result metadata and the CLI."""
        return {
            "preset": self.config.preset,
            "generator": self.config.generator,
            "segmenter": self.config.segmenter,
            "classes": list(self.config.class_names),
            "normalization": self.config.normalization.kind,
            "source": self.source,
            "iterations": self.provenance.iterations,
        }
