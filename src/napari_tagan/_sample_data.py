"""napari sample data: simulated confocal / STED pairs with their ground-truth labels.

Each function returns napari ``LayerData`` tuples: the confocal and STED images (photon
counts) and one Labels layer per class, all with the pixel size as ``scale`` in µm.
Labels follow the annotation convention (:mod:`napari_tagan.core.annotations`): 0 = not
annotated, 1 = background, 2 = the class. The simulated truth is complete, so 0 never
occurs, and the background is drawn transparent.

Nothing is imported at module import: napari reads the manifest at start-up, and the
simulator (numpy, scipy) loads only when a sample is opened.
"""

from __future__ import annotations

from typing import Any

#: Size of every sample (fine pixels): big enough to show the structures, quick to draw.
SAMPLE_SHAPE = (512, 512)
SAMPLE_SEED = 0


def axons_sample() -> list[tuple[Any, dict[str, Any], str]]:
    """Axonal F-actin: periodic-ring stretches on curved axons, class "rings"."""
    return sample_layers("axons")


def dendrites_sample() -> list[tuple[Any, dict[str, Any], str]]:
    """Dendritic F-actin: rings and longitudinal fibers, one Labels layer per class."""
    return sample_layers("dendrites")


def nanodomains_sample() -> list[tuple[Any, dict[str, Any], str]]:
    """Synaptic protein nanodomains: clusters tens of nm wide inside synapses."""
    return sample_layers("nanodomains")


def saureus_sample() -> list[tuple[Any, dict[str, Any], str]]:
    """*S. aureus*: brightfield-like → SIM-like pair of round, dividing cells."""
    return sample_layers("saureus")


def sample_layers(
    structure: str,
    shape: tuple[int, int] = SAMPLE_SHAPE,
    seed: int = SAMPLE_SEED,
) -> list[tuple[Any, dict[str, Any], str]]:
    """Simulate ``structure`` and return its layers as napari ``LayerData`` tuples.

    Parameters
    ----------
    structure : str
        One of :data:`napari_tagan.core.simulate.STRUCTURES`.
    shape : tuple of int
        (Y, X) in pixels.
    seed : int
        Simulation seed.

    Returns
    -------
    list of tuple
        ``(data, kwargs, layer_type)`` for the confocal and STED images, then one
        ``"labels"`` layer per class (named ``"<structure> <class>"``).
    """
    import numpy as np

    from napari_tagan.core.simulate import simulate

    sample = simulate(structure, shape, seed=seed)  # type: ignore[arg-type]
    px_um = sample.pixel_size_um
    scale = (px_um, px_um)
    base_meta = sample.metadata()
    is_bf = structure == "saureus"
    images = (
        ("brightfield" if is_bf else "confocal", sample.confocal, "gray"),
        ("SIM" if is_bf else "STED", sample.sted, "magma"),
    )
    layers: list[tuple[Any, dict[str, Any], str]] = []
    for modality, data, colormap in images:
        layers.append(
            (
                data,
                {
                    "name": f"{structure} {modality}",
                    "scale": scale,
                    "units": ("um", "um"),
                    "colormap": colormap,
                    "contrast_limits": (0.0, max(float(np.percentile(data, 99.9)), 1.0)),
                    "metadata": {**base_meta, "modality": modality},
                },
                "image",
            )
        )
    for class_name, mask in zip(sample.class_names, sample.masks, strict=True):
        layers.append(_truth_layer(structure, class_name, mask, scale, base_meta))
    return layers


def _truth_layer(
    structure: str, class_name: str, mask: Any, scale: tuple[float, float], meta: dict[str, Any]
) -> tuple[Any, dict[str, Any], str]:
    """A complete ground-truth mask as a Labels layer of the annotation convention."""
    # not "from napari_tagan.core import annotations": the package's own
    # "from __future__ import annotations" answers that name until the module is loaded
    import napari_tagan.core.annotations as ann

    style = ann.annotation_layer_kwargs(class_name, background=ann.TRANSPARENT)
    kwargs = {
        "name": f"{structure} {class_name}",
        "scale": scale,
        "units": ("um", "um"),
        "opacity": 0.5,
        "colormap": style["colormap"],
        "features": style["features"],
        "metadata": {
            **meta,
            # as the Annotate widget's layers: the Train widget orders by it
            **style["metadata"],
            "class_name": class_name,
            "label_values": {
                "not annotated": ann.NOT_ANNOTATED,
                "background": ann.BACKGROUND,
                class_name: ann.FIRST_CLASS,
            },
        },
    }
    return ann.mask_to_annotation(mask), kwargs, "labels"
