"""Live-cell mode: real STED in the acquired regions, the generator fills in the rest.

The live preset's generator reads (confocal, STED where acquired, decision map); the
prediction engine builds that input (``plane_reader`` in ``core.prediction.inputs``)
from ``sted`` and ``sted_mask``. This module turns a :class:`RegionSet` into those two
arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError
from .regions import RegionSet


def check_live(model: Any) -> None:
    """Raise unless ``model`` takes STED regions as input (the live preset)."""
    if not model.config.sted_regions_input:
        raise InputError(
            f"the {model.config.preset!r} model does not take acquired STED regions; "
            "use a live-preset model (or propose regions without STED)"
        )


def region_sted(
    sted: np.ndarray, regions: RegionSet, confocal_shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """``(sted, sted_mask)`` for ``predict``: the STED inside the regions, and where.

    Outside the regions the STED is replaced by the median acquired value, because
    ``predict`` normalizes the STED with statistics of the whole array: pixels never
    acquired (zeros, or whatever the file holds there) must not move them.
    """
    sted = np.asarray(sted, np.float32)
    shape = tuple(int(s) for s in confocal_shape[-2:])
    if sted.shape != shape:
        raise InputError(f"STED image of shape {sted.shape} does not match the confocal {shape}")
    if regions.image_shape != shape:
        raise InputError(
            f"regions were made for a {regions.image_shape[0]}×{regions.image_shape[1]} "
            f"image, not {shape[0]}×{shape[1]}"
        )
    mask = regions.mask()
    if not mask.any():
        raise InputError("no regions: acquire STED in at least one region")
    inside = sted[mask]
    if not np.isfinite(inside).all():
        raise InputError("the STED holds NaN or infinite pixel(s) inside the regions")
    filled = np.where(mask, sted, np.float32(np.median(inside)))
    return filled.astype(np.float32), mask


def live_input(model: Any, confocal: Any, sted: np.ndarray, regions: RegionSet) -> np.ndarray:
    """The live generator's normalized input (confocal channels + 2, Y, X) for ``regions``."""
    from ..prediction.inputs import as_channels_first, plane_reader

    check_live(model)
    sted_in, mask = region_sted(sted, regions, tuple(np.shape(confocal)))
    chw, _ = as_channels_first(model, np.asarray(confocal))
    h, w = regions.image_shape
    read, _ = plane_reader(model, chw, (h, w), sted=sted_in, sted_mask=mask)
    return read((0, h, 0, w))


def predict_with_regions(
    model: Any, confocal: Any, sted: np.ndarray, regions: RegionSet, **options: Any
) -> Any:
    """Predict the field from the confocal and the real STED acquired in ``regions``.

    ``options`` go to :func:`~napari_tagan.core.prediction.predict`; returns its
    :class:`~napari_tagan.core.prediction.PredictionResult`.
    """
    from ..prediction import predict

    check_live(model)
    sted_in, mask = region_sted(sted, regions, tuple(np.shape(confocal)))
    return predict(model, confocal, sted=sted_in, sted_mask=mask, **options)
