"""Drawing helpers shared by the structures: thin profiles, textures, curved paths."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage, special

from .optics import Canvas
from .params import FWHM_PER_SIGMA

#: Width (FWHM) of one actin ring / fiber and of a membrane in the density map.
RING_FWHM_NM = 40.0

#: How far (nm) a human annotation extends beyond the structure's edge.
ANNOTATION_MARGIN_NM = 40.0


def thin_sigma_px(fwhm_nm: float, pixel_nm: float) -> float:
    """Sigma (px) of a thin Gaussian profile integrated over a square pixel."""
    sigma = fwhm_nm / FWHM_PER_SIGMA / pixel_nm
    return math.sqrt(sigma**2 + 1.0 / 12.0)


def soft_inside(distance: np.ndarray, edge: np.ndarray | float, soft_px: float) -> np.ndarray:
    """≈1 where ``distance < edge``, a smooth erf step of width ``soft_px`` at the edge."""
    return 0.5 * (1.0 + special.erf((edge - distance) / (math.sqrt(2.0) * soft_px)))


def texture_field(
    shape: tuple[int, int], rng: np.random.Generator, grain_px: float, contrast: float
) -> np.ndarray:
    """Log-normal patchy field of mean ≈ 1 (unstructured actin, cytoplasm)."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), grain_px)
    noise /= max(float(noise.std()), 1e-12)
    return np.exp(contrast * noise - 0.5 * contrast**2)


def stretch_table(
    rng: np.random.Generator,
    length_px: float,
    fraction: float,
    mean_on_px: float,
    step: float,
) -> np.ndarray:
    """Boolean table over arc length: alternating stretches where a pattern is present."""
    n = max(math.ceil(length_px / step) + 2, 2)
    on = np.zeros(n, dtype=bool)
    if fraction <= 0.0:
        return on
    if fraction >= 1.0:
        on[:] = True
        return on
    mean_off_px = mean_on_px * (1.0 - fraction) / fraction
    state = bool(rng.random() < fraction)
    position = -rng.uniform(0, mean_on_px if state else mean_off_px)
    while position < length_px:
        mean = mean_on_px if state else mean_off_px
        stretch = rng.gamma(4.0, mean / 4.0)
        start = max(int(position / step), 0)
        stop = max(int((position + stretch) / step), 0)
        if state:
            on[start : min(stop, n)] = True
        position += stretch
        state = not state
    return on


@dataclass
class CurvePath:
    """A smooth curve ``origin + u·tangent + f(u)·normal``, tabulated along ``u``."""

    origin: np.ndarray
    tangent: np.ndarray
    normal: np.ndarray
    u: np.ndarray
    f: np.ndarray
    df: np.ndarray
    d2f: np.ndarray
    s: np.ndarray

    @classmethod
    def random(
        cls,
        rng: np.random.Generator,
        centre: np.ndarray,
        angle: float,
        half_length_px: float,
        pixel_nm: float,
        min_bend_radius_nm: float,
    ) -> CurvePath:
        tangent = np.array([math.sin(angle), math.cos(angle)])
        normal = np.array([tangent[1], -tangent[0]])
        u = np.arange(-half_length_px, half_length_px + 0.5, 0.5)
        f = np.zeros_like(u)
        df = np.zeros_like(u)
        d2f = np.zeros_like(u)
        n_terms = 3
        for _ in range(n_terms):
            wavelength = rng.uniform(2500.0, 12000.0) / pixel_nm
            k = 2.0 * math.pi / wavelength
            # Keep the curvature radius above the requested minimum (sum over terms).
            max_amp = 1.0 / (k * k * min_bend_radius_nm / pixel_nm * n_terms)
            amp = rng.uniform(0.2, 1.0) * min(max_amp, 600.0 / pixel_nm)
            phase = rng.uniform(0.0, 2.0 * math.pi)
            f += amp * np.sin(k * u + phase)
            df += amp * k * np.cos(k * u + phase)
            d2f -= amp * k * k * np.sin(k * u + phase)
        ds = np.sqrt(1.0 + df**2)
        s = np.concatenate(([0.0], np.cumsum(0.5 * (ds[1:] + ds[:-1]) * np.diff(u))))
        return cls(np.asarray(centre, float), tangent, normal, u, f, df, d2f, s)

    def local_coords(
        self, shape: tuple[int, int], max_dist_px: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Flat indices of the pixels within ``max_dist_px`` and their (s, d) coordinates.

        ``s`` is the arc length of the nearest curve point and ``d`` the signed distance
        to it; the nearest point comes from two Newton steps on the squared distance.
        """
        ny, nx = shape
        dy = np.arange(ny, dtype=np.float64)[:, None] - self.origin[0]
        dx = np.arange(nx, dtype=np.float64)[None, :] - self.origin[1]
        u_p = dy * self.tangent[0] + dx * self.tangent[1]
        v_p = dy * self.normal[0] + dx * self.normal[1]
        slope = float(np.abs(self.df).max())
        reach = max_dist_px * math.sqrt(1.0 + slope**2) + 2.0
        near = np.abs(v_p - np.interp(u_p, self.u, self.f)) < reach
        idx = np.flatnonzero(near)
        u_p = u_p.ravel()[idx]
        v_p = v_p.ravel()[idx]
        u = u_p.copy()
        for _ in range(2):
            f = np.interp(u, self.u, self.f)
            df = np.interp(u, self.u, self.df)
            d2f = np.interp(u, self.u, self.d2f)
            gradient = (u - u_p) + df * (f - v_p)
            hessian = 1.0 + df * df + d2f * (f - v_p)
            u -= gradient / np.where(np.abs(hessian) > 0.1, hessian, 0.1)
        f = np.interp(u, self.u, self.f)
        df = np.interp(u, self.u, self.df)
        d = ((v_p - f) - df * (u_p - u)) / np.sqrt(1.0 + df * df)
        s = np.interp(u, self.u, self.s)
        keep = np.abs(d) <= max_dist_px
        return idx[keep], s[keep], d[keep]


def neurite_paths(
    canvas: Canvas,
    rng: np.random.Generator,
    count: int,
    min_bend_radius_nm: float,
    spread_rad: float,
) -> list[CurvePath]:
    """``count`` random curves roughly along one main direction, through the field."""
    main_angle = rng.uniform(0.0, math.pi)
    half_length = math.hypot(*canvas.shape) + 4.0
    return [
        CurvePath.random(
            rng,
            canvas.random_point(
                rng, margin_px=min(500.0 / canvas.pixel_nm, 0.25 * min(canvas.field_shape))
            ),
            main_angle + rng.normal(0.0, spread_rad),
            half_length,
            canvas.pixel_nm,
            min_bend_radius_nm,
        )
        for _ in range(count)
    ]


def table_at(table: np.ndarray, s: np.ndarray, step: float) -> np.ndarray:
    """A :func:`stretch_table` (sampled every ``step``) read at arc lengths ``s``."""
    return np.interp(s / step, np.arange(table.size), table)


def periodic_rings(
    s: np.ndarray,
    period_px: float,
    sigma_px: float,
    phase_px: float,
    brightness: np.ndarray,
) -> np.ndarray:
    """Periodic Gaussian bands along ``s``, each ring with its own brightness."""
    position = (s - phase_px) / period_px
    index = np.floor(position + 0.5).astype(np.int64)
    offset = (position - index) * period_px
    return brightness[index % brightness.size] * np.exp(-0.5 * (offset / sigma_px) ** 2)


def ring_brightness(rng: np.random.Generator, n: int = 257) -> np.ndarray:
    """Log-normal brightness of successive rings."""
    return rng.lognormal(0.0, 0.2, n)


def splat(image: np.ndarray, y: np.ndarray, x: np.ndarray, weight: float = 1.0) -> None:
    """Add point emitters at sub-pixel positions with bilinear weights."""
    y0 = np.floor(y).astype(np.int64)
    x0 = np.floor(x).astype(np.int64)
    fy, fx = y - y0, x - x0
    ny, nx = image.shape
    flat = image.ravel()
    for dy, wy in ((0, 1.0 - fy), (1, fy)):
        for dx, wx in ((0, 1.0 - fx), (1, fx)):
            yy, xx = y0 + dy, x0 + dx
            ok = (yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx)
            flat += np.bincount(yy[ok] * nx + xx[ok], (wy * wx)[ok] * weight, flat.size)
