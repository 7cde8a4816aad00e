"""Which layers a panel pre-selects: inputs by name, never our own results.

A sample or a TA-GAN file opens as ``<name> confocal``, ``<name> STED`` and annotation
Labels (``<name> rings``); the S. aureus sample as ``brightfield`` and ``SIM``. Layers the
widgets made (synthetic STED, segmentation, variability, training previews) carry
``metadata["tagan"]["input_layer"]`` and are never guessed as inputs or ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Layer-name endings of the low- and high-resolution images of a pair.
PAIR_NAMES = (("confocal", "STED"), ("brightfield", "SIM"))
#: Name endings of the layers the widgets write (older files may lack the metadata).
RESULT_ENDINGS = ("synthetic sted", "variability", "training preview", "segmentation")


def is_result(layer: Any) -> bool:
    """Whether ``layer`` was made by a widget (a result or preview), not by a microscope."""
    if "input_layer" in ((layer.metadata or {}).get("tagan") or {}):
        return True
    name = layer.name.lower()
    return any(name.endswith(end) or f" {end} " in f"{name} " for end in RESULT_ENDINGS)


def low_resolution_ending(name: str) -> str | None:
    """``"confocal"`` or ``"brightfield"`` if ``name`` ends with it (any case)."""
    lower = name.lower()
    return next((low for low, _ in PAIR_NAMES if lower.endswith(low)), None)


def guess_input(images: list[Any]) -> Any:
    """The image to enhance: a ``* confocal``/``* brightfield`` layer, else any non-result."""
    images = [x for x in images if x is not None]
    inputs = [x for x in images if not is_result(x)]
    named = [x for x in inputs if low_resolution_ending(x.name)]
    return (named or inputs or images or [None])[0]


@dataclass
class SetGuess:
    """The layers of one training image set (None where nothing fits)."""

    confocal: Any = None
    sted: Any = None
    labels: list[Any] = field(default_factory=list)


def guess_set(images: list[Any], labels: list[Any], taken: set[int] = frozenset()) -> SetGuess:
    """A confocal/STED pair recognised by name, with the annotations named after it.

    ``taken`` holds ``id()`` of confocal layers other rows use: each row gets its own pair.
    """
    images = [x for x in images if x is not None]  # a nullable list's empty choice
    for conf in images:
        low = low_resolution_ending(conf.name)
        if low is None or is_result(conf) or id(conf) in taken:
            continue
        stem = conf.name[: -len(low)]
        high = f"{stem}{dict(PAIR_NAMES)[low]}".lower()
        sted = next((x for x in images if x.name.lower() == high and not is_result(x)), None)
        if sted is None:
            continue
        truth = [x for x in labels if x.name.startswith(stem) and not is_result(x)]
        return SetGuess(conf, sted, truth)
    return SetGuess()
