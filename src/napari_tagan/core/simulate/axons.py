"""Axonal F-actin: curved axons with periodic-ring stretches and patchy stretches."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from .geometry import (
    ANNOTATION_MARGIN_NM,
    RING_FWHM_NM,
    neurite_paths,
    periodic_rings,
    ring_brightness,
    soft_inside,
    stretch_table,
    table_at,
    texture_field,
    thin_sigma_px,
)
from .optics import Canvas
from .params import StructureParams

#: Unstructured axonal F-actin (where the rings are absent) gathers in patches a few
#: hundred nm wide (correlation length and log-normal contrast of the patch field).
_AXON_PATCH_GRAIN_NM = 120.0

_AXON_PATCH_CONTRAST = 0.9


def draw_axons(
    canvas: Canvas, rng: np.random.Generator, sp: StructureParams
) -> tuple[np.ndarray, np.ndarray]:
    """Curved axons: ring stretches (lattice, faint fine background), patchy stretches."""
    px = canvas.pixel_nm
    density = np.zeros(canvas.shape)
    rings_mask = np.zeros(canvas.shape, dtype=bool)
    texture = texture_field(canvas.shape, rng, 60.0 / px, 0.45)
    patches = texture_field(canvas.shape, rng, _AXON_PATCH_GRAIN_NM / px, _AXON_PATCH_CONTRAST)
    count = max(1, int(rng.poisson(sp.density * canvas.field_diagonal_um / 3.5)))
    ring_sigma = thin_sigma_px(RING_FWHM_NM, px)
    edge_soft = thin_sigma_px(20.0, px)
    margin = ANNOTATION_MARGIN_NM / px
    period = sp.ring_period_nm / px
    step = 0.5
    for path in neurite_paths(canvas, rng, count, 2000.0, 0.35):
        radius = rng.uniform(150.0, 450.0) / px
        wobble = rng.uniform(0.0, 0.15)
        wobble_k = 2.0 * math.pi * px / rng.uniform(1500.0, 4000.0)
        wobble_phase = rng.uniform(0, 2 * math.pi)
        idx, s, d = path.local_coords(canvas.shape, radius * (1.0 + wobble) + 3.0 * edge_soft)
        local_radius = radius * (1.0 + wobble * np.sin(wobble_k * s + wobble_phase))
        across = soft_inside(np.abs(d), local_radius, edge_soft)
        across *= 0.7 + 0.3 * np.clip(np.abs(d) / local_radius, 0.0, 1.0) ** 2
        stretch = stretch_table(rng, path.s[-1], sp.ring_fraction, 1800.0 / px, step)
        ring_amp = table_at(
            ndimage.gaussian_filter1d(stretch.astype(float), 75.0 / px / step), s, step
        )
        rings = periodic_rings(
            s, period, ring_sigma, rng.uniform(0.0, period), ring_brightness(rng)
        )
        tex = texture.ravel()[idx]
        patchy = patches.ravel()[idx]
        signal = ring_amp * (rings + 0.12 * tex) + (1.0 - ring_amp) * 0.35 * patchy
        density.ravel()[idx] += rng.uniform(0.6, 1.0) * across * signal
        annotated = (table_at(stretch.astype(float), s, step) > 0.5) & (
            np.abs(d) <= local_radius + margin
        )
        rings_mask.ravel()[idx[annotated]] = True
    return density, rings_mask[None]
