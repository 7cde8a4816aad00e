"""What a run saves to resume: :class:`TrainingState`, and the synthetic-image pool."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch

from ..device import resolve_device
from ..errors import ModelLoadError


@dataclass
class TrainingState:
    """Everything :meth:`Trainer.from_checkpoint` needs besides the weights.

    Stored in ``latest.tagan`` as a plain dict (:meth:`to_dict`); the settings (batch and
    crop size, seed, length, intervals, memory format) are defaults for the continued run.
    """

    iteration: int
    total: int
    optimizers: dict[str, Any]
    schedule: dict[str, Any]
    sampler: dict[str, Any]
    pool: dict[str, Any]
    torch_rng: torch.Tensor
    seed: int | None = None
    batch_size: int | None = None
    crop_size: int | None = None
    validate_every: int | None = None
    checkpoint_every: int | None = None
    channels_last: bool | None = None
    device_type: str | None = None
    amp_dtype: str | None = None
    world_size: int = 1
    metrics: list[dict[str, float]] = field(default_factory=list)
    best_metric: str | None = None
    best_value: float | None = None
    best_iteration: int | None = None
    scaler: dict[str, Any] = field(default_factory=dict)
    origin: str = ""
    training_data_fingerprint: str = ""
    cuda_rng: torch.Tensor | None = None

    def resume_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """:class:`Trainer` options of the continued run: the saved settings unless given."""
        out = dict(options)
        for key in ("batch_size", "crop_size", "seed", "validate_every", "checkpoint_every"):
            if out.get(key) is None and getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if out.get("iterations") is None and out.get("epochs") is None:
            out["iterations"] = self.total
        if self.device_type == resolve_device(out.get("device") or "auto").type:
            # Same kind of device: same memory format, so the continued run is bitwise equal.
            out.setdefault("channels_last", self.channels_last)
        out["overwrite"] = True
        return out

    def to_dict(self) -> dict[str, Any]:
        """The bundle's layout of the state."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        for key in ("best_metric", "best_value", "best_iteration"):
            del out[key]
        value = self.best_value
        out["best"] = {
            "metric": self.best_metric,
            "value": value if value is not None and math.isfinite(value) else None,
            "iteration": self.best_iteration,
        }
        if self.cuda_rng is None:
            del out["cuda_rng"]
        return out

    @classmethod
    def from_dict(cls, state: dict[str, Any], where: str = "the bundle") -> TrainingState:
        """Read :meth:`to_dict`'s layout; raises :class:`ModelLoadError` if it is not one."""
        if "iteration" not in state:
            raise ModelLoadError(f"{where} holds no training state to resume from")
        names = set(cls.__dataclass_fields__) - {"best_metric", "best_value", "best_iteration"}
        values = {k: v for k, v in state.items() if k in names}
        best = state.get("best") or {}
        try:
            return cls(
                **values,
                best_metric=best.get("metric"),
                best_value=best.get("value"),
                best_iteration=best.get("iteration"),
            )
        except TypeError as exc:
            raise ModelLoadError(f"{where} holds an incomplete training state: {exc}") from exc


def match_parameter_layout(opt: torch.optim.Optimizer) -> None:
    """Give loaded optimizer state the memory layout of its parameters.

    Saved state is contiguous; channels-last parameters meeting contiguous moments would
    make fused Adam differ in the last bit from an uninterrupted run.
    """
    for group in opt.param_groups:
        for p in group["params"]:
            state = opt.state.get(p, {})
            for name, value in list(state.items()):
                if torch.is_tensor(value) and value.shape == p.shape:
                    if value.stride() != p.stride():
                        state[name] = torch.empty_like(p, dtype=value.dtype).copy_(value)


class ImagePool:
    """Buffer of past synthetic D inputs (pix2pix's image pool); size 0 disables it.

    Each returned image is, with probability 1/2 once the pool is full, a stored one
    (which the new image replaces). Draws use a dedicated seeded generator, saved with
    the training state.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.images: list[torch.Tensor] = []
        self.rng = np.random.Generator(np.random.PCG64(seed))

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """Images to show D in place of ``images`` (detached)."""
        if self.size == 0:
            return images
        out = []
        for image in images.detach():
            image = image[None]
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif self.rng.random() > 0.5:
                k = int(self.rng.integers(self.size))
                out.append(self.images[k].clone())
                self.images[k] = image.clone()
            else:
                out.append(image)
        return torch.cat(out, 0)

    def state_dict(self) -> dict[str, Any]:
        """Stored images (CPU) and the generator state."""
        return {"images": [t.cpu() for t in self.images], "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        """Restore :meth:`state_dict`."""
        self.images = [t.to(device) for t in state["images"]]
        self.rng.bit_generator.state = state["rng"]
