"""Objectives of TA-GAN training: GAN terms, gradient penalty, masked segmentation MSE."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

GanMode = Literal["vanilla", "lsgan", "wgangp"]


class GANLoss(nn.Module):
    """The adversarial term for a patch map of D's outputs.

    ``vanilla``: binary cross-entropy with logits against 1 (real) / 0 (fake); ``lsgan``:
    mean squared error against the same targets; ``wgangp``: the Wasserstein critic
    (−mean for real, +mean for fake), used with :func:`gradient_penalty`.
    """

    def __init__(self, mode: GanMode = "vanilla") -> None:
        super().__init__()
        if mode not in ("vanilla", "lsgan", "wgangp"):
            raise ValueError(f"unknown gan_mode {mode!r}; expected vanilla, lsgan or wgangp")
        self.mode = mode

    def forward(self, prediction: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        prediction = prediction.float()
        if self.mode == "wgangp":
            return -prediction.mean() if target_is_real else prediction.mean()
        target = torch.full_like(prediction, 1.0 if target_is_real else 0.0)
        if self.mode == "vanilla":
            return F.binary_cross_entropy_with_logits(prediction, target)
        return F.mse_loss(prediction, target)


def gradient_penalty(
    discriminator: nn.Module,
    real: torch.Tensor,
    fake: torch.Tensor,
    *,
    weight: float = 10.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """WGAN-GP penalty ``weight × (‖∇D(x̂)‖₂ − 1)²`` at random mixtures of real and fake.

    ``real`` and ``fake`` are D's full inputs (condition and STED concatenated); one
    mixing coefficient per sample, as in WGAN-GP.
    """
    alpha = torch.rand(
        real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype, generator=generator
    )
    mixed = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    out = discriminator(mixed)
    (grad,) = torch.autograd.grad(
        outputs=out,
        inputs=mixed,
        grad_outputs=torch.ones_like(out),
        create_graph=True,
        retain_graph=True,
    )
    norms = (grad.flatten(1) + 1e-16).norm(2, dim=1)
    return ((norms - 1.0) ** 2).mean() * weight


def masked_mse(
    prediction: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean squared error over the pixels whose weight is 1 (annotated pixels only).

    With all weights 1 (or ``weights=None``) this is the plain MSE of the original; with
    no annotated pixel at all it is 0 and gives no gradient.
    """
    diff = (prediction.float() - target.float()) ** 2
    if weights is None:
        return diff.mean()
    weights = weights.float()
    return (diff * weights).sum() / weights.sum().clamp_min(1.0)


def pixel_loss(prediction: torch.Tensor, target: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """L1 or MSE between the synthetic and the real STED (pix2pix-style presets)."""
    if kind == "l1":
        return F.l1_loss(prediction.float(), target.float())
    if kind == "mse":
        return F.mse_loss(prediction.float(), target.float())
    raise ValueError(f"unknown pixel loss {kind!r}; expected l1 or mse")
