"""The Train panel's data: the chosen layers' planes, read on the main thread, as datasets.

Layers are read once, when Train is pressed (the plane under the sliders); the worker
builds the datasets from these arrays, the annotation layers in the model's class order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class ImageSet:
    """One image set's planes (and its annotation layers, for their class metadata)."""

    name: str
    confocal: np.ndarray
    sted: np.ndarray
    labels: list[Any] = field(default_factory=list)
    label_planes: list[np.ndarray] = field(default_factory=list)


def current_plane(layer: Any, point: tuple[float, ...]) -> np.ndarray:
    """The 2D (or channels-first) plane of ``layer`` under the viewer's sliders."""
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    if data.ndim <= 2:
        return np.asarray(data)
    position = layer.world_to_data(point)
    index = tuple(
        int(min(max(np.rint(c), 0), n - 1))
        for c, n in zip(position[: data.ndim - 2], data.shape, strict=False)
    )
    return np.asarray(data[index])


def order_labels(layers: list[Any], class_names: tuple[str, ...]) -> list[Any]:
    """Per-class annotation layers in the model's class order (by their class metadata)."""
    if len(layers) <= 1:
        return layers
    by_class = {}
    for layer in layers:
        classes = (layer.metadata.get("tagan") or {}).get("classes") or []
        if len(classes) != 1:  # else by name: "<image> annotations <class>", "<sample> <class>"
            classes = [c for c in class_names if layer.name.endswith(f" {c}")]
        if len(classes) == 1:
            by_class[classes[0]] = layer
    if set(by_class) >= set(class_names):
        return [by_class[c] for c in class_names]
    return layers


def gather_sets(rows: list[Any], point: tuple[float, ...]) -> list[ImageSet]:
    """The planes of each row's layers; :class:`InputError` says which row to fix."""
    from napari_tagan.core.errors import InputError

    sets = []
    for i, row in enumerate(rows):
        conf, sted = row.confocal.value, row.sted.value
        if conf is None or sted is None:
            raise InputError(f"set {i + 1}: choose a confocal and a STED layer")
        if conf is sted:
            raise InputError(
                f"set {i + 1}: choose two different layers (the confocal and STED are the same)"
            )
        labels = list(row.annotations.value or [])
        sets.append(
            ImageSet(
                conf.name,
                current_plane(conf, point),
                current_plane(sted, point),
                labels,
                [current_plane(x, point) for x in labels],
            )
        )
    if not sets:
        raise InputError("add at least one image set")
    return sets


def dataset(config: Any, chosen: list[ImageSet]) -> Any:
    """The training data of the chosen image sets, labels in the model's class order."""
    from napari_tagan.core.training import dataset_from_arrays

    labels: list[Any] = []
    for s in chosen:
        if not s.label_planes:
            labels.append(None)
        elif len(s.label_planes) == 1:
            labels.append(s.label_planes[0])
        else:
            ordered = order_labels(s.labels, config.class_names)
            labels.append([s.label_planes[s.labels.index(x)] for x in ordered])
    return dataset_from_arrays(
        config,
        [s.confocal for s in chosen],
        [s.sted for s in chosen],
        labels,
        names=[s.name for s in chosen],
    )


def datasets_for(sets: list[ImageSet], valid_index: int | None) -> Any:
    """``prepare_run``'s ``datasets(config) -> (train, valid)`` for these sets."""

    def build(config: Any) -> tuple[Any, Any]:
        train = [s for i, s in enumerate(sets) if i != valid_index]
        valid = dataset(config, [sets[valid_index]]) if valid_index is not None else None
        return dataset(config, train), valid

    return build
