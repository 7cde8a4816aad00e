"""Physics-based confocal / STED simulator with ground-truth masks.

The original TA-GAN datasets cannot be downloaded everywhere, and a plugin needs data a
newcomer can try in one click, that tests can train on in minutes and whose truth is
known. This module draws fluorophore-density maps of the structures TA-GAN was built for
on a fine pixel grid, images them with Gaussian point-spread functions of confocal and
STED width, and adds background and Poisson photon noise.

Model
-----
* Geometry is drawn in nanometres and rasterised on the fine grid (``pixel_size_nm``)
  with analytic profiles. A thin profile of width ``w`` is drawn with the effective
  width ``sqrt(w² + pixel²/12)``, the variance of a square pixel projected on any
  direction, so sub-pixel rings are neither lost nor aliased.
* Structures are drawn on a canvas padded by 700 nm around the field of view (four sigmas
  of a 400 nm PSF), so that structures just outside it contribute blur inside, as on a
  microscope. The padding does not depend on the PSFs or photon budgets, so a seed gives
  the same structures whatever the imaging parameters (for a given pixel size).
* Axonal stretches without rings hold patchy unstructured F-actin (patches a few hundred
  nm wide, as the actin "hot spots" and trails of axon shafts), while ring stretches are
  a regular lattice on a faint fine-grained background. The rings themselves are far
  below confocal resolution, but the patches survive the confocal blur: a confocal
  image is smooth along ring stretches and blotchy elsewhere, the contextual cue from
  which TA-GAN infers where to draw rings.
* Imaging is point sampling of the density convolved with an isotropic Gaussian PSF
  (``sigma = FWHM / 2.3548``). The photon budget is the *expected signal* (background
  excluded) at the brightest pixel of the noise-free image; background photons per pixel
  are added on top, and the recorded image is a Poisson draw of that expectation.
* A coarser confocal (``confocal_pixel_size_nm``) averages blocks of fine pixels, is
  scaled and noised at that size, then repeated (nearest) back onto the fine grid, as in
  the synaptic-protein data (60 nm confocal shown on 15 nm pixels).
* Geometry, confocal noise and STED noise use three independent streams spawned from the
  seed: changing a photon budget leaves the structures unchanged.

Only numpy and scipy are imported here; :func:`write_dataset` imports tifffile lazily.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy import ndimage, special

Structure = Literal["axons", "dendrites", "nanodomains", "saureus", "beads"]

#: FWHM of a Gaussian in units of its standard deviation, 2·sqrt(2·ln 2).
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))

#: Class names per structure; they match the TA-GAN presets' segmentation classes.
CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "axons": ("rings",),
    "dendrites": ("rings", "fibers"),
    "nanodomains": ("nanodomains",),
    "saureus": ("bacteria",),
    "beads": ("beads",),
}

#: Structures :func:`simulate` accepts.
STRUCTURES: tuple[str, ...] = tuple(CLASS_NAMES)

#: Width (FWHM) of one actin ring / fiber and of a membrane in the density map.
_RING_FWHM_NM = 40.0
_FIBER_FWHM_NM = 45.0
_MEMBRANE_FWHM_NM = 30.0
#: How far (nm) a human annotation extends beyond the structure's edge.
_ANNOTATION_MARGIN_NM = 40.0
#: Margin drawn around the field of view: four sigmas of a 400 nm FWHM PSF.
_GEOMETRY_PAD_NM = 700.0
#: Unstructured axonal F-actin (where the rings are absent) gathers in patches a few
#: hundred nm wide (correlation length and log-normal contrast of the patch field).
_AXON_PATCH_GRAIN_NM = 120.0
_AXON_PATCH_CONTRAST = 0.9


@dataclass(frozen=True)
class ImagingParams:
    """How the simulated sample is imaged.

    Parameters
    ----------
    pixel_size_nm : float
        Pixel size of the fine grid: ground truth, STED, masks and the returned confocal.
    confocal_fwhm_nm, sted_fwhm_nm : float
        Full width at half maximum of the (Gaussian) confocal and effective STED PSF.
    confocal_photons, sted_photons : float
        Photon budget: expected signal photons (background excluded) at the brightest
        pixel of the noise-free image.
    confocal_background, sted_background : float
        Expected background photons per pixel, added before Poisson noise.
    confocal_pixel_size_nm : float or None
        Pixel size at which the confocal is acquired; ``None`` means ``pixel_size_nm``.
        Must be an integer multiple of ``pixel_size_nm``; the confocal is then acquired
        on the coarse grid and repeated (nearest) onto the fine one.
    """

    pixel_size_nm: float = 20.0
    confocal_fwhm_nm: float = 250.0
    sted_fwhm_nm: float = 60.0
    confocal_photons: float = 120.0
    sted_photons: float = 60.0
    confocal_background: float = 2.0
    sted_background: float = 1.0
    confocal_pixel_size_nm: float | None = None

    def __post_init__(self) -> None:
        for name in ("pixel_size_nm", "confocal_fwhm_nm", "sted_fwhm_nm"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"ImagingParams.{name} must be a positive number, got {value!r}")
        for name in (
            "confocal_photons",
            "sted_photons",
            "confocal_background",
            "sted_background",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(
                    f"ImagingParams.{name} must be a non-negative number, got {value!r}"
                )
        if self.confocal_pixel_size_nm is not None:
            ratio = self.confocal_pixel_size_nm / self.pixel_size_nm
            if ratio < 1 - 1e-6 or abs(ratio - round(ratio)) > 1e-3:
                raise ValueError(
                    "ImagingParams.confocal_pixel_size_nm must be an integer multiple of "
                    f"pixel_size_nm ({self.pixel_size_nm} nm), got "
                    f"{self.confocal_pixel_size_nm} nm"
                )

    @property
    def confocal_binning(self) -> int:
        """Fine pixels per confocal pixel along each axis (1 when not coarser)."""
        if self.confocal_pixel_size_nm is None:
            return 1
        return round(self.confocal_pixel_size_nm / self.pixel_size_nm)

    def sigma_px(self, fwhm_nm: float) -> float:
        """Gaussian sigma, in fine pixels, of a PSF with the given FWHM."""
        return fwhm_nm / FWHM_PER_SIGMA / self.pixel_size_nm


@dataclass(frozen=True)
class StructureParams:
    """Knobs of the drawn biology (all optional).

    Parameters
    ----------
    ring_period_nm : float
        Period of the actin rings along axons and dendrites (≈ 190 nm in neurons).
    ring_fraction : float
        Expected fraction of an axon's / dendrite's length that shows the ring pattern.
    fiber_fraction : float
        Expected fraction of a dendrite's length that holds longitudinal fibers.
    density : float
        Multiplies the expected number of objects (axons, dendrites, synapses, cells).
    """

    ring_period_nm: float = 190.0
    ring_fraction: float = 0.5
    fiber_fraction: float = 0.5
    density: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.ring_period_nm) and self.ring_period_nm > 0):
            raise ValueError(f"ring_period_nm must be positive, got {self.ring_period_nm!r}")
        for name in ("ring_fraction", "fiber_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"StructureParams.{name} must be in [0, 1], got {value!r}")
        if not (math.isfinite(self.density) and self.density >= 0):
            raise ValueError(f"density must be non-negative, got {self.density!r}")


@dataclass
class SimulatedSample:
    """A simulated confocal / STED pair with its truth.

    Attributes
    ----------
    confocal, sted : numpy.ndarray
        float32 (Y, X) photon counts on the fine grid. For ``"saureus"`` the confocal is a
        brightfield-like transmission image and the STED a SIM-like membrane image.
    labels : numpy.ndarray
        uint8 (Y, X): 0 = background, ``k + 1`` = ``class_names[k]``; where classes
        overlap the later class wins (use ``masks`` for overlapping classes).
    masks : numpy.ndarray
        bool (n_classes, Y, X), one complete ground-truth mask per class.
    ground_truth : numpy.ndarray
        float32 (Y, X) relative fluorophore density, scaled to a maximum of 1.
    confocal_expected, sted_expected : numpy.ndarray
        float32 noise-free expected counts (signal + background) of the two images.
    """

    confocal: np.ndarray
    sted: np.ndarray
    labels: np.ndarray
    masks: np.ndarray
    ground_truth: np.ndarray
    class_names: tuple[str, ...]
    pixel_size_nm: float
    structure: str
    params: ImagingParams
    seed: int
    structure_params: StructureParams = field(default_factory=StructureParams)
    confocal_expected: np.ndarray | None = None
    sted_expected: np.ndarray | None = None

    @property
    def pixel_size_um(self) -> float:
        """Pixel size in micrometres (napari scale, ImageJ spacing)."""
        return self.pixel_size_nm / 1000.0

    def metadata(self) -> dict[str, Any]:
        """JSON-serialisable description: enough to regenerate the sample."""
        return {
            "simulated": True,
            "structure": self.structure,
            "seed": int(self.seed),
            "pixel_size_nm": float(self.pixel_size_nm),
            "class_names": list(self.class_names),
            "imaging": asdict(self.params),
            "structure_params": asdict(self.structure_params),
            "intensity_unit": "photons",
        }


def default_params(structure: str) -> ImagingParams:
    """Imaging defaults for a structure.

    Neuronal structures use :class:`ImagingParams`' defaults. ``"saureus"`` mimics the
    brightfield → SIM pair: 40 nm pixels, a 400 nm brightfield whose photon budget is the
    transmitted light in an empty pixel, and a 110 nm SIM.
    """
    _check_structure(structure)
    if structure == "saureus":
        return ImagingParams(
            pixel_size_nm=40.0,
            confocal_fwhm_nm=400.0,
            sted_fwhm_nm=110.0,
            confocal_photons=1000.0,
            sted_photons=150.0,
            confocal_background=0.0,
            sted_background=3.0,
        )
    return ImagingParams()


def simulate(
    structure: Structure,
    shape: tuple[int, int] = (256, 256),
    *,
    seed: int = 0,
    params: ImagingParams | None = None,
    structure_params: StructureParams | None = None,
) -> SimulatedSample:
    """Simulate a confocal / STED pair of one structure with its ground truth.

    Parameters
    ----------
    structure : {"axons", "dendrites", "nanodomains", "saureus", "beads"}
        What to draw: axonal F-actin (curved axons with stretches of 190 nm periodic rings
        and stretches of unstructured actin; class "rings"); dendritic F-actin (wide
        shafts with ring stretches and longitudinal-fiber stretches that may overlap;
        classes "rings", "fibers"); synaptic protein clusters (synapses holding
        nanodomains 30–80 nm wide; class "nanodomains"); round *S. aureus* cells, some
        dividing, as a brightfield → SIM pair (class "bacteria"); or a grid of isolated
        point emitters on pixel centres, 1 µm apart, to measure the PSFs (class "beads").
    shape : tuple of int
        (Y, X) size in fine pixels.
    seed : int
        Seed of every random draw: the same seed gives identical arrays.
    params : ImagingParams, optional
        Imaging parameters; :func:`default_params` of the structure when omitted.
    structure_params : StructureParams, optional
        Biology knobs (ring period, fractions, object density).

    Returns
    -------
    SimulatedSample
        Images, masks, labels, ground truth and metadata.

    Examples
    --------
    >>> sample = simulate("axons", (128, 128), seed=1)
    >>> sample.sted.shape, sample.sted.dtype, sample.class_names
    ((128, 128), dtype('float32'), ('rings',))
    """
    _check_structure(structure)
    shape = _check_shape(shape)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    params = default_params(structure) if params is None else params
    structure_params = StructureParams() if structure_params is None else structure_params
    if not isinstance(params, ImagingParams):
        raise TypeError(f"params must be an ImagingParams, got {type(params).__name__}")

    geometry_rng, confocal_rng, sted_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)
    )
    canvas = _Canvas.for_field(shape, params.pixel_size_nm)
    density, masks = _DRAWERS[structure](canvas, geometry_rng, structure_params)

    optics = canvas.for_imaging(params)
    optical_density = canvas.embed(density, optics)
    if structure == "saureus":
        confocal_exp = _brightfield(canvas.embed(masks[0], optics), params)
    else:
        confocal_exp = _acquire(
            optical_density,
            optics,
            fwhm_nm=params.confocal_fwhm_nm,
            photons=params.confocal_photons,
            background=params.confocal_background,
            binning=params.confocal_binning,
        )
    sted_exp = _acquire(
        optical_density,
        optics,
        fwhm_nm=params.sted_fwhm_nm,
        photons=params.sted_photons,
        background=params.sted_background,
        binning=1,
    )
    confocal = _poisson(confocal_exp, confocal_rng)
    sted = _poisson(sted_exp, sted_rng)

    crop = optics.crop
    truth = density[canvas.crop]
    peak = float(truth.max())
    truth = (truth / peak if peak > 0 else truth).astype(np.float32)
    field_masks = np.ascontiguousarray(masks[(slice(None), *canvas.crop)])
    return SimulatedSample(
        confocal=_unbin(confocal, params.confocal_binning)[crop].astype(np.float32),
        sted=sted[crop].astype(np.float32),
        labels=labels_from_masks(field_masks),
        masks=field_masks,
        ground_truth=truth,
        class_names=CLASS_NAMES[structure],
        pixel_size_nm=float(params.pixel_size_nm),
        structure=structure,
        params=params,
        seed=seed,
        structure_params=structure_params,
        confocal_expected=_unbin(confocal_exp, params.confocal_binning)[crop].astype(np.float32),
        sted_expected=sted_exp[crop].astype(np.float32),
    )


def labels_from_masks(masks: np.ndarray) -> np.ndarray:
    """Flatten (n_classes, Y, X) masks to a uint8 label image; later classes win."""
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3:
        raise ValueError(f"masks must be (n_classes, Y, X), got shape {masks.shape}")
    if masks.shape[0] > 254:
        raise ValueError(f"at most 254 classes fit a uint8 label image, got {masks.shape[0]}")
    labels = np.zeros(masks.shape[1:], dtype=np.uint8)
    for k, mask in enumerate(masks):
        labels[mask] = k + 1
    return labels


# --------------------------------------------------------------------------------------
# Canvas and imaging


@dataclass(frozen=True)
class _Canvas:
    """Padded fine grid; the field of view sits at ``offset`` and is aligned to bins."""

    shape: tuple[int, int]
    offset: tuple[int, int]
    field_shape: tuple[int, int]
    pixel_nm: float

    @classmethod
    def for_field(cls, field_shape: tuple[int, int], pixel_nm: float) -> _Canvas:
        pad = math.ceil(_GEOMETRY_PAD_NM / pixel_nm) + 2
        canvas = tuple(n + 2 * pad for n in field_shape)
        return cls(canvas, (pad, pad), field_shape, float(pixel_nm))

    def for_imaging(self, params: ImagingParams) -> _Canvas:
        """Canvas wide enough for the widest PSF, with the field aligned to confocal bins."""
        binning = params.confocal_binning
        widest = max(params.confocal_fwhm_nm, params.sted_fwhm_nm)
        pad = max(self.offset[0], math.ceil(4.0 * params.sigma_px(widest)) + 2)
        pad = -(-pad // binning) * binning
        shape = tuple(-(-(n + 2 * pad) // binning) * binning for n in self.field_shape)
        return _Canvas(shape, (pad, pad), self.field_shape, self.pixel_nm)

    def embed(self, array: np.ndarray, into: _Canvas) -> np.ndarray:
        """Zero-pad ``array`` (drawn on this canvas) to the larger canvas ``into``."""
        before = [o2 - o1 for o1, o2 in zip(self.offset, into.offset, strict=True)]
        after = [n2 - n1 - b for n1, n2, b in zip(self.shape, into.shape, before, strict=True)]
        if not any(before) and not any(after):
            return array
        widths = [(0, 0)] * (array.ndim - 2) + list(zip(before, after, strict=True))
        return np.pad(array, widths)

    @property
    def crop(self) -> tuple[slice, slice]:
        return tuple(slice(o, o + n) for o, n in zip(self.offset, self.field_shape, strict=True))

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


def _acquire(
    density: np.ndarray,
    canvas: _Canvas,
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
        blurred = _bin(blurred, binning)
        crop = tuple(slice(s.start // binning, -(-s.stop // binning)) for s in crop)
    peak = float(blurred[crop].max())
    scale = photons / peak if peak > 0 else 0.0
    return blurred * scale + background


def _bin(image: np.ndarray, factor: int) -> np.ndarray:
    ny, nx = image.shape
    return image.reshape(ny // factor, factor, nx // factor, factor).mean(axis=(1, 3))


def _unbin(image: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return image
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def _poisson(expected: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return rng.poisson(np.maximum(expected, 0.0)).astype(np.float32)


def _brightfield(cells: np.ndarray, params: ImagingParams) -> np.ndarray:
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
        expected = _bin(expected, params.confocal_binning)
    return expected + params.confocal_background


# --------------------------------------------------------------------------------------
# Geometry helpers


def _thin_sigma_px(fwhm_nm: float, pixel_nm: float) -> float:
    """Sigma (px) of a thin Gaussian profile integrated over a square pixel."""
    sigma = fwhm_nm / FWHM_PER_SIGMA / pixel_nm
    return math.sqrt(sigma**2 + 1.0 / 12.0)


def _soft_inside(distance: np.ndarray, edge: np.ndarray | float, soft_px: float) -> np.ndarray:
    """≈1 where ``distance < edge``, a smooth erf step of width ``soft_px`` at the edge."""
    return 0.5 * (1.0 + special.erf((edge - distance) / (math.sqrt(2.0) * soft_px)))


def _texture(
    shape: tuple[int, int], rng: np.random.Generator, grain_px: float, contrast: float
) -> np.ndarray:
    """Log-normal patchy field of mean ≈ 1 (unstructured actin, cytoplasm)."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), grain_px)
    noise /= max(float(noise.std()), 1e-12)
    return np.exp(contrast * noise - 0.5 * contrast**2)


def _stretch_table(
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
class _Path:
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
    ) -> _Path:
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


def _neurite_paths(
    canvas: _Canvas,
    rng: np.random.Generator,
    count: int,
    min_bend_radius_nm: float,
    spread_rad: float,
) -> list[_Path]:
    main_angle = rng.uniform(0.0, math.pi)
    half_length = math.hypot(*canvas.shape) + 4.0
    return [
        _Path.random(
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


def _table_at(table: np.ndarray, s: np.ndarray, step: float) -> np.ndarray:
    return np.interp(s / step, np.arange(table.size), table)


def _periodic_rings(
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


def _ring_brightness(rng: np.random.Generator, n: int = 257) -> np.ndarray:
    return rng.lognormal(0.0, 0.2, n)


# --------------------------------------------------------------------------------------
# Structures: each returns (density on the canvas, masks (n_classes, *canvas.shape))


def _draw_axons(
    canvas: _Canvas, rng: np.random.Generator, sp: StructureParams
) -> tuple[np.ndarray, np.ndarray]:
    """Curved axons: ring stretches (lattice, faint fine background), patchy stretches."""
    px = canvas.pixel_nm
    density = np.zeros(canvas.shape)
    rings_mask = np.zeros(canvas.shape, dtype=bool)
    texture = _texture(canvas.shape, rng, 60.0 / px, 0.45)
    patches = _texture(canvas.shape, rng, _AXON_PATCH_GRAIN_NM / px, _AXON_PATCH_CONTRAST)
    count = max(1, int(rng.poisson(sp.density * canvas.field_diagonal_um / 3.5)))
    ring_sigma = _thin_sigma_px(_RING_FWHM_NM, px)
    edge_soft = _thin_sigma_px(20.0, px)
    margin = _ANNOTATION_MARGIN_NM / px
    period = sp.ring_period_nm / px
    step = 0.5
    for path in _neurite_paths(canvas, rng, count, 2000.0, 0.35):
        radius = rng.uniform(150.0, 450.0) / px
        wobble = rng.uniform(0.0, 0.15)
        wobble_k = 2.0 * math.pi * px / rng.uniform(1500.0, 4000.0)
        wobble_phase = rng.uniform(0, 2 * math.pi)
        idx, s, d = path.local_coords(canvas.shape, radius * (1.0 + wobble) + 3.0 * edge_soft)
        local_radius = radius * (1.0 + wobble * np.sin(wobble_k * s + wobble_phase))
        across = _soft_inside(np.abs(d), local_radius, edge_soft)
        across *= 0.7 + 0.3 * np.clip(np.abs(d) / local_radius, 0.0, 1.0) ** 2
        stretch = _stretch_table(rng, path.s[-1], sp.ring_fraction, 1800.0 / px, step)
        ring_amp = _table_at(
            ndimage.gaussian_filter1d(stretch.astype(float), 75.0 / px / step), s, step
        )
        rings = _periodic_rings(
            s, period, ring_sigma, rng.uniform(0.0, period), _ring_brightness(rng)
        )
        tex = texture.ravel()[idx]
        patchy = patches.ravel()[idx]
        signal = ring_amp * (rings + 0.12 * tex) + (1.0 - ring_amp) * 0.35 * patchy
        density.ravel()[idx] += rng.uniform(0.6, 1.0) * across * signal
        annotated = (_table_at(stretch.astype(float), s, step) > 0.5) & (
            np.abs(d) <= local_radius + margin
        )
        rings_mask.ravel()[idx[annotated]] = True
    return density, rings_mask[None]


def _draw_dendrites(
    canvas: _Canvas, rng: np.random.Generator, sp: StructureParams
) -> tuple[np.ndarray, np.ndarray]:
    px = canvas.pixel_nm
    density = np.zeros(canvas.shape)
    masks = np.zeros((2, *canvas.shape), dtype=bool)
    texture = _texture(canvas.shape, rng, 70.0 / px, 0.5)
    count = max(1, int(rng.poisson(sp.density * canvas.field_diagonal_um / 8.0)))
    ring_sigma = _thin_sigma_px(_RING_FWHM_NM, px)
    fiber_sigma = _thin_sigma_px(_FIBER_FWHM_NM, px)
    edge_soft = _thin_sigma_px(30.0, px)
    margin = _ANNOTATION_MARGIN_NM / px
    period = sp.ring_period_nm / px
    step = 0.5
    for path in _neurite_paths(canvas, rng, count, 4000.0, 0.6):
        radius = rng.uniform(450.0, 900.0) / px
        idx, s, d = path.local_coords(canvas.shape, radius + 3.0 * edge_soft)
        across = _soft_inside(np.abs(d), radius, edge_soft)
        shell = 0.6 + 0.4 * np.clip(np.abs(d) / radius, 0.0, 1.0) ** 2
        brightness = rng.uniform(0.6, 1.0)
        tex = texture.ravel()[idx]

        ring_on = _stretch_table(rng, path.s[-1], sp.ring_fraction, 1500.0 / px, step)
        ring_amp = _table_at(
            ndimage.gaussian_filter1d(ring_on.astype(float), 75.0 / px / step), s, step
        )
        rings = _periodic_rings(
            s, period, ring_sigma, rng.uniform(0.0, period), _ring_brightness(rng)
        )

        fiber_on = _stretch_table(rng, path.s[-1], sp.fiber_fraction, 2000.0 / px, step)
        fibers = _dendrite_fibers(rng, s, d, fiber_on, radius, fiber_sigma, step, px)

        signal = shell * ring_amp * rings * 0.9 + fibers + 0.22 * tex
        density.ravel()[idx] += brightness * across * signal
        inside = np.abs(d) <= radius + margin
        masks[0].ravel()[idx[inside & (_table_at(ring_on.astype(float), s, step) > 0.5)]] = True
        masks[1].ravel()[idx[inside & (_table_at(fiber_on.astype(float), s, step) > 0.5)]] = True

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
            along = _soft_inside(np.abs(s_sel - 0.5 * (a + b)), 0.5 * (b - a), taper)
            centre = lateral + wiggle * np.sin(k * s_sel + phase)
            profile = np.exp(-0.5 * ((d_sel - centre) / sigma) ** 2)
            out[sel] += rng.uniform(0.5, 1.0) * along * profile
    return out


def _add_spine(
    density: np.ndarray,
    path: _Path,
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
    blob = _soft_inside(r_head, head_r, 0.6) * 0.55
    # Neck: segment from the shaft edge to the head along the normal, ~60 nm wide.
    rel_y, rel_x = yy - base[0], xx - base[1]
    along = (rel_y * path.normal[0] + rel_x * path.normal[1]) * side
    lateral = rel_y * path.tangent[0] + rel_x * path.tangent[1]
    neck_len = radius + abs(neck) + head_r
    neck_mask = _soft_inside(np.abs(along - 0.5 * neck_len), 0.5 * neck_len, 0.6)
    neck_profile = neck_mask * np.exp(-0.5 * (lateral / (60.0 / px / FWHM_PER_SIGMA * 2)) ** 2)
    density[ys, xs] += (blob + 0.3 * neck_profile) * texture[ys, xs] * rng.uniform(0.5, 1.0)


def _splat(image: np.ndarray, y: np.ndarray, x: np.ndarray, weight: float = 1.0) -> None:
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


def _draw_nanodomains(
    canvas: _Canvas, rng: np.random.Generator, sp: StructureParams
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
        inside = _soft_inside(np.hypot(a, b), 1.0, 0.15)
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
        _splat(density, np.concatenate(emitters_y), np.concatenate(emitters_x))
    return density, mask[None]


def _draw_saureus(
    canvas: _Canvas, rng: np.random.Generator, sp: StructureParams
) -> tuple[np.ndarray, np.ndarray]:
    """Round cells; ~35 % are dividing and show a (partial) septum across the middle."""
    px = canvas.pixel_nm
    density = np.zeros(canvas.shape)
    cells = np.zeros(canvas.shape, dtype=bool)
    membrane_sigma = _thin_sigma_px(_MEMBRANE_FWHM_NM, px)
    target = max(1, int(rng.poisson(sp.density * 0.35 * canvas.field_area_um2)))
    placed = np.zeros((target, 3))  # y, x, radius of the cells drawn so far
    n_placed = 0
    margin = _ANNOTATION_MARGIN_NM / px
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
        interior = _soft_inside(rho, radius, membrane_sigma)
        signal = membrane + 0.12 * interior
        if rng.random() < 0.35:
            closed = rng.uniform(0.3, 1.0)
            septum = np.exp(-0.5 * (along / membrane_sigma) ** 2)
            # The septum grows inwards from the membrane: present where |across| is large.
            septum *= _soft_inside(radius - np.abs(across), closed * radius, membrane_sigma)
            signal += 0.9 * septum * interior
        density[ys, xs] += rng.uniform(0.6, 1.0) * signal
        cells[ys, xs] |= rho <= radius + margin
    return density, cells[None]


def _draw_beads(
    canvas: _Canvas, rng: np.random.Generator, sp: StructureParams
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


_DRAWERS = {
    "axons": _draw_axons,
    "dendrites": _draw_dendrites,
    "nanodomains": _draw_nanodomains,
    "saureus": _draw_saureus,
    "beads": _draw_beads,
}


def _check_structure(structure: str) -> None:
    if structure not in CLASS_NAMES:
        raise ValueError(f"structure must be one of {STRUCTURES}, got {structure!r}")


def _check_shape(shape: Sequence[int]) -> tuple[int, int]:
    try:
        ny, nx = (int(n) for n in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be two integers (Y, X), got {shape!r}") from None
    if ny < 8 or nx < 8 or ny != shape[0] or nx != shape[1]:
        raise ValueError(f"shape must be two integers >= 8, got {tuple(shape)!r}")
    return ny, nx


# --------------------------------------------------------------------------------------
# Dataset writer (original TA-GAN folder layout)

_MASK_VALUE = {"axons": 255, "dendrites": 32768, "nanodomains": 255}
_LEGACY8_MAX = 255


def write_dataset(
    root: str | os.PathLike[str],
    structure: Structure,
    n_train: int,
    n_valid: int,
    shape: tuple[int, int] = (224, 224),
    seed: int = 0,
    n_test: int = 0,
    params: ImagingParams | None = None,
    *,
    structure_params: StructureParams | None = None,
) -> Path:
    """Write a simulated training set in the original TA-GAN folder layout.

    ``root/train``, ``root/valid`` (and ``root/test`` when ``n_test > 0``) receive one
    multi-page TIFF per sample, channels first:

    * axons: confocal, STED, rings mask (0/255), uint16, 3×Y×X;
    * dendrites: confocal, STED, rings mask, fibers mask (masks 0/32768), uint16, 4×Y×X;
    * nanodomains: confocal, STED, mask (0/255), uint8, 3×Y×X, as the original data;
    * saureus: ``BF/``, ``SIM/`` (uint16) and ``masks/`` (bool) sub-folders holding 2-D
      images with the same file name.

    Intensities are written as photon counts, not rescaled: TA-GAN's "legacy8"
    normalisation clips at 255, and the default photon budgets put the maxima around
    60–200 like the original axon / dendrite data. Counts above 255 (uint8 files: clipped)
    raise a ``UserWarning`` naming how many pixels saturate: lower the photon budget
    rather than let the loader clip them.

    The pixel size is stored as TIFF resolution (pixels per µm) and ImageJ ``spacing`` /
    ``unit``; channel names and the simulation parameters (with the per-sample seed)
    are stored in the ImageJ ``Labels`` / ``Info`` entries, and ``root/simulation.json``
    records the generator. Each file is written to a temporary name in its folder and
    moved into place, so an interrupted run never leaves a half-written TIFF.

    Parameters
    ----------
    root : path-like
        Dataset folder; created if missing. Existing files of the same name are replaced.
    structure : {"axons", "dendrites", "nanodomains", "saureus"}
        What to simulate.
    n_train, n_valid, n_test : int
        Number of samples per split.
    shape : tuple of int
        (Y, X) of every sample.
    seed : int
        Dataset seed; each sample gets its own seed derived from it (stored per file).
    params : ImagingParams, optional
        Imaging parameters; :func:`default_params` of the structure when omitted.
    structure_params : StructureParams, optional
        Biology knobs.

    Returns
    -------
    pathlib.Path
        ``root``.
    """
    import tifffile

    if structure not in ("axons", "dendrites", "nanodomains", "saureus"):
        raise ValueError(
            "write_dataset structure must be 'axons', 'dendrites', 'nanodomains' or "
            f"'saureus', got {structure!r}"
        )
    counts = {"train": n_train, "valid": n_valid, "test": n_test}
    for split, n in counts.items():
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise ValueError(f"n_{split} must be a non-negative integer, got {n!r}")
    params = default_params(structure) if params is None else params
    structure_params = StructureParams() if structure_params is None else structure_params
    root = Path(root)
    total = n_train + n_valid + n_test
    sample_seeds = np.random.SeedSequence(seed).generate_state(max(total, 1), np.uint32)
    saturated = 0
    index = 0
    for split, n in counts.items():
        if n == 0 and split == "test":
            continue
        folder = root / split
        folder.mkdir(parents=True, exist_ok=True)
        for _ in range(n):
            sample = simulate(
                structure,
                shape,
                seed=int(sample_seeds[index]),
                params=params,
                structure_params=structure_params,
            )
            name = f"{structure}_{index:05d}.tif"
            saturated += _write_sample(tifffile, folder, name, sample)
            index += 1
    _atomic_write_text(
        root / "simulation.json",
        json.dumps(
            {
                "generator": "napari_tagan.core.simulate.write_dataset",
                "structure": structure,
                "seed": int(seed),
                "shape": list(shape),
                "splits": counts,
                "class_names": list(CLASS_NAMES[structure]),
                "imaging": asdict(params),
                "structure_params": asdict(structure_params),
                "intensity_unit": "photons",
            },
            indent=2,
        ),
    )
    if saturated:
        warnings.warn(
            f"{saturated} pixels of the written images exceed 255 photons and will be "
            "clipped by TA-GAN's 8-bit ('legacy8') normalisation; lower confocal_photons / "
            "sted_photons to keep the structures unsaturated.",
            UserWarning,
            stacklevel=2,
        )
    return root


def _write_sample(tifffile: Any, folder: Path, name: str, sample: SimulatedSample) -> int:
    """Write one sample; return how many image pixels exceed the 8-bit range."""
    structure = sample.structure
    confocal = np.rint(sample.confocal)
    sted = np.rint(sample.sted)
    saturated = int((confocal > _LEGACY8_MAX).sum() + (sted > _LEGACY8_MAX).sum())
    resolution = (1.0 / sample.pixel_size_um, 1.0 / sample.pixel_size_um)
    info = json.dumps(sample.metadata())
    if structure == "saureus":
        for sub, image, dtype in (
            ("BF", confocal, np.uint16),
            ("SIM", sted, np.uint16),
        ):
            (folder / sub).mkdir(exist_ok=True)
            data = np.clip(image, 0, np.iinfo(dtype).max).astype(dtype)
            _atomic_tiff(tifffile, folder / sub / name, data, resolution, info, [sub])
        (folder / "masks").mkdir(exist_ok=True)
        _atomic_tiff(tifffile, folder / "masks" / name, sample.masks[0], resolution, info, None)
        return 0  # min–max normalised data: no 8-bit clipping
    dtype = np.uint8 if structure == "nanodomains" else np.uint16
    top = np.iinfo(dtype).max
    channels = [np.clip(confocal, 0, top), np.clip(sted, 0, top)]
    names = ["confocal", "STED"]
    for class_name, mask in zip(sample.class_names, sample.masks, strict=True):
        channels.append(mask * _MASK_VALUE[structure])
        names.append(f"{class_name} mask")
    stack = np.stack(channels).astype(dtype)
    _atomic_tiff(tifffile, folder / name, stack, resolution, info, names)
    return saturated


def _atomic_tiff(
    tifffile: Any,
    path: Path,
    data: np.ndarray,
    resolution: tuple[float, float],
    info: str,
    channel_names: list[str] | None,
) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        if data.dtype == bool:
            # Bilevel masks cannot be ImageJ files: standard resolution tags (per cm).
            tifffile.imwrite(
                tmp,
                data,
                resolution=(resolution[0] * 1e4, resolution[1] * 1e4),
                resolutionunit="CENTIMETER",
                description=info,
                metadata=None,
            )
        else:
            metadata: dict[str, Any] = {
                "spacing": 1.0 / resolution[0],
                "unit": "um",
                "Info": info,
            }
            if data.ndim == 3:
                metadata["axes"] = "CYX"
            else:
                metadata["axes"] = "YX"
            if channel_names is not None:
                metadata["Labels"] = channel_names
            tifffile.imwrite(tmp, data, imagej=True, resolution=resolution, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
