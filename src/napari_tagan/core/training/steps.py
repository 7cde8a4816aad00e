"""The TA-GAN updates of one iteration: D, then G, then S (see :mod:`.trainer`)."""

from __future__ import annotations

import torch
from torch import nn

from ..model import TAGANModel
from . import distributed
from .batches import Batch
from .distributed import DistributedContext
from .losses import GANLoss, gradient_penalty, masked_mse, pixel_loss
from .state import ImagePool
from .validation import Placement, segmenter_target


def set_requires_grad(net: nn.Module | None, flag: bool) -> None:
    """Freeze (False) or unfreeze ``net``'s weights."""
    if net is not None:
        for p in net.parameters():
            p.requires_grad_(flag)


class UpdateSteps:
    """D, G and S updates on one batch, with their optimizers, loss scaler and image pool.

    ``networks`` are the passes that run training forward passes (DDP-wrapped under
    torchrun); ``model`` holds the bare networks.
    """

    def __init__(
        self,
        model: TAGANModel,
        networks: dict[str, nn.Module],
        optimizers: dict[str, torch.optim.Optimizer],
        placement: Placement,
        *,
        loss_names: tuple[str, ...],
        uses_labels: bool,
        pool: ImagePool,
        dist: DistributedContext | None = None,
    ) -> None:
        self.model, self.config = model, model.config
        self.networks, self.optimizers, self.placement = networks, optimizers, placement
        self.loss_names, self.uses_labels = loss_names, uses_labels
        self.pool, self.dist = pool, dist
        self.gan_loss = GANLoss(self.config.gan_mode)
        fp16 = placement.amp_dtype == torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=fp16)

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
        real_pair = torch.cat([batch.g_input, batch.sted], 1)
        fake_pair = self.pool.query(torch.cat([batch.g_input, fake.detach()], 1))
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
            d_fake = d_net(torch.cat([batch.g_input, fake], 1))
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

    def _segmentation_loss(self, batch: Batch[torch.Tensor], fake: torch.Tensor) -> torch.Tensor:
        """S on the synthetic STED vs the labels, or vs S on the real STED (live preset)."""
        assert self.model.segmenter is not None
        seg_fake = self.model.segmenter(fake)
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
        return distributed.any_rank(flag, self.device) if self.dist is not None else flag

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

