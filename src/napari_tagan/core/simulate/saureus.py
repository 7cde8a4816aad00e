"""*S. aureus*: round cells, some dividing, imaged as a brightfield → SIM pair."""

from __future__ import annotations

import math

import numpy as np

from .geometry import ANNOTATION_MARGIN_NM, soft_inside, thin_sigma_px
from .optics import Canvas
from .params import StructureParams

_MEMBRANE_FWHM_NM = 30.0


def draw_saureus(
    canvas: Canvas, rng: np.random.Generator, sp: StructureParams
) -> tuple[np.ndarray, np.ndarray]:
    """Round cells; ~35 % are dividing and show a (partial) septum across the middle."""
    px = canvas.pixel_nm
    density = np.zeros(canvas.shape)
    cells = np.zeros(canvas.shape, dtype=bool)
    membrane_sigma = thin_sigma_px(_MEMBRANE_FWHM_NM, px)
    target = max(1, int(rng.poisson(sp.density * 0.35 * canvas.field_area_um2)))
    placed = np.zeros((target, 3))  # y, x, radius of the cells drawn so far
    n_placed = 0
    margin = ANNOTATION_MARGIN_NM / px
    for _ in range(target * 20):
        if n_placed >= target:
            break
        radius = rng.uniform(380.0, 560.0) / px
        aspect = rng.uniform(1.0, 1.12)
        centre = canvas.random_point(rng)
        if n_placed and np.any(
            np.hypot(*(placed[:n_placed, :2] - centre).T)
            < placed[:n_placed, 2] + radius * aspect + 40.0 / px
        ):
            continue
        placed[n_placed] = (*centre, radius * aspect)
        n_placed += 1
        angle = rng.uniform(0.0, math.pi)
        win = math.ceil(radius * aspect + 6 * membrane_sigma + margin) + 2
        cy, cx = (round(v) for v in centre)
        ys = slice(max(cy - win, 0), min(cy + win + 1, canvas.shape[0]))
        xs = slice(max(cx - win, 0), min(cx + win + 1, canvas.shape[1]))
        yy, xx = np.mgrid[ys, xs].astype(np.float64)
        dy, dx = yy - centre[0], xx - centre[1]
        along = dy * math.sin(angle) + dx * math.cos(angle)
        across = -dy * math.cos(angle) + dx * math.sin(angle)
        rho = np.hypot(along / aspect, across)
        membrane = np.exp(-0.5 * ((rho - radius) / membrane_sigma) ** 2)
        interior = soft_inside(rho, radius, membrane_sigma)
        signal = membrane + 0.12 * interior
        if rng.random() < 0.35:
            closed = rng.uniform(0.3, 1.0)
            septum = np.exp(-0.5 * (along / membrane_sigma) ** 2)
            # The septum grows inwards from the membrane: present where |across| is large.
            septum *= soft_inside(radius - np.abs(across), closed * radius, membrane_sigma)
            signal += 0.9 * septum * interior
        density[ys, xs] += rng.uniform(0.6, 1.0) * signal
        cells[ys, xs] |= rho <= radius + margin
    return density, cells[None]
