"""Learning-rate schedules of the original (pix2pix) options, as plain functions of the epoch.

A schedule multiplies the base learning rate by a factor that depends on the number of
completed epochs (``linear``, ``step``, ``cosine``) or on the history of a validation
metric (``plateau``). Keeping it a small explicit state (instead of torch scheduler
objects holding closures) makes it trivial to save and restore exactly.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from ..config import ModelConfig

#: ReduceLROnPlateau settings of the original: ×0.2 after 5 validations without a 1 %
#: relative improvement.
PLATEAU_FACTOR = 0.2
PLATEAU_PATIENCE = 5
PLATEAU_THRESHOLD = 0.01
STEP_GAMMA = 0.1


@dataclass
class LRSchedule:
    """Learning-rate factor by epoch: ``linear``, ``step``, ``plateau`` or ``cosine``.

    ``linear`` keeps the rate for ``niter`` epochs and decays it linearly over
    ``niter_decay`` more (the original's rule: during epoch ``e`` the factor is
    ``1 − max(0, e + 1 − niter) / (niter_decay + 1)``); ``step`` multiplies by 0.1 every
    ``lr_decay_iters`` epochs; ``cosine`` anneals to 0 over ``niter`` epochs; ``plateau``
    multiplies by 0.2 when the monitored metric (higher is better) has not improved by
    1 % for 5 validations.
    """

    policy: str
    niter: int
    niter_decay: int
    lr_decay_iters: int
    plateau_factor: float = 1.0
    plateau_best: float | None = None
    plateau_bad: int = 0

    @classmethod
    def from_config(cls, config: ModelConfig) -> LRSchedule:
        """The schedule a config asks for."""
        return cls(config.lr_policy, config.niter, config.niter_decay, config.lr_decay_iters)

    def factor(self, epoch: int) -> float:
        """Multiplier of the base learning rate during (0-based) epoch ``epoch``."""
        if self.policy == "linear":
            return 1.0 - max(0, epoch + 1 - self.niter) / float(self.niter_decay + 1)
        if self.policy == "step":
            return STEP_GAMMA ** (epoch // self.lr_decay_iters)
        if self.policy == "cosine":
            t_max = max(self.niter, 1)
            return 0.5 * (1.0 + math.cos(math.pi * min(epoch, t_max) / t_max))
        if self.policy == "plateau":
            return self.plateau_factor
        raise ValueError(f"unknown lr policy {self.policy!r}")

    def observe(self, metric: float) -> None:
        """Record a validation metric (higher is better); only ``plateau`` uses it."""
        if self.policy != "plateau" or not math.isfinite(metric):
            return
        if self.plateau_best is None or metric > self.plateau_best * (
            1 + math.copysign(PLATEAU_THRESHOLD, self.plateau_best)
        ):
            self.plateau_best = metric
            self.plateau_bad = 0
            return
        self.plateau_bad += 1
        if self.plateau_bad > PLATEAU_PATIENCE:
            self.plateau_factor *= PLATEAU_FACTOR
            self.plateau_bad = 0

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the schedule exactly."""
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output."""
        for key, value in state.items():
            setattr(self, key, value)
