"""The TA-GAN updates of one iteration, in the order of the original.

1. G makes a synthetic STED from the confocal; S segments the real STED (and, in step 3,
   the synthetic one);
2. D (conditional PatchGAN on confocal ⊕ STED; not the live preset's STED regions) is
   updated on real vs synthetic (synthetic detached), ``λ_GAN × (GAN(real) + GAN(fake)) / 2``
   (+ gradient penalty for wgangp);
3. with D frozen, G is updated on ``λ_GAN × GAN(D(fake) → real) + λ_seg × seg(S(fake))``
   (+ ``λ_pixel × L1/MSE(fake, real)`` where the config asks for it). ``seg`` is the masked
   MSE against the labels, or for the live preset against the frozen S on the real STED;
4. S is updated on ``λ_seg × seg(S(real))`` against the labels (unless frozen).

S's weights are frozen during G's backward pass: the original computes S's weight
gradients there and discards them (``zero_grad`` before S's step), so skipping them
changes no result and saves a third of S's backward cost.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ..config import ModelConfig
from ..device import Placement
from ..errors import InputError, ModelLoadError
from ..model import TAGANModel
from ..networks import build_discriminator, init_weights
from . import distributed
from .batches import Batch
from .data import TrainingDataset
from .distributed import DistributedContext
from .losses import GANLoss, gradient_penalty, masked_mse, pixel_loss
from .state import ImagePool, TrainingState, match_parameter_layout
from .validation import segmenter_target


def set_requires_grad(net: nn.Module | None, flag: bool) -> None:
    """Freeze (False) or unfreeze ``net``'s weights."""
    if net is not None:
        for p in net.parameters():
            p.requires_grad_(flag)


@contextlib.contextmanager
def batch_statistics(net: nn.Module) -> Iterator[None]:
    """BatchNorm on each batch's statistics, its running statistics left untouched.

    A frozen S runs so while G trains: the original never puts it in eval mode (batch
    statistics), and keeping the running statistics keeps the pretrained S as it was.
    """
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    tracked = [m.track_running_stats for m in norms]
    for m in norms:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m, flag in zip(norms, tracked, strict=True):
            m.track_running_stats = flag


def new_discriminator(config: ModelConfig, seed: int) -> nn.Module:
    """A freshly initialised D, seeded with ``seed`` (the global RNG is left as it was)."""
    cfg = config
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        d_net = build_discriminator(
            cfg.discriminator,
            cfg.image_channels + cfg.output_nc,
            cfg.ndf,
            cfg.norm,
            cfg.n_layers_d,
        )
        return init_weights(d_net, cfg.init_type, cfg.init_gain)


def check_objectives(
    model: TAGANModel, train_data: TrainingDataset, valid_data: TrainingDataset | None
) -> tuple[bool, bool]:
    """Whether S learns from labels, and whether S is trained; raises if the data cannot.

    Also checks that the data fit the model (channels, classes, normalization).
    """
    cfg = model.config
    train_data.check_model(cfg)
    if valid_data is not None:
        valid_data.check_model(cfg, "validation data")
    uses_labels = cfg.segmenter is not None and cfg.seg_target == "labels"
    train_segmenter = model.segmenter is not None and not cfg.freeze_segmenter
    if model.segmenter is None and cfg.segmenter is not None:
        raise InputError("the model has no segmenter weights but its config names one")
    if train_segmenter and uses_labels and not train_data.has_targets:
        raise InputError(
            f"the {cfg.preset!r} preset trains S on labels, but the training data has no "
            "annotated pixels; add labels (masks) or use a preset without S"
        )
    if cfg.seg_target == "segmenter_on_real" and model.segmenter is None:
        raise InputError(f"the {cfg.preset!r} preset needs a (pretrained) segmenter")
    return uses_labels, train_segmenter


def loss_names(model: TAGANModel, train_segmenter: bool) -> tuple[str, ...]:
    """The loss terms an iteration reports, in ``losses.csv``'s order."""
    cfg = model.config
    names = ["D_real", "D_fake", *(["D_gp"] if cfg.gan_mode == "wgangp" else []), "D"]
    names.append("G_GAN")
    if model.segmenter is not None and cfg.lambda_seg > 0:
        names.append("G_seg")
    if cfg.lambda_pixel > 0:
        names.append("G_pixel")
    names.append("G")
    if train_segmenter:
        names.append("S")
    return tuple(names)


class UpdateSteps:
    """D, G and S updates on one batch, with their optimizers, loss scaler and image pool.

    ``trained`` are the networks being updated (bare; wrapped for DDP here under torchrun);
    ``model`` holds them all.
    """

    def __init__(
        self,
        model: TAGANModel,
        trained: dict[str, nn.Module | None],
        placement: Placement,
        *,
        loss_names: tuple[str, ...],
        uses_labels: bool,
        pool: ImagePool,
        dist: DistributedContext | None = None,
    ) -> None:
        self.model, self.config, self.placement = model, model.config, placement
        self.loss_names, self.uses_labels = loss_names, uses_labels
        self.pool, self.dist = pool, dist
        nets = {role: net for role, net in trained.items() if net is not None}
        self.optimizers = {role: self._adam(net) for role, net in nets.items()}
        if dist is not None:
            nets = {k: distributed.data_parallel(n, placement.device) for k, n in nets.items()}
        self.networks = nets
        self.gan_loss = GANLoss(self.config.gan_mode)
        fp16 = placement.amp_dtype == torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=fp16)

    def _adam(self, net: nn.Module) -> torch.optim.Optimizer:
        """Adam with the config's lr and beta1, as the original; fused where it exists."""
        fused = True if self.placement.device.type in ("cpu", "cuda") else None
        betas = (self.config.beta1, 0.999)
        return torch.optim.Adam(net.parameters(), lr=self.config.lr, betas=betas, fused=fused)

    def train_mode(self) -> None:
        """Training mode for G, D and S, a frozen S too (see :func:`batch_statistics`)."""
        self.model.generator.train()
        self.model.discriminator.train()  # type: ignore[union-attr]
        if self.model.segmenter is not None:
            self.model.segmenter.train()

    def state_dict(self) -> dict[str, Any]:
        """Optimizer, pool and loss-scaler states (:class:`TrainingState` fields)."""
        return {
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "pool": self.pool.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
        }

    def load_state(self, state: TrainingState) -> None:
        """Restore :meth:`state_dict`'s part of a saved run."""
        for key, opt in self.optimizers.items():
            if key not in state.optimizers:
                raise ModelLoadError(f"the saved run has no optimizer state for the {key}")
            opt.load_state_dict(state.optimizers[key])
            match_parameter_layout(opt)
        self.pool.load_state_dict(state.pool, self.placement.device)
        if state.scaler and self.scaler.is_enabled():
            self.scaler.load_state_dict(state.scaler)

    def train_step(self, batch: Batch[torch.Tensor]) -> dict[str, float]:
        """One D, G and S update; returns each loss term as a float (mean over ranks)."""
        out: dict[str, torch.Tensor] = {}
        with self.placement.autocast():
            fake = self.networks["generator"](batch.g_input)
            # S on the real STED, before S(fake) as the original (the order in which
            # BatchNorm's running statistics see the two); its graph waits for S's step.
            s_net = self.networks.get("segmenter")
            seg_real = s_net(batch.sted) if s_net is not None else None
        self._update_discriminator(batch, fake, out)
        self._update_generator(batch, fake, out)
        if seg_real is not None:
            self._update_segmenter(batch, seg_real, out)
        if self.scaler.is_enabled():
            self.scaler.update()
        values = torch.stack([out[k].detach().float() for k in self.loss_names]).cpu()
        if self.dist is not None:
            distributed.mean_over_ranks(values)
        return dict(zip(self.loss_names, values.tolist(), strict=True))

    def _update_discriminator(
        self, batch: Batch[torch.Tensor], fake: torch.Tensor, out: dict[str, torch.Tensor]
    ) -> None:
        """D on real vs synthetic (detached, through the pool): mean of the two terms."""
        cfg, d_net = self.config, self.model.discriminator
        assert d_net is not None
        set_requires_grad(d_net, True)
        self.optimizers["discriminator"].zero_grad(set_to_none=True)
        real_pair = torch.cat([self._condition(batch), batch.sted], 1)
        fake_pair = self.pool.query(torch.cat([self._condition(batch), fake.detach()], 1))
        with self.placement.autocast():
            out["D_fake"] = self.gan_loss(self.networks["discriminator"](fake_pair), False)
            out["D_real"] = self.gan_loss(self.networks["discriminator"](real_pair), True)
        loss = (out["D_fake"] + out["D_real"]) * 0.5 * cfg.lambda_gan
        if cfg.gan_mode == "wgangp":
            out["D_gp"] = gradient_penalty(d_net, real_pair, fake_pair, weight=cfg.lambda_gp)
            loss = loss + out["D_gp"]
        out["D"] = loss
        self._backward_step(loss, "discriminator")

    def _update_generator(
        self, batch: Batch[torch.Tensor], fake: torch.Tensor, out: dict[str, torch.Tensor]
    ) -> None:
        """G: fool the frozen D, help S (frozen too: its weight gradients are unused)."""
        cfg, d_net = self.config, self.model.discriminator
        assert d_net is not None
        set_requires_grad(d_net, False)
        set_requires_grad(self.model.segmenter, False)
        self.optimizers["generator"].zero_grad(set_to_none=True)
        with self.placement.autocast():
            d_fake = d_net(torch.cat([self._condition(batch), fake], 1))
            out["G_GAN"] = self.gan_loss(d_fake, True) * cfg.lambda_gan
            loss = out["G_GAN"]
            if "G_seg" in self.loss_names:
                out["G_seg"] = self._segmentation_loss(batch, fake) * cfg.lambda_seg
                loss = loss + out["G_seg"]
            if cfg.lambda_pixel > 0:
                out["G_pixel"] = pixel_loss(fake, batch.sted, cfg.pixel_loss) * cfg.lambda_pixel
                loss = loss + out["G_pixel"]
        out["G"] = loss
        self._backward_step(loss, "generator")
        set_requires_grad(d_net, True)

    def _condition(self, batch: Batch[torch.Tensor]) -> torch.Tensor:
        """D's condition: the confocal only (not the live preset's STED regions and map)."""
        return batch.g_input[:, : self.config.image_channels]

    def _segmentation_loss(self, batch: Batch[torch.Tensor], fake: torch.Tensor) -> torch.Tensor:
        """S on the synthetic STED vs the labels, or vs S on the real STED (live preset)."""
        s_net = self.model.segmenter
        assert s_net is not None
        frozen = "segmenter" not in self.optimizers
        with batch_statistics(s_net) if frozen else contextlib.nullcontext():
            seg_fake = s_net(fake)
            if self.uses_labels:
                return masked_mse(seg_fake, batch.targets, batch.weights)
            return masked_mse(seg_fake, segmenter_target(self.model, batch.sted))

    def _update_segmenter(
        self, batch: Batch[torch.Tensor], seg_real: torch.Tensor, out: dict[str, torch.Tensor]
    ) -> None:
        """S on the real STED against the labels.

        A batch without any annotated pixel leaves S as it is: a zero gradient would
        still move it through Adam's momentum.
        """
        set_requires_grad(self.model.segmenter, True)
        self.optimizers["segmenter"].zero_grad(set_to_none=True)
        with self.placement.autocast():
            out["S"] = masked_mse(seg_real, batch.targets, batch.weights) * self.config.lambda_seg
        labelled = self._has_annotation(batch.weights)
        if labelled or self.dist is not None:  # every DDP rank runs the same backward
            self._backward_step(out["S"], "segmenter", step=labelled)

    def _has_annotation(self, weights: torch.Tensor | None) -> bool:
        """Whether the batch (of every rank, under DDP) holds an annotated pixel."""
        flag = weights is not None and bool(weights.amax() > 0)
        return distributed.any_rank(flag, self.placement.device) if self.dist is not None else flag

    def _backward_step(self, loss: torch.Tensor, role: str, *, step: bool = True) -> None:
        opt = self.optimizers[role]
        if self.scaler.is_enabled():
            self.scaler.scale(loss).backward()
            if step:
                self.scaler.step(opt)
        else:
            loss.backward()
            if step:
                opt.step()
