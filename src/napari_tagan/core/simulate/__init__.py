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

Modules: :mod:`.params` (structures, imaging and biology parameters), :mod:`.optics`
(canvas, PSF blur, binning, noise), :mod:`.geometry` (shared drawing helpers), one module
per structure (:mod:`.axons`, :mod:`.dendrites`, :mod:`.nanodomains`, :mod:`.saureus`,
:mod:`.beads`), :mod:`.sample` (:func:`simulate`) and :mod:`.dataset`
(:func:`write_dataset`). Only numpy and scipy are imported; writing imports tifffile
lazily.
"""

from __future__ import annotations

from .dataset import write_dataset
from .params import (
    CLASS_NAMES,
    FWHM_PER_SIGMA,
    STRUCTURES,
    ImagingParams,
    Structure,
    StructureParams,
    default_params,
)
from .sample import SimulatedSample, labels_from_masks, simulate

__all__ = [
    "CLASS_NAMES",
    "FWHM_PER_SIGMA",
    "STRUCTURES",
    "ImagingParams",
    "SimulatedSample",
    "Structure",
    "StructureParams",
    "default_params",
    "labels_from_masks",
    "simulate",
    "write_dataset",
]
