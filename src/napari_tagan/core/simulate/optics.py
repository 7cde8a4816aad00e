"""The microscope: padded canvas, Gaussian PSF blur, binning, photon noise, brightfield."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .params import FWHM_PER_SIGMA, ImagingParams

#: Margin drawn around the field of view: four sigmas of a 400 nm FWHM PSF.
GEOMETRY_PAD_NM = 700.0


@dataclass(frozen=True)
class Canvas:
    """Padded fine grid; the field of view sits at ``offset`` and is aligned to bins."""

    shape: tuple[int, int]
    offset: tuple[int, int]
    field_shape: tuple[int, int]
    pixel_nm: float

    @classmethod
    def for_field(cls, field_shape: tuple[int, int], pixel_nm: float) -> Canvas:
        pad = math.ceil(GEOMETRY_PAD_NM / pixel_nm) + 2
        ny, nx = field_shape
        return cls((ny + 2 * pad, nx + 2 * pad), (pad, pad), field_shape, float(pixel_nm))

    def for_imaging(self, params: ImagingParams) -> Canvas:
        """Canvas wide enough for the widest PSF, with the field aligned to confocal bins."""
        binning = params.confocal_binning
        widest = max(params.confocal_fwhm_nm, params.sted_fwhm_nm)
        pad = max(self.offset[0], math.ceil(4.0 * params.sigma_px(widest)) + 2)
        pad = -(-pad // binning) * binning
        ny, nx = (-(-(n + 2 * pad) // binning) * binning for n in self.field_shape)
        return Canvas((ny, nx), (pad, pad), self.field_shape, self.pixel_nm)

    def embed(self, array: np.ndarray, into: Canvas) -> np.ndarray:
        """Zero-pad ``array`` (drawn on this canvas) to the larger canvas ``into``."""
        before = [o2 - o1 for o1, o2 in zip(self.offset, into.offset, strict=True)]
        after = [n2 - n1 - b for n1, n2, b in zip(self.shape, into.shape, before, strict=True)]
        if not any(before) and not any(after):
            return array
        widths = [(0, 0)] * (array.ndim - 2) + list(zip(before, after, strict=True))
        return np.pad(array, widths)

    @property
    def crop(self) -> tuple[slice, slice]:
        (oy, ox), (ny, nx) = self.offset, self.field_shape
        return slice(oy, oy + ny), slice(ox, ox + nx)

    def random_point(self, rng: np.random.Generator, margin_px: float = 0.0) -> np.ndarray:
        """Uniform point inside the field of view (canvas coordinates)."""
        lo = np.array(self.offset, dtype=float) + margin_px
        hi = lo + np.array(self.field_shape, dtype=float) - 1 - 2 * margin_px
        hi = np.maximum(hi, lo)
        return rng.uniform(lo, hi)

    @property
    def field_area_um2(self) -> float:
        return self.field_shape[0] * self.field_shape[1] * (self.pixel_nm / 1000.0) ** 2

    @property
    def field_diagonal_um(self) -> float:
        return math.hypot(*self.field_shape) * self.pixel_nm / 1000.0


def acquire(
    density: np.ndarray,
    canvas: Canvas,
    *,
    fwhm_nm: float,
    photons: float,
    background: float,
    binning: int,
) -> np.ndarray:
    """Noise-free expected counts: blur, (bin), scale the field's maximum to ``photons``."""
    blurred = ndimage.gaussian_filter(density, fwhm_nm / FWHM_PER_SIGMA / canvas.pixel_nm)
    crop = canvas.crop
    if binning > 1:
        blurred = bin_image(blurred, binning)
        sy, sx = (slice(s.start // binning, -(-s.stop // binning)) for s in crop)
        crop = (sy, sx)
    peak = float(blurred[crop].max())
    scale = photons / peak if peak > 0 else 0.0
    return blurred * scale + background


def bin_image(image: np.ndarray, factor: int) -> np.ndarray:
    """Mean of ``factor``×``factor`` blocks (a coarser camera pixel)."""
    ny, nx = image.shape
    return image.reshape(ny // factor, factor, nx // factor, factor).mean(axis=(1, 3))


def unbin_image(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest upsampling by ``factor`` (coarse confocal shown on the fine grid)."""
    if factor == 1:
        return image
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def poisson(expected: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Photon counts drawn around ``expected``."""
    return rng.poisson(np.maximum(expected, 0.0)).astype(np.float32)


def brightfield(cells: np.ndarray, params: ImagingParams) -> np.ndarray:
    """Transmission image of cells: a dark body with a dark rim inside and a bright halo.

    ``confocal_photons`` is the transmitted light in an empty pixel.
    """
    cells = cells.astype(np.float64)
    sigma = params.sigma_px(params.confocal_fwhm_nm)
    near = ndimage.gaussian_filter(cells, sigma)
    far = ndimage.gaussian_filter(cells, 2.0 * sigma)
    transmission = np.clip(1.0 - 0.25 * near - 0.9 * (near - far), 0.05, None)
    expected = params.confocal_photons * transmission
    if params.confocal_binning > 1:
        expected = bin_image(expected, params.confocal_binning)
    return expected + params.confocal_background
