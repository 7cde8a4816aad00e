"""Synaptic protein nanodomains: synapses of diffuse emitters holding dense clusters."""

from __future__ import annotations

import math

import numpy as np

from .geometry import soft_inside, splat
from .optics import Canvas
from .params import FWHM_PER_SIGMA, StructureParams


def draw_nanodomains(
    canvas: Canvas, rng: np.random.Generator, sp: StructureParams
) -> tuple[np.ndarray, np.ndarray]:
    """Synapses (ellipses of diffuse emitters) holding 1–5 nanodomains 30–80 nm wide.

    Every emitter has the same brightness; the diffuse emitters of a synapse are about
    a sixth as dense as a nanodomain's peak once blurred by the STED PSF.
    """
    px = canvas.pixel_nm
    density = np.zeros(canvas.shape)
    mask = np.zeros(canvas.shape, dtype=bool)
    count = max(1, int(rng.poisson(sp.density * 0.3 * canvas.field_area_um2)))
    emitters_y: list[np.ndarray] = []
    emitters_x: list[np.ndarray] = []
    for _ in range(count):
        semi = rng.uniform(150.0, 400.0, 2) / px
        angle = rng.uniform(0.0, math.pi)
        centre = canvas.random_point(rng, margin_px=min(semi.max(), 0.2 * min(canvas.field_shape)))
        c, s_ = math.cos(angle), math.sin(angle)
        win = math.ceil(semi.max()) + 4
        cy, cx = (round(v) for v in centre)
        ys = slice(max(cy - win, 0), min(cy + win + 1, canvas.shape[0]))
        xs = slice(max(cx - win, 0), min(cx + win + 1, canvas.shape[1]))
        yy, xx = np.ogrid[ys, xs]
        a = ((yy - centre[0]) * c + (xx - centre[1]) * s_) / semi[0]
        b = (-(yy - centre[0]) * s_ + (xx - centre[1]) * c) / semi[1]
        inside = soft_inside(np.hypot(a, b), 1.0, 0.15)
        # Diffuse emitters: Poisson numbers per pixel (emitters per 20 nm pixel 0.3–0.9).
        per_px = rng.uniform(0.3, 0.9) * (px / 20.0) ** 2
        density[ys, xs] += rng.poisson(per_px * inside)
        for _ in range(1 + min(int(rng.poisson(1.5)), 4)):
            radius_frac = math.sqrt(rng.uniform(0.0, 0.55))
            theta = rng.uniform(0.0, 2.0 * math.pi)
            la = radius_frac * math.cos(theta) * semi[0]
            lb = radius_frac * math.sin(theta) * semi[1]
            ny = centre[0] + la * c - lb * s_
            nx = centre[1] + la * s_ + lb * c
            width_nm = rng.uniform(30.0, 80.0)
            sigma = width_nm / FWHM_PER_SIGMA / px
            n_emit = int(rng.poisson(rng.uniform(40.0, 120.0)))
            emitters_y.append(ny + sigma * rng.standard_normal(n_emit))
            emitters_x.append(nx + sigma * rng.standard_normal(n_emit))
            footprint = max(0.5 * width_nm / px + 0.5, 1.5)
            r = math.ceil(footprint)
            fy = slice(max(round(ny) - r, 0), min(round(ny) + r + 1, canvas.shape[0]))
            fx = slice(max(round(nx) - r, 0), min(round(nx) + r + 1, canvas.shape[1]))
            fyy, fxx = np.ogrid[fy, fx]
            mask[fy, fx] |= np.hypot(fyy - ny, fxx - nx) <= footprint
    if emitters_y:
        splat(density, np.concatenate(emitters_y), np.concatenate(emitters_x))
    return density, mask[None]
