"""One simulated confocal / STED pair with its ground truth."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError
from .axons import draw_axons
from .beads import draw_beads
from .dendrites import draw_dendrites
from .nanodomains import draw_nanodomains
from .optics import Canvas, acquire, brightfield, poisson, unbin_image
from .params import (
    CLASS_NAMES,
    ImagingParams,
    Structure,
    StructureParams,
    check_shape,
    check_structure,
    default_params,
)
from .saureus import draw_saureus


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


_DRAWERS = {
    "axons": draw_axons,
    "dendrites": draw_dendrites,
    "nanodomains": draw_nanodomains,
    "saureus": draw_saureus,
    "beads": draw_beads,
}


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
    shape, seed, params, structure_params = _checked(
        structure, shape, seed, params, structure_params
    )
    geometry_rng, confocal_rng, sted_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)
    )
    canvas = Canvas.for_field(shape, params.pixel_size_nm)
    density, masks = _DRAWERS[structure](canvas, geometry_rng, structure_params)
    optics = canvas.for_imaging(params)
    confocal_exp, sted_exp = _expected(structure, canvas, optics, density, masks, params)
    confocal = poisson(confocal_exp, confocal_rng)
    sted = poisson(sted_exp, sted_rng)

    crop, binning = optics.crop, params.confocal_binning
    truth = density[canvas.crop]
    peak = float(truth.max())
    masks_crop = (slice(None), *canvas.crop)  # bound first: mypy reads x[(*a,)] as 3.11 x[*a]
    field_masks = np.ascontiguousarray(masks[masks_crop])
    return SimulatedSample(
        confocal=unbin_image(confocal, binning)[crop].astype(np.float32),
        sted=sted[crop].astype(np.float32),
        labels=labels_from_masks(field_masks),
        masks=field_masks,
        ground_truth=(truth / peak if peak > 0 else truth).astype(np.float32),
        class_names=CLASS_NAMES[structure],
        pixel_size_nm=float(params.pixel_size_nm),
        structure=structure,
        params=params,
        seed=seed,
        structure_params=structure_params,
        confocal_expected=unbin_image(confocal_exp, binning)[crop].astype(np.float32),
        sted_expected=sted_exp[crop].astype(np.float32),
    )


def _checked(
    structure: str,
    shape: tuple[int, int],
    seed: int,
    params: ImagingParams | None,
    structure_params: StructureParams | None,
) -> tuple[tuple[int, int], int, ImagingParams, StructureParams]:
    """The arguments of :func:`simulate`, checked, with defaults filled in."""
    check_structure(structure)
    shape = check_shape(shape)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    params = default_params(structure) if params is None else params
    structure_params = StructureParams() if structure_params is None else structure_params
    if not isinstance(params, ImagingParams):
        raise InputError(f"params must be an ImagingParams, got {type(params).__name__}")
    return shape, int(seed), params, structure_params


def _expected(
    structure: str,
    canvas: Canvas,
    optics: Canvas,
    density: np.ndarray,
    masks: np.ndarray,
    params: ImagingParams,
) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free expected counts of the confocal (or brightfield) and the STED."""
    optical_density = canvas.embed(density, optics)
    if structure == "saureus":
        confocal = brightfield(canvas.embed(masks[0], optics), params)
    else:
        confocal = acquire(
            optical_density,
            optics,
            fwhm_nm=params.confocal_fwhm_nm,
            photons=params.confocal_photons,
            background=params.confocal_background,
            binning=params.confocal_binning,
        )
    sted = acquire(
        optical_density,
        optics,
        fwhm_nm=params.sted_fwhm_nm,
        photons=params.sted_photons,
        background=params.sted_background,
        binning=1,
    )
    return confocal, sted


def labels_from_masks(masks: np.ndarray) -> np.ndarray:
    """Flatten (n_classes, Y, X) masks to a uint8 label image; later classes win."""
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3:
        raise InputError(f"masks must be (n_classes, Y, X), got shape {masks.shape}")
    if masks.shape[0] > 254:
        raise InputError(f"at most 254 classes fit a uint8 label image, got {masks.shape[0]}")
    labels = np.zeros(masks.shape[1:], dtype=np.uint8)
    for k, mask in enumerate(masks):
        labels[mask] = k + 1
    return labels
