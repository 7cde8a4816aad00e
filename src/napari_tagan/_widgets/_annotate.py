"""Annotate widget: empty Labels layers matching an image, with a preset's named classes.

Each class gets its own Labels layer ``<image> annotations <class>`` (or ``<image>
annotations`` for one class), because classes may overlap (rings and fibers). Values: 0 =
not annotated (the eraser), 1 = background, 2 = the class; annotating a few regions is
enough, the training loss ignores the rest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import ComboBox, Container, Label, LineEdit, PushButton

from napari_tagan.core.annotations import (
    BACKGROUND_COLOUR,
    FIRST_CLASS,
    annotation_layer_kwargs,
    class_colour,
)

from ._common import keep_choices_fresh, layers_of_type, spatial_kwargs

if TYPE_CHECKING:
    import napari
    from napari.layers import Image, Labels


def annotation_layer_data(
    image: Image, classes: list[str], image_channels: int = 1
) -> list[tuple[Any, dict[str, Any], str]]:
    """LayerData of empty annotation layers (uint8 zeros) overlaying ``image``."""
    shape = tuple(image.data[0].shape if image.multiscale else image.data.shape)
    drop: tuple[int, ...] = ()
    if image.rgb:
        shape, drop = shape[:-1], ()
    elif image_channels > 1 and len(shape) >= 3 and shape[-3] == image_channels:
        shape, drop = shape[:-3] + shape[-2:], (-3,)
    spatial = spatial_kwargs(image, drop_axes=drop)
    layers = []
    for cls in classes:
        name = f"{image.name} annotations" + (f" {cls}" if len(classes) > 1 else "")
        style = annotation_layer_kwargs(cls)
        style["metadata"]["tagan"]["image_layer"] = image.name
        layers.append(
            (
                np.zeros(shape, np.uint8),
                {**spatial, **style, "name": name, "opacity": 0.6},
                "labels",
            )
        )
    return layers


def legend_html(classes: list[str]) -> str:
    """Which value to paint for what, with the layer colours."""
    r, g, b, _ = (int(255 * c) for c in BACKGROUND_COLOUR)
    rows = [
        "paint <b>0</b> (eraser) = not annotated",
        f"<b>1</b> = <span style='color: rgb({r},{g},{b})'>■</span> background",
    ]
    for i, cls in enumerate(classes):
        rows.append(
            f"<b>{FIRST_CLASS}</b> = <span style='color: {class_colour(cls, i)}'>■</span> {cls}"
            + (" (its own layer)" if len(classes) > 1 else "")
        )
    return "<br>".join(rows)


class AnnotateWidget(Container):
    """Create annotation Labels layers for an image with a preset's classes."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        from napari_tagan.core.config import PRESET_NAMES

        super().__init__(labels=True)
        self.viewer = viewer
        self.image = ComboBox(label="image", choices=self._image_choices, nullable=False)
        self.preset = ComboBox(label="preset", choices=list(PRESET_NAMES), value="axons")
        self.classes = LineEdit(
            label="classes", tooltip="Comma-separated class names (edit for your own data)"
        )
        self.create_button = PushButton(text="Create annotation layer(s)")
        self.legend = Label(label="")
        self.extend([self.image, self.preset, self.classes, self.create_button, self.legend])
        self.preset.changed.connect(self._on_preset)
        self.classes.changed.connect(self._update_legend)
        self.create_button.changed.connect(self.create)
        keep_choices_fresh(viewer, self)
        self._on_preset()

    def _image_choices(self, _: Any = None) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in layers_of_type(self.viewer, "image")]

    def _on_preset(self, *_: Any) -> None:
        from napari_tagan.core.config import preset_config

        self.classes.value = ", ".join(preset_config(self.preset.value).class_names)
        self._update_legend()

    def class_names(self) -> list[str]:
        names = [c.strip() for c in str(self.classes.value).split(",")]
        return list(dict.fromkeys(n for n in names if n))

    def _update_legend(self, *_: Any) -> None:
        classes = self.class_names()
        self.legend.value = legend_html(classes) if classes else "enter at least one class"

    def create(self, *_: Any) -> list[Labels]:
        """Add (or select, if they exist) the annotation layers of the chosen image."""
        from napari.layers import Layer
        from napari.utils.notifications import show_error, show_info

        from napari_tagan.core.config import preset_config

        image = self.image.value
        classes = self.class_names()
        if image is None:
            show_error("Annotate: no image layer chosen")
            return []
        if not classes:
            show_error("Annotate: enter at least one class name")
            return []
        channels = preset_config(self.preset.value).image_channels
        made: list[Labels] = []
        for data, kwargs, layer_type in annotation_layer_data(image, classes, channels):
            name = kwargs["name"]
            if name in self.viewer.layers:
                # Never wipe an annotation in progress: reuse the layer.
                show_info(f"Annotate: {name!r} exists already; continuing with it")
                made.append(self.viewer.layers[name])
                continue
            made.append(self.viewer.add_layer(Layer.create(data, kwargs, layer_type)))
        if made:
            target = made[0]
            self.viewer.layers.selection.active = target
            target.selected_label = FIRST_CLASS
            target.brush_size = max(3, min(target.data.shape[-2:]) // 40)
            target.mode = "paint"
        return made
