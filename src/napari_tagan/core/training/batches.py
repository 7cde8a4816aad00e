"""Training batches: a seeded stream of crops, augmented identically for every channel.

:class:`BatchSampler` draws shuffled epochs and random crops, flips and 90° rotations;
crops are centred on annotated pixels when a sample is only partly annotated.
:func:`make_batch` cuts them into a :class:`Batch`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, TypeVar

import numpy as np

from ..config import ModelConfig
from ..networks import ARCH_STRIDE
from ..normalization import stretch_channels
from .data import TrainingDataset, TrainingSample

#: Side of the blocks among which the live preset picks its STED regions (pixels).
LIVE_BLOCK = 50

T = TypeVar("T")
U = TypeVar("U")


class Batch(NamedTuple, Generic[T]):
    """One batch (N, C, Y, X), or one image (C, Y, X) from :func:`validation_item`.

    ``g_input`` is G's input (the confocal, plus the live preset's STED regions);
    ``targets``/``weights`` are S's targets and where they hold, None only for a model
    without classes.
    """

    g_input: T
    sted: T
    targets: T | None
    weights: T | None

    def map(self, fn: Callable[[T], U]) -> Batch[U]:
        """The batch with ``fn`` applied to every array present."""
        return Batch(*(None if v is None else fn(v) for v in self))  # type: ignore[arg-type]


def required_multiple(config: ModelConfig) -> int:
    """Crop sides must be multiples of the networks' total stride."""
    archs = [config.generator] + ([config.segmenter] if config.segmenter else [])
    return max(ARCH_STRIDE[a] for a in archs)


def crop_shape(dataset: TrainingDataset, crop_size: int) -> tuple[int, int]:
    """The (Y, X) of training crops.

    ``crop_size`` rounded down to the networks' stride, or with ``crop_size=0`` the
    largest size every image holds.
    """
    m = required_multiple(dataset.config)
    if crop_size > 0:
        side = max(m, crop_size // m * m)
        return side, side
    ys = min(s.shape[0] for s in dataset.samples)
    xs = min(s.shape[1] for s in dataset.samples)
    return max(m, ys // m * m), max(m, xs // m * m)


def _pad_to(array: np.ndarray, shape: tuple[int, int], mode: str) -> np.ndarray:
    py, px = max(0, shape[0] - array.shape[-2]), max(0, shape[1] - array.shape[-1])
    if not (py or px):
        return array
    pads = ((0, 0), (0, py), (0, px))
    if mode == "reflect" and (py >= array.shape[-2] or px >= array.shape[-1]):
        mode = "edge"
    return np.pad(array, pads, mode=mode) if mode != "zero" else np.pad(array, pads)


@dataclass
class Crop:
    """Where and how one sample is cut for a batch."""

    index: int
    y: int
    x: int
    flip_y: bool
    flip_x: bool
    rot: int
    n_regions: int


def draw_crop(
    sample: TrainingSample, index: int, shape: tuple[int, int], rng: np.random.Generator
) -> Crop:
    """Random crop position and augmentation for one sample.

    Partly annotated samples are cut around a randomly chosen annotated pixel, so every
    crop carries some annotation.
    """
    h, w = max(sample.shape[0], shape[0]), max(sample.shape[1], shape[1])
    annotated = sample.annotated_pixels()
    if annotated.size and not sample.fully_annotated:
        flat = int(annotated[rng.integers(annotated.size)])
        py, px = divmod(flat, sample.shape[1])
        y = int(rng.integers(max(0, py - shape[0] + 1), min(py, h - shape[0]) + 1))
        x = int(rng.integers(max(0, px - shape[1] + 1), min(px, w - shape[1]) + 1))
    else:
        y = int(rng.integers(0, h - shape[0] + 1))
        x = int(rng.integers(0, w - shape[1] + 1))
    flips = rng.integers(0, 2, size=2)
    rot = int(rng.integers(0, 4)) if shape[0] == shape[1] else 2 * int(rng.integers(0, 2))
    n_regions = int(rng.integers(1, 3))
    return Crop(index, y, x, bool(flips[0]), bool(flips[1]), rot, n_regions)


def _augment(array: np.ndarray, crop: Crop, shape: tuple[int, int], pad: str) -> np.ndarray:
    a = _pad_to(array, shape, pad)[:, crop.y : crop.y + shape[0], crop.x : crop.x + shape[1]]
    if crop.flip_y:
        a = a[:, ::-1]
    if crop.flip_x:
        a = a[:, :, ::-1]
    if crop.rot:
        a = np.rot90(a, crop.rot, axes=(1, 2))
    return np.ascontiguousarray(a, dtype=np.float32)


def live_regions(confocal: np.ndarray, sted: np.ndarray, n_regions: int, low: float) -> np.ndarray:
    """The live preset's extra G channels for one crop.

    STED in the ``n_regions`` brightest confocal blocks (``low`` elsewhere) and the
    decision map (+1 inside, ``low`` outside).
    """
    h, w = confocal.shape[-2:]
    b = max(1, min(LIVE_BLOCK, h // 2, w // 2))
    ny, nx = h // b, w // b
    blocks = confocal[:, : ny * b, : nx * b].mean(axis=0).reshape(ny, b, nx, b).mean(axis=(1, 3))
    order = np.argsort(-blocks, axis=None, kind="stable")[:n_regions]
    mask = np.zeros((h, w), bool)
    for flat in order:
        by, bx = divmod(int(flat), nx)
        mask[by * b : (by + 1) * b, bx * b : (bx + 1) * b] = True
    regions = np.full((2, h, w), low, np.float32)
    regions[0][mask] = sted.mean(axis=0)[mask]
    regions[1][mask] = 1.0
    return regions


def make_batch(
    dataset: TrainingDataset, crops: Sequence[Crop], shape: tuple[int, int]
) -> Batch[np.ndarray]:
    """Cut and stack the crops into a :class:`Batch`.

    Samples without annotation get all-zero weights (their pixels do not count in the
    segmentation loss); ``targets``/``weights`` are None only for a model without classes.
    """
    cfg = dataset.config
    low = cfg.normalization.out_range[0]
    per_crop = cfg.normalization.kind == "legacy8_minmax"  # the original stretches each crop
    g_in, sted, targets, weights = [], [], [], []
    for crop in crops:
        s = dataset.samples[crop.index]
        c = _augment(s.confocal, crop, shape, "reflect")
        st = _augment(s.sted, crop, shape, "reflect")
        if per_crop:
            c, st = (stretch_channels(a, cfg.normalization.out_range) for a in (c, st))
        if cfg.sted_regions_input:
            c = np.concatenate([c, live_regions(c, st, crop.n_regions, low)], 0)
        g_in.append(c)
        sted.append(st)
        if s.targets is not None and s.weights is not None:
            targets.append(_augment(s.targets, crop, shape, "reflect"))
            weights.append(_augment(s.weights, crop, shape, "zero"))
        elif cfg.n_classes:
            targets.append(np.full((cfg.n_classes, *shape), cfg.mask_range[0], np.float32))
            weights.append(np.zeros((cfg.n_classes, *shape), np.float32))
    return Batch(
        np.stack(g_in),
        np.stack(sted),
        np.stack(targets) if targets else None,
        np.stack(weights) if weights else None,
    )


def validation_item(dataset: TrainingDataset, index: int) -> Batch[np.ndarray]:
    """One whole validation image, cut to the networks' stride (top-left), no augmentation.

    The live preset's STED regions are the two brightest blocks (deterministic).
    """
    s = dataset.samples[index]
    m = required_multiple(dataset.config)
    h, w = (max(m, d // m * m) for d in s.shape)
    crop = Crop(index, 0, 0, False, False, 0, 2)
    return make_batch(dataset, [crop], (h, w)).map(lambda a: a[0])


class BatchSampler:
    """Seeded stream of shuffled epochs; each draw is a batch of crops.

    Every rank of a data-parallel run holds an identical sampler and draws the whole
    global batch, then keeps its own slice: the data order does not depend on how many
    processes share it. :meth:`state_dict` / :meth:`load_state_dict` capture the exact
    position (generator state and the rest of the current epoch).
    """

    def __init__(self, dataset: TrainingDataset, seed: int) -> None:
        self.dataset = dataset
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.pending: list[int] = []

    def next_indices(self, n: int) -> list[int]:
        """The next ``n`` sample indices (new shuffled epochs as needed)."""
        out: list[int] = []
        while len(out) < n:
            if not self.pending:
                self.pending = [int(i) for i in self.rng.permutation(len(self.dataset))]
            take = min(n - len(out), len(self.pending))
            out += self.pending[:take]
            self.pending = self.pending[take:]
        return out

    def draw(self, n: int, shape: tuple[int, int]) -> list[Crop]:
        """Indices and augmentations of the next ``n`` samples."""
        return [
            draw_crop(self.dataset.samples[i], i, shape, self.rng) for i in self.next_indices(n)
        ]

    def state_dict(self) -> dict[str, Any]:
        """Generator state and the remaining indices of the current epoch."""
        return {"rng": self.rng.bit_generator.state, "pending": list(self.pending)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue exactly where :meth:`state_dict` was taken."""
        self.rng.bit_generator.state = state["rng"]
        self.pending = [int(i) for i in state["pending"]]
