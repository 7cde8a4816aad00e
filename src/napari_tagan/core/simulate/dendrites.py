"""Dendritic F-actin: wide shafts with ring stretches, longitudinal fibers and spines."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from .geometry import (
    ANNOTATION_MARGIN_NM,
    RING_FWHM_NM,
    CurvePath,
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
from .params import FWHM_PER_SIGMA, StructureParams

_FIBER_FWHM_NM = 45.0


def draw_dendrites(
    canvas: Canvas, rng: np.random.Generator, sp: StructureParams
) -> tuple[np.ndarray, np.ndarray]:
    """Wide shafts: ring and fiber stretches (classes may overlap), unlabelled spines."""
    px = canvas.pixel_nm
    density = np.zeros(canvas.shape)
    masks = np.zeros((2, *canvas.shape), dtype=bool)
    texture = texture_field(canvas.shape, rng, 70.0 / px, 0.5)
    count = max(1, int(rng.poisson(sp.density * canvas.field_diagonal_um / 8.0)))
    ring_sigma = thin_sigma_px(RING_FWHM_NM, px)
    fiber_sigma = thin_sigma_px(_FIBER_FWHM_NM, px)
    edge_soft = thin_sigma_px(30.0, px)
    margin = ANNOTATION_MARGIN_NM / px
    period = sp.ring_period_nm / px
    step = 0.5
    for path in neurite_paths(canvas, rng, count, 4000.0, 0.6):
        radius = rng.uniform(450.0, 900.0) / px
        idx, s, d = path.local_coords(canvas.shape, radius + 3.0 * edge_soft)
        across = soft_inside(np.abs(d), radius, edge_soft)
        shell = 0.6 + 0.4 * np.clip(np.abs(d) / radius, 0.0, 1.0) ** 2
        brightness = rng.uniform(0.6, 1.0)
        tex = texture.ravel()[idx]

        ring_on = stretch_table(rng, path.s[-1], sp.ring_fraction, 1500.0 / px, step)
        ring_amp = table_at(
            ndimage.gaussian_filter1d(ring_on.astype(float), 75.0 / px / step), s, step
        )
        rings = periodic_rings(
            s, period, ring_sigma, rng.uniform(0.0, period), ring_brightness(rng)
        )

        fiber_on = stretch_table(rng, path.s[-1], sp.fiber_fraction, 2000.0 / px, step)
        fibers = _dendrite_fibers(rng, s, d, fiber_on, radius, fiber_sigma, step, px)

        signal = shell * ring_amp * rings * 0.9 + fibers + 0.22 * tex
        density.ravel()[idx] += brightness * across * signal
        inside = np.abs(d) <= radius + margin
        masks[0].ravel()[idx[inside & (table_at(ring_on.astype(float), s, step) > 0.5)]] = True
        masks[1].ravel()[idx[inside & (table_at(fiber_on.astype(float), s, step) > 0.5)]] = True

        for _ in range(int(rng.poisson(path.s[-1] * px / 1500.0))):
            _add_spine(density, path, rng, radius, px, texture)
    return density, masks


def _dendrite_fibers(
    rng: np.random.Generator,
    s: np.ndarray,
    d: np.ndarray,
    fiber_on: np.ndarray,
    radius: float,
    sigma: float,
    step: float,
    px: float,
) -> np.ndarray:
    """Longitudinal fibers that run inside the stretches of ``fiber_on``."""
    out = np.zeros_like(s)
    edges = np.flatnonzero(np.diff(np.concatenate(([0], fiber_on.astype(np.int8), [0]))))
    taper = 100.0 / px
    for start, stop in zip(edges[::2] * step, edges[1::2] * step, strict=True):
        sel = np.flatnonzero((s > start - 4.0 * taper) & (s < stop + 4.0 * taper))
        s_sel, d_sel = s[sel], d[sel]
        for _ in range(int(rng.integers(3, 9))):
            lateral = rng.uniform(-0.85, 0.85) * radius
            wiggle = rng.uniform(0.0, 0.08) * radius
            k = 2.0 * math.pi * px / rng.uniform(800.0, 3000.0)
            phase = rng.uniform(0.0, 2.0 * math.pi)
            a = start + rng.uniform(0.0, 0.15) * (stop - start)
            b = stop - rng.uniform(0.0, 0.15) * (stop - start)
            along = soft_inside(np.abs(s_sel - 0.5 * (a + b)), 0.5 * (b - a), taper)
            centre = lateral + wiggle * np.sin(k * s_sel + phase)
            profile = np.exp(-0.5 * ((d_sel - centre) / sigma) ** 2)
            out[sel] += rng.uniform(0.5, 1.0) * along * profile
    return out


def _add_spine(
    density: np.ndarray,
    path: CurvePath,
    rng: np.random.Generator,
    radius: float,
    px: float,
    texture: np.ndarray,
) -> None:
    """A spine: a diffuse actin-rich head on a thin neck, beside the shaft (unlabelled)."""
    u0 = rng.uniform(path.u[0], path.u[-1])
    side = rng.choice([-1.0, 1.0])
    f0 = float(np.interp(u0, path.u, path.f))
    base = path.origin + u0 * path.tangent + f0 * path.normal
    neck = (rng.uniform(250.0, 700.0) / px) * side
    head_r = rng.uniform(120.0, 300.0) / px
    head = base + (radius + abs(neck) + head_r) * side * path.normal
    win = math.ceil(radius + abs(neck) + 2 * head_r + 6)
    y0, x0 = (round(c) - win for c in head)
    ys = slice(max(y0, 0), min(y0 + 2 * win + 1, density.shape[0]))
    xs = slice(max(x0, 0), min(x0 + 2 * win + 1, density.shape[1]))
    if ys.start >= ys.stop or xs.start >= xs.stop:
        return
    yy, xx = np.mgrid[ys, xs].astype(np.float64)
    r_head = np.hypot(yy - head[0], xx - head[1])
    blob = soft_inside(r_head, head_r, 0.6) * 0.55
    # Neck: segment from the shaft edge to the head along the normal, ~60 nm wide.
    rel_y, rel_x = yy - base[0], xx - base[1]
    along = (rel_y * path.normal[0] + rel_x * path.normal[1]) * side
    lateral = rel_y * path.tangent[0] + rel_x * path.tangent[1]
    neck_len = radius + abs(neck) + head_r
    neck_mask = soft_inside(np.abs(along - 0.5 * neck_len), 0.5 * neck_len, 0.6)
    neck_profile = neck_mask * np.exp(-0.5 * (lateral / (60.0 / px / FWHM_PER_SIGMA * 2)) ** 2)
    density[ys, xs] += (blob + 0.3 * neck_profile) * texture[ys, xs] * rng.uniform(0.5, 1.0)
