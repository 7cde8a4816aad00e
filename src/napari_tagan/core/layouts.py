"""The TA-GAN file layouts: what each plane of an original training/test file holds.

One table, :data:`LAYOUTS`, read by the napari reader (to open a file as named layers),
the simulator's dataset writer (to write the original layouts), the training data loader
(to split a file into confocal, STED and masks) and prediction (to take the confocal of
a whole TA-GAN file). Files are channels first:

========== ====================================================== ====== ===========
layout     planes                                                 dtype  masks
========== ====================================================== ====== ===========
axons      confocal, STED, rings                                  uint16 0 / 255
dendrites  confocal, STED, rings, fibers                          uint16 0 / 32768
synprot    (confocal, STED, spots) × (561, 640)                   uint16 graded
nanodomains confocal, STED, nanodomains                           uint8  0 / 255
live       confocal, STED                                         uint16 none
saureus    folders BF/, SIM/, masks/ (one 2D image each)          uint16 bool
========== ====================================================== ====== ===========

Pure numpy: the reader imports this module when napari starts.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from .errors import InputError

Role = Literal["confocal", "sted", "mask"]
ROLES: tuple[Role, ...] = ("confocal", "sted", "mask")
#: Values a binary TA-GAN mask plane uses for "on".
MASK_ON_VALUES = (1, 255, 32768, 65535)
#: A graded mask plane (synprot) holds at most this many grey values, most pixels 0.
GRADED_MAX_VALUES = 256


@dataclass(frozen=True)
class Plane:
    """One plane of a layout: its role and its name (a channel or class name)."""

    role: Role
    name: str


@dataclass(frozen=True)
class FileLayout:
    """A channels-first TA-GAN file layout.

    Attributes
    ----------
    name : str
        The preset (or ``"generic"``) the layout belongs to.
    planes : tuple of Plane
        What each plane holds, in file order.
    dtype : str
        The dtype of the original files (and of the simulator's).
    mask_on : int or None
        The "on" value of binary masks (None: masks are graded or absent).
    mask_encoding : {"binary", "graded"}
        Binary masks hold 0 and ``mask_on``; graded masks (synprot) several grey values,
        any non-zero being the class.
    folders : tuple of str or None
        For folder layouts (S. aureus): the confocal, STED and mask sub-folders, each
        holding 2D images with the same file names.
    """

    name: str
    planes: tuple[Plane, ...]
    dtype: str = "uint16"
    mask_on: int | None = 255
    mask_encoding: Literal["binary", "graded"] = "binary"
    folders: tuple[str, str, str] | None = None

    def indices(self, role: Role) -> tuple[int, ...]:
        """Plane indices holding ``role``, in file order."""
        return tuple(i for i, p in enumerate(self.planes) if p.role == role)

    def names(self, role: Role) -> tuple[str, ...]:
        """Names of the planes holding ``role`` (class names for masks)."""
        return tuple(p.name for p in self.planes if p.role == role)

    @property
    def n_planes(self) -> int:
        return len(self.planes)

    def without_masks(self) -> FileLayout:
        """The same layout without its mask planes (unannotated files)."""
        planes = tuple(p for p in self.planes if p.role != "mask")
        return replace(self, planes=planes, mask_on=None)


_CONF, _STED = Plane("confocal", "confocal"), Plane("sted", "STED")


def _masks(*classes: str) -> tuple[Plane, ...]:
    return tuple(Plane("mask", c) for c in classes)


def _synprot_planes() -> tuple[Plane, ...]:
    # the original loader's order: every wavelength's confocal, STED and spots together
    return tuple(
        plane
        for nm in ("561", "640")
        for plane in (
            Plane("confocal", f"confocal {nm}"),
            Plane("sted", f"STED {nm}"),
            Plane("mask", f"spots {nm}"),
        )
    )


#: The original TA-GAN layouts, by preset.
LAYOUTS: dict[str, FileLayout] = {
    "axons": FileLayout("axons", (_CONF, _STED, *_masks("rings"))),
    "dendrites": FileLayout(
        "dendrites", (_CONF, _STED, *_masks("rings", "fibers")), mask_on=32768
    ),
    "synprot": FileLayout("synprot", _synprot_planes(), mask_on=None, mask_encoding="graded"),
    "nanodomains": FileLayout(
        "nanodomains", (_CONF, _STED, *_masks("nanodomains")), dtype="uint8"
    ),
    "live": FileLayout("live", (_CONF, _STED), mask_on=None),
    "saureus": FileLayout(
        "saureus",
        (Plane("confocal", "brightfield"), Plane("sted", "SIM"), *_masks("bacteria")),
        mask_on=1,
        folders=("BF", "SIM", "masks"),
    ),
}


# --- splitting -----------------------------------------------------------------------------


def _take(array: Any, indices: Sequence[int]) -> Any:
    """``array[indices]`` along the first axis; a view when the indices are evenly spaced."""
    if len(indices) == 1:
        return array[indices[0] : indices[0] + 1]
    step = indices[1] - indices[0]
    if step > 0 and all(b - a == step for a, b in itertools.pairwise(indices)):
        return array[indices[0] : indices[-1] + 1 : step]
    return array[list(indices)]


def split(array: Any, layout: FileLayout) -> dict[Role, Any]:
    """The planes of a (C, Y, X) ``array`` by role: each (n, Y, X), masks only if any."""
    if array.shape[0] != layout.n_planes:
        raise InputError(
            f"{array.shape[0]} plane(s), but the {layout.name!r} layout has {layout.n_planes}"
        )
    return {role: _take(array, layout.indices(role)) for role in ROLES if layout.indices(role)}


def confocal_of(array: Any, layout: FileLayout) -> Any:
    """The confocal plane(s) of a TA-GAN file: (Y, X) for one, (C, Y, X) for several."""
    confocal = split(array, layout)["confocal"]
    return confocal[0] if confocal.shape[0] == 1 else confocal


# --- layouts for a model's channel counts -------------------------------------------------


def _numbered(base: str, role: Role, n: int) -> tuple[Plane, ...]:
    return tuple(Plane(role, base if n == 1 else f"{base} {i + 1}") for i in range(n))


def layout_for(
    image_channels: int,
    output_nc: int,
    class_names: Sequence[str],
    n_planes: int,
    *,
    preset: str = "generic",
) -> FileLayout | None:
    """The layout of an ``n_planes`` file for a model, or None when none fits.

    ``[confocal…, STED…, masks…]``, ``[confocal…, STED…]`` (unannotated), and for
    multi-channel models with one class per channel (synprot) groups of three per
    channel, ``[conf A, STED A, mask A, conf B, …]``. The preset's own layout
    (:data:`LAYOUTS`) names the planes when its channel counts fit.
    """
    ic, oc, n = image_channels, output_nc, len(class_names)
    conf = _numbered("confocal", "confocal", ic)
    sted = _numbered("STED", "sted", oc)
    own = LAYOUTS.get(preset)
    if own is not None and (len(own.indices("confocal")), len(own.indices("sted"))) == (ic, oc):
        conf = tuple(own.planes[i] for i in own.indices("confocal"))
        sted = tuple(own.planes[i] for i in own.indices("sted"))
    masks = _masks(*class_names)
    if ic > 1 and ic == oc == n and n_planes == 3 * ic:
        groups = zip(conf, sted, masks, strict=True)
        layout = FileLayout(preset, tuple(plane for group in groups for plane in group))
    elif n and n_planes == ic + oc + n:
        layout = FileLayout(preset, (*conf, *sted, *masks))
    elif n_planes == ic + oc:
        layout = FileLayout(preset, (*conf, *sted), mask_on=None)
    else:
        return None
    same = own is not None and own.folders is None and own.planes == layout.planes
    return own if same else layout


def channels_first(stack: np.ndarray) -> np.ndarray:
    """A (Y, X, C) file (few planes last) as (C, Y, X); other arrays unchanged."""
    if stack.ndim == 3 and stack.shape[0] > 16 and stack.shape[-1] <= 16:
        return np.moveaxis(stack, -1, 0)
    return stack


def split_stack(
    stack: np.ndarray,
    image_channels: int,
    output_nc: int,
    class_names: Sequence[str],
    *,
    preset: str = "generic",
    name: str = "sample",
) -> dict[Role, np.ndarray]:
    """Split one training file by :func:`layout_for`; :class:`InputError` when none fits."""
    stack = channels_first(stack)
    if stack.ndim != 3:
        raise InputError(f"{name}: expected a multi-page (C, Y, X) TIFF, got shape {stack.shape}")
    layout = layout_for(image_channels, output_nc, class_names, stack.shape[0], preset=preset)
    if layout is None:
        ic, oc, n = image_channels, output_nc, len(class_names)
        expect = f"{ic} confocal + {oc} STED" + (f" + {n} mask" if n else "") + " channel(s)"
        raise InputError(
            f"{name} has {stack.shape[0]} channel(s); the {preset!r} preset expects {expect}"
            + (f" (or {ic + oc} without masks)" if n else "")
        )
    return split(stack, layout)


# --- recognising a file --------------------------------------------------------------------


def _binary(plane: np.ndarray) -> bool:
    """0 and one "on" value (or only one of them)."""
    values = np.unique(plane)
    if values.size > 2 or values[0] != 0:
        return values.size == 1 and values[0] in MASK_ON_VALUES
    return values.size == 1 or values[1] in MASK_ON_VALUES


def _graded(plane: np.ndarray) -> bool:
    """Mostly 0, with a few grey values (the synprot spots masks)."""
    values = np.unique(plane)
    zero = np.count_nonzero(plane == 0) / max(plane.size, 1)
    return bool(values[0] == 0 and values.size <= GRADED_MAX_VALUES and zero >= 0.5)


def _fits(data: np.ndarray, layout: FileLayout) -> bool:
    mask_ok = _graded if layout.mask_encoding == "graded" else _binary
    if not all(mask_ok(data[i]) for i in layout.indices("mask")):
        return False
    images = layout.indices("confocal") + layout.indices("sted")
    return not any(_binary(data[i]) for i in images)


def _candidates(data: np.ndarray, axes: str) -> list[FileLayout]:
    n = data.shape[0]
    if n == 2:
        return [LAYOUTS["live"]] if axes[:1] != "C" else []
    if n == 3:
        return [LAYOUTS["nanodomains" if data.dtype == np.uint8 else "axons"]]
    return [lay for lay in LAYOUTS.values() if lay.folders is None and lay.n_planes == n]


def recognise(data: Any, axes: str = "", hint: str | None = None) -> FileLayout | None:
    """The TA-GAN layout of a (C, Y, X) integer array, or None when it is not one.

    The first axis must not be a stated Z or T axis (``axes`` as tifffile names them);
    mask planes must be binary (0 and one of :data:`MASK_ON_VALUES`) or, for synprot,
    graded, and image planes not binary. Two planes without a stated channel axis are
    the live layout (confocal, STED): nothing to check. ``hint`` (a preset name) is
    tried first, e.g. the model's preset when predicting.
    """
    if not isinstance(data, np.ndarray) or data.ndim != 3 or axes[:1] in ("Z", "T"):
        return None
    if not np.issubdtype(data.dtype, np.integer) or min(data.shape[1:]) < 8:
        return None
    candidates = _candidates(data, axes)
    own = LAYOUTS.get(hint or "")
    if own is not None and own.folders is None and own.n_planes == data.shape[0]:
        candidates = [own, *(c for c in candidates if c is not own)]
    for layout in candidates:
        if layout.n_planes == 2 or _fits(data, layout):
            return layout
    return None
