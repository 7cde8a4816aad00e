"""Isolated point emitters on a grid, to measure the point-spread functions."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .optics import Canvas
from .params import StructureParams


def draw_beads(
    canvas: Canvas, rng: np.random.Generator, sp: StructureParams
) -> tuple[np.ndarray, np.ndarray]:
    """Point emitters on pixel centres, 1 µm apart: isolated for any PSF up to ~350 nm."""
    del rng, sp
    px = canvas.pixel_nm
    density = np.zeros(canvas.shape)
    spacing = max(round(1000.0 / px), 2)
    first = spacing // 2
    ys = np.arange(canvas.offset[0] + first, canvas.offset[0] + canvas.field_shape[0], spacing)
    xs = np.arange(canvas.offset[1] + first, canvas.offset[1] + canvas.field_shape[1], spacing)
    density[np.ix_(ys, xs)] = 1.0
    radius = max(2.0, 60.0 / px)
    dist = ndimage.distance_transform_edt(density == 0)
    return density, (dist <= radius)[None]
