"""What a prediction computes (:data:`Mode`) and how it is run (:class:`RunOptions`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

from ..backends import BACKENDS, PRECISIONS, BackendName, Precision
from ..errors import InputError

if TYPE_CHECKING:
    import torch

#: ``eval``: running BN statistics, no dropout (deterministic).
#: ``mc``: eval, but dropout active: N stochastic generations → mean and std.
#: ``original``: BN batch statistics and dropout, as the original test script without
#: ``--eval`` (whole image only; results depend on the image extent).
Mode = Literal["eval", "mc", "original"]
MODES: tuple[str, ...] = get_args(Mode)


@dataclass(frozen=True)
class RunOptions:
    """Execution settings of a prediction, shared by the CLI, the widget and the demo.

    They change how the result is computed (speed, memory, precision), not what it is:
    with fp32, every choice gives the same result up to floating-point summation order
    (U-Net segmenters, which blend tiles, aside).
    """

    #: ``auto``/``cpu``/``cuda``/``cuda:N``/``mps``, or None to stay where the model is.
    device: str | torch.device | None = None
    #: ``fp32``, or mixed precision ``bf16``/``fp16`` (GPU; bf16 also on the CPU).
    precision: Precision = "fp32"
    #: ``auto`` (see :func:`~napari_tagan.core.backends.choose_backend`), ``eager``,
    #: ``channels_last`` or ``onnx``.
    backend: BackendName = "auto"
    #: Core tile side (pixels, rounded up to the stride); None: the largest that fits
    #: ``memory_budget`` (the whole image when it fits).
    tile: int | None = None
    #: Context on each side of a tile (pixels); None: the measured receptive field.
    halo: int | None = None
    #: Tiles per forward; None: 1 on the CPU, as many as fit the budget on a GPU.
    batch_tiles: int | None = None
    #: Bytes of activations a batch of tiles may use; None: from the device's memory.
    memory_budget: int | None = None
    #: Full-size buffers and results in temporary memmaps; None: when they are large.
    on_disk: bool | None = None

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise InputError(
                f"unknown backend {self.backend!r}; expected one of {', '.join(BACKENDS)}"
            )
        if self.precision not in PRECISIONS:
            raise InputError(
                f"unknown precision {self.precision!r}; expected one of {', '.join(PRECISIONS)}"
            )
        if self.tile is not None and self.tile < 1:
            raise InputError(f"tile must be ≥ 1 pixel, got {self.tile}")

    @classmethod
    def merged(cls, options: RunOptions | None, overrides: dict[str, Any]) -> RunOptions:
        """``options`` (default: all defaults) with the fields in ``overrides`` replaced."""
        base = options if options is not None else cls()
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise TypeError(f"unexpected keyword argument(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(base, **overrides) if overrides else base


def check_request(mode: str, generations: int, options: RunOptions) -> None:
    """Reject a mode/generations/options combination that cannot run."""
    if generations < 1:
        raise InputError(f"generations must be ≥ 1, got {generations}")
    if mode == "eval" and generations > 1:
        raise InputError("eval mode is deterministic: use mode 'mc' for several generations")
    if mode not in MODES:
        raise InputError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    if mode == "original" and options.tile is not None:
        raise InputError(
            "original mode uses batch statistics of the whole image: it cannot be tiled "
            "(leave tile unset, or use eval/mc mode)"
        )
