"""Enhance's computation, with no viewer or widget: plan planes, run them, build layer data.

Planes are read one at a time, so dask and zarr layers are never loaded whole; results
are named after the input layer and carry its scale and translate.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._common import spatial_kwargs
from ._labels import class_colour, probability_to_annotation

if TYPE_CHECKING:
    from napari.layers import Image

    from napari_tagan.core.model import TAGANModel


@dataclass
class ModelChoice:
    """Which model to use: a bundle or original folder, its epoch, and a preset hint."""

    path: str
    epoch: str | None = None
    preset: str | None = None

    def key(self) -> tuple[Any, ...]:
        p = Path(self.path)
        try:
            stamp = (
                p.stat().st_mtime_ns
                if p.is_file()
                else max((f.stat().st_mtime_ns for f in p.glob("*.pth")), default=0)
            )
        except OSError:
            stamp = 0
        return (str(p.resolve()), self.epoch, self.preset, stamp)


@dataclass
class PlanePlan:
    """Which planes of a layer to enhance and where the result sits.

    ``lead_shape`` are the layer's axes before the image axes ((C,) Y, X); ``indices`` the
    planes to process (tuples into ``lead_shape``); ``out_lead`` the result's leading
    shape and ``offset`` the index of its first plane in the layer (shifts ``translate``).
    """

    lead_shape: tuple[int, ...]
    indices: list[tuple[int, ...]]
    out_lead: tuple[int, ...]
    offset: tuple[int, ...]


def plan_planes(
    shape: tuple[int, ...], image_axes: int, scope: str, current: tuple[int, ...] = ()
) -> PlanePlan:
    """Plan the planes of a layer of ``shape`` whose last ``image_axes`` axes are an image.

    ``current`` is the layer-coordinate position of the sliders (the plane shown).
    """
    lead = tuple(shape[: max(0, len(shape) - image_axes)])
    if not lead:
        return PlanePlan((), [()], (), ())
    if scope == "stack":
        return PlanePlan(lead, list(itertools.product(*map(range, lead))), lead, (0,) * len(lead))
    given = tuple(current[: len(lead)]) + (0,) * max(0, len(lead) - len(current))
    position = tuple(int(min(max(c, 0), n - 1)) for c, n in zip(given, lead, strict=True))
    return PlanePlan(lead, [position], (1,) * len(lead), position)


@dataclass
class EnhanceOutput:
    """Results for the planned planes, stacked with ``out_lead`` leading axes."""

    synthetic_sted: np.ndarray
    segmentation: np.ndarray | None  # (n_classes, *out_lead, Y, X)
    variability: np.ndarray | None
    class_names: tuple[str, ...]
    metadata: dict[str, Any] = field(default_factory=dict)


def enhance_planes(
    model: TAGANModel,
    data: Any,
    plan: PlanePlan,
    *,
    progress: Callable[[float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    **predict_args: Any,
) -> EnhanceOutput:
    """Run :func:`~napari_tagan.core.prediction.predict` on each planned plane of ``data``.

    Planes are read one at a time (``np.asarray(data[index])``), so dask and zarr layers
    are never loaded whole. ``progress(fraction)`` follows the core's own progress.
    """
    from napari_tagan.core.prediction import predict

    n = len(plan.indices)
    sted = seg = var = None
    result = None
    for i, index in enumerate(plan.indices):
        if should_stop is not None and should_stop():
            raise InterruptedError("enhancement cancelled")
        plane = np.asarray(data[index]) if index else np.asarray(data)

        def plane_progress(done: int, total: int, i: int = i) -> None:
            if progress is not None:
                progress((i + done / max(total, 1)) / n)

        result = predict(
            model, plane, progress=plane_progress, should_stop=should_stop, **predict_args
        )
        out_index = tuple(idx - off for idx, off in zip(index, plan.offset, strict=True))
        if sted is None:
            sted = np.zeros(plan.out_lead + result.synthetic_sted.shape, np.float32)
            if result.variability is not None:
                var = np.zeros(plan.out_lead + result.variability.shape, np.float32)
            if result.segmentation is not None:
                n_classes, *yx = result.segmentation.shape
                seg = np.zeros((n_classes, *plan.out_lead, *yx), np.float32)
        sted[out_index] = result.synthetic_sted
        if var is not None:
            var[out_index] = result.variability
        if seg is not None:
            seg[(slice(None), *out_index)] = result.segmentation
        if progress is not None:
            progress((i + 1) / n)
    assert sted is not None and result is not None
    metadata = dict(result.metadata)
    if n > 1:  # per-plane statistics; the last plane's would mislead
        metadata.pop("normalization_stats", None)
    return EnhanceOutput(sted, seg, var, tuple(result.class_names), metadata)


def result_layers(
    layer: Image,
    output: EnhanceOutput,
    plan: PlanePlan,
    *,
    image_channels: int = 1,
    segmentation: str = "labels",
    provenance: dict[str, Any] | None = None,
) -> list[tuple[Any, dict[str, Any], str]]:
    """LayerData for the results of ``layer``: named after it, overlaying it exactly."""
    name = layer.name
    base = _shifted(spatial_kwargs(layer), plan.offset)
    meta = {"tagan": {**output.metadata, **(provenance or {}), "input_layer": name}}
    if plan.lead_shape:
        meta["tagan"]["planes"] = [list(i) for i in plan.indices][:64]

    colormap = getattr(layer.colormap, "name", "gray")
    layers: list[tuple[Any, dict[str, Any], str]] = [
        (
            output.synthetic_sted,
            {**base, "name": f"{name} synthetic STED", "metadata": meta, "colormap": colormap},
            "image",
        )
    ]
    if output.variability is not None:
        layers.append(
            (
                output.variability,
                {
                    **base,
                    "name": f"{name} variability",
                    "metadata": meta,
                    "colormap": "inferno",
                    "blending": "additive",
                },
                "image",
            )
        )
    if output.segmentation is not None and segmentation != "none":
        # The class maps have no channel axis: drop it from multi-channel inputs.
        seg_base = (
            _shifted(spatial_kwargs(layer, drop_axes=(-3,)), plan.offset)
            if image_channels > 1
            else base
        )
        layers += _segmentation_layers(name, output, seg_base, meta, segmentation)
    return layers


def _segmentation_layers(
    name: str,
    output: EnhanceOutput,
    seg_base: dict[str, Any],
    meta: dict[str, Any],
    segmentation: str,
) -> list[tuple[Any, dict[str, Any], str]]:
    """One Labels (or probability image) layer per class."""
    layers: list[tuple[Any, dict[str, Any], str]] = []
    classes = output.class_names
    for k, cls in enumerate(classes):
        label = f"{name} segmentation" if len(classes) == 1 else f"{name} segmentation {cls}"
        seg_meta = {"tagan": {**meta["tagan"], "classes": [cls]}}
        if segmentation == "labels":
            from ._labels import annotation_layer_kwargs

            style = annotation_layer_kwargs(cls)
            style["metadata"]["tagan"].update(seg_meta["tagan"])
            layers.append(
                (
                    probability_to_annotation(output.segmentation[k]),
                    {**seg_base, **style, "name": label, "opacity": 0.5},
                    "labels",
                )
            )
        else:
            layers.append(
                (
                    output.segmentation[k],
                    {
                        **seg_base,
                        "name": label,
                        "metadata": seg_meta,
                        "colormap": class_colour(cls, k),
                        "contrast_limits": (0.0, 1.0),
                        "blending": "additive",
                    },
                    "image",
                )
            )
    return layers


def _shifted(spatial: dict[str, Any], offset: tuple[int, ...]) -> dict[str, Any]:
    """Move the leading axes' translate by ``offset`` planes (a single-plane result)."""
    translate = list(spatial["translate"])
    for axis, planes in enumerate(offset):
        translate[axis] += planes * spatial["scale"][axis]
    return {**spatial, "translate": tuple(translate)}
