"""Regions of the field of view: pixel boxes with their physical position and scores.

Conventions. A region is a half-open pixel box ``[y0, y1) × [x0, x1)``. ``origin_um`` is
the physical (stage) position of the image's top-left corner, the outer edge of pixel
(0, 0); a region's physical box is ``origin + (y0, x0) · pixel size`` to
``origin + (y1, x1) · pixel size``. napari's ``translate`` is the centre of pixel (0, 0),
i.e. ``origin_um + pixel_size / 2``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..errors import InputError


@dataclass(frozen=True)
class Region:
    """One candidate region for a real STED acquisition.

    ``score`` ranks regions (higher: acquiring it is more informative); ``variability`` is
    the mean per-pixel std of the synthetic STED over generations (intensity units);
    ``disagreement`` the mean fraction of generations whose segmentation differs from the
    majority, per pixel, in [0, 0.5]. ``present``/``confidence``: per class, whether the
    structure is there in the majority of generations and the fraction agreeing.
    """

    y0: int
    x0: int
    y1: int
    x1: int
    score: float = 0.0
    variability: float = 0.0
    disagreement: float = 0.0
    present: tuple[bool, ...] = ()
    confidence: tuple[float, ...] = ()

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return self.y1 - self.y0, self.x1 - self.x0

    @property
    def area(self) -> int:
        """Pixels covered."""
        return (self.y1 - self.y0) * (self.x1 - self.x0)

    def uncertain(self, below: float) -> bool:
        """Some class's present/absent call has a confidence under ``below``."""
        return any(c < below for c in self.confidence)


def _pair(value: float | Sequence[float], what: str, *, positive: bool) -> tuple[float, float]:
    items = [value, value] if np.ndim(value) == 0 else list(value)  # type: ignore[list-item]
    if len(items) != 2:
        raise InputError(f"{what} must be one number or (y, x), got {value!r}")
    try:
        pair = (float(items[0]), float(items[1]))
    except (TypeError, ValueError):
        raise InputError(f"{what} must be numbers, got {value!r}") from None
    if not all(math.isfinite(p) for p in pair) or (positive and min(pair) <= 0):
        kind = "positive finite numbers" if positive else "finite numbers"
        raise InputError(f"{what} must be {kind} (µm), got {value!r}")
    return pair


@dataclass(frozen=True)
class RegionSet:
    """Regions of one image with the geometry needed to place them on the microscope."""

    regions: tuple[Region, ...]
    image_shape: tuple[int, int]
    pixel_size_um: tuple[float, float] = (1.0, 1.0)
    origin_um: tuple[float, float] = (0.0, 0.0)
    class_names: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "pixel_size_um", _pair(self.pixel_size_um, "pixel size", positive=True)
        )
        object.__setattr__(self, "origin_um", _pair(self.origin_um, "origin", positive=False))
        h, w = (int(s) for s in self.image_shape)
        if h < 1 or w < 1:
            raise InputError(f"image shape must be positive, got {self.image_shape}")
        object.__setattr__(self, "image_shape", (h, w))
        for i, r in enumerate(self.regions, 1):
            if not (0 <= r.y0 < r.y1 <= h and 0 <= r.x0 < r.x1 <= w):
                raise InputError(
                    f"region {i} (pixels y {r.y0}–{r.y1}, x {r.x0}–{r.x1}) is empty or "
                    f"outside the {h}×{w} image"
                )
            if r.present and len(r.present) != len(self.class_names):
                raise InputError(
                    f"region {i} has {len(r.present)} present/absent calls for "
                    f"{len(self.class_names)} class(es)"
                )

    def physical(self, region: Region) -> tuple[float, float, float, float]:
        """(y0, x0, y1, x1) of ``region`` in µm (see the module's conventions)."""
        (py, px), (oy, ox) = self.pixel_size_um, self.origin_um
        return (oy + region.y0 * py, ox + region.x0 * px, oy + region.y1 * py, ox + region.x1 * px)

    def mask(self) -> np.ndarray:
        """Boolean (Y, X) map of the pixels inside any region (the decision map)."""
        out = np.zeros(self.image_shape, bool)
        for r in self.regions:
            out[r.y0 : r.y1, r.x0 : r.x1] = True
        return out

    def fraction(self) -> float:
        """Fraction of the field of view the regions cover (overlaps counted once)."""
        return float(self.mask().mean())

    def with_regions(self, regions: Iterable[Region]) -> RegionSet:
        """The same image geometry with other regions (e.g. edited by the user)."""
        return replace(self, regions=tuple(regions))


def pixel_box_from_physical(
    box_um: Sequence[float], pixel_size_um: tuple[float, float], origin_um: tuple[float, float]
) -> tuple[int, int, int, int]:
    """(y0, x0, y1, x1) in µm → the pixel box it covers (edges rounded to the nearest)."""
    y0, x0, y1, x1 = box_um
    (py, px), (oy, ox) = pixel_size_um, origin_um
    return (
        round((y0 - oy) / py),
        round((x0 - ox) / px),
        round((y1 - oy) / py),
        round((x1 - ox) / px),
    )


def rectangles(regions: Iterable[Region]) -> list[np.ndarray]:
    """Rectangles covering each region, for a napari Shapes layer ((4, 2) data coordinates).

    In napari's data coordinates pixel ``i`` spans ``[i - 0.5, i + 0.5]``.
    """
    out = []
    for r in regions:
        top, left, bottom, right = r.y0 - 0.5, r.x0 - 0.5, r.y1 - 0.5, r.x1 - 0.5
        out.append(
            np.array([[top, left], [top, right], [bottom, right], [bottom, left]], np.float64)
        )
    return out


def boxes_from_shapes(shapes: Iterable[np.ndarray], image_shape: tuple[int, int]) -> list[Region]:
    """Pixel boxes of shapes drawn in an image's data coordinates (bounding boxes, clipped).

    Shapes that fall outside the image or cover less than one pixel are dropped.
    """
    h, w = image_shape
    out = []
    for vertices in shapes:
        v = np.asarray(vertices, np.float64)[:, -2:]
        y0, x0 = np.clip(np.round(v.min(0) + 0.5), 0, (h, w)).astype(int)
        y1, x1 = np.clip(np.round(v.max(0) + 0.5), 0, (h, w)).astype(int)
        if y1 > y0 and x1 > x0:
            out.append(Region(int(y0), int(x0), int(y1), int(x1)))
    return out
