"""What to simulate and how it is imaged: structures, imaging and biology parameters."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ..errors import InputError

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
                raise InputError(f"ImagingParams.{name} must be a positive number, got {value!r}")
        for name in (
            "confocal_photons",
            "sted_photons",
            "confocal_background",
            "sted_background",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise InputError(
                    f"ImagingParams.{name} must be a non-negative number, got {value!r}"
                )
        if self.confocal_pixel_size_nm is not None:
            ratio = self.confocal_pixel_size_nm / self.pixel_size_nm
            if ratio < 1 - 1e-6 or abs(ratio - round(ratio)) > 1e-3:
                raise InputError(
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
            raise InputError(f"ring_period_nm must be positive, got {self.ring_period_nm!r}")
        for name in ("ring_fraction", "fiber_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InputError(f"StructureParams.{name} must be in [0, 1], got {value!r}")
        if not (math.isfinite(self.density) and self.density >= 0):
            raise InputError(f"density must be non-negative, got {self.density!r}")


def default_params(structure: str) -> ImagingParams:
    """Imaging defaults for a structure.

    Neuronal structures use :class:`ImagingParams`' defaults. ``"saureus"`` mimics the
    brightfield → SIM pair: 40 nm pixels, a 400 nm brightfield whose photon budget is the
    transmitted light in an empty pixel, and a 110 nm SIM.
    """
    check_structure(structure)
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


def check_structure(structure: str) -> None:
    """Raise :class:`InputError` unless ``structure`` is one of :data:`STRUCTURES`."""
    if structure not in CLASS_NAMES:
        raise InputError(f"structure must be one of {STRUCTURES}, got {structure!r}")


def check_shape(shape: Sequence[int]) -> tuple[int, int]:
    """``shape`` as two ints ≥ 8, or :class:`InputError`."""
    try:
        ny, nx = (int(n) for n in shape)
    except (TypeError, ValueError):
        raise InputError(f"shape must be two integers (Y, X), got {shape!r}") from None
    if ny < 8 or nx < 8 or ny != shape[0] or nx != shape[1]:
        raise InputError(f"shape must be two integers >= 8, got {tuple(shape)!r}")
    return ny, nx
