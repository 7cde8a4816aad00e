"""Screenshots of the plugin in a real napari viewer, for the README and docs/walkthrough.md.

Run under an X server (no screen needed with Xvfb)::

    xvfb-run -a -s "-screen 0 1400x900x24" python docs/make_screenshots.py

It opens the simulated axons sample, trains a small model with the Train widget (ngf 8,
a few hundred iterations on the CPU: a minute or two), enhances the confocal image with
the Enhance widget, paints a few strokes in an Annotate layer, and saves
``docs/images/{sample,train,enhance,annotate}.png``. ``--iterations`` and ``--out``
change the length of training and the output folder.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
WINDOW = (1280, 800)  # a laptop screen: every control must fit or scroll
DOCK_WIDTH = 430


def wait(app, condition: Callable[[], bool], timeout: float = 600.0) -> None:
    """Run the event loop until ``condition()`` holds."""
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise TimeoutError("gave up waiting")
        app.processEvents()
        time.sleep(0.01)


def settle(app, seconds: float = 0.5) -> None:
    """Let the viewer draw (layer thumbnails, canvas, docked widgets)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.01)


def shoot(viewer, app, path: Path) -> None:
    """Save the whole window (canvas, layer list, docked widgets) as a PNG."""
    settle(app)
    viewer.reset_view()  # fit the image to the canvas left beside the docked widget
    settle(app, 0.3)
    viewer.screenshot(str(path), canvas_only=False, flash=False)
    print(f"wrote {path}")


def show_only(viewer, docks: dict[str, object], name: str) -> None:
    """Show one docked widget: each screenshot shows its own widget in full."""
    from qtpy.QtCore import Qt

    for key, dock in docks.items():
        dock.setVisible(key == name)
    window = viewer.window._qt_window
    window.resizeDocks([docks[name]], [DOCK_WIDTH], Qt.Orientation.Horizontal)


def stroke(data: np.ndarray, points: list[tuple[int, int]], value: int, radius: int) -> None:
    """Paint a brush stroke through ``points`` (as a user would with the brush)."""
    yy, xx = np.mgrid[: data.shape[0], : data.shape[1]]
    for (y0, x0), (y1, x1) in itertools.pairwise(points):
        for t in np.linspace(0, 1, 2 * max(abs(y1 - y0), abs(x1 - x0), 1)):
            y, x = y0 + t * (y1 - y0), x0 + t * (x1 - x0)
            data[(yy - y) ** 2 + (xx - x) ** 2 <= radius**2] = value


def ring_strokes(rings: np.ndarray, count: int) -> list[list[tuple[int, int]]]:
    """Strokes along the ``count`` longest ring stretches, as a user would trace them."""
    from scipy import ndimage

    labelled, n = ndimage.label(rings)
    sizes = ndimage.sum(rings, labelled, range(1, n + 1))
    strokes = []
    for index in np.argsort(sizes)[::-1][:count]:
        ys, xs = np.nonzero(labelled == index + 1)
        centre = np.array([ys.mean(), xs.mean()])
        coords = np.stack([ys, xs], 1) - centre
        axis = np.linalg.svd(coords, full_matrices=False)[2][0]
        along = coords @ axis
        points = []
        for q in np.linspace(0.1, 0.9, 5):
            near = np.abs(along - np.quantile(along, q)) < 3
            points.append(tuple(int(v) for v in np.stack([ys, xs], 1)[near].mean(0)))
        strokes.append(points)
    return strokes


def background_strokes(image: np.ndarray, count: int) -> list[list[tuple[int, int]]]:
    """Short vertical strokes in the darkest columns (between the axons)."""
    from scipy import ndimage

    smooth = ndimage.uniform_filter(image, 25)
    height, width = image.shape
    strokes: list[list[tuple[int, int]]] = []
    used: list[int] = []
    for x in np.argsort(smooth[height // 4 : 3 * height // 4].mean(0)):
        if 20 < x < width - 20 and all(abs(x - u) > 60 for u in used):
            y0 = height // 4 + 40 * len(used)
            strokes.append([(y0, int(x)), (y0 + height // 4, int(x))])
            used.append(int(x))
        if len(strokes) == count:
            break
    return strokes


def main() -> None:
    """Make the screenshots."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "images")
    parser.add_argument("--iterations", type=int, default=300)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_tagan._sample_data import sample_layers

    viewer = napari.Viewer(title="napari-tagan")
    app = QApplication.instance()
    viewer.window._qt_window.resize(*WINDOW)
    viewer.window._qt_window.move(0, 0)

    # 1. the sample: confocal, STED and the ring annotation
    viewer.open_sample("napari-tagan", "axons")
    viewer.canvas.grid.enabled = True  # side by side: confocal, STED, annotation
    viewer.canvas.grid.shape = (1, 3)
    viewer.reset_view()
    shoot(viewer, app, args.out / "sample.png")
    viewer.canvas.grid.enabled = False
    viewer.layers["axons STED"].visible = False
    viewer.layers["axons rings"].visible = False
    viewer.reset_view()

    # 2. train a small model (a second simulated image held out for validation)
    for data, kwargs, kind in sample_layers("axons", seed=1):
        kwargs["name"] = kwargs["name"].replace("axons", "axons #2")
        kwargs["visible"] = False
        viewer._add_layer_from_data(data, kwargs, kind)
    docks: dict[str, object] = {}
    widgets: dict[str, object] = {}
    for name in ("Train / fine-tune", "Enhance", "Annotate"):
        docks[name], widgets[name] = viewer.window.add_plugin_dock_widget(
            "napari-tagan", name, tabify=False
        )
    train, enhance, annotate = widgets.values()
    show_only(viewer, docks, "Train / fine-tune")

    first = train.rows[0]
    first.confocal.value = viewer.layers["axons confocal"]
    first.sted.value = viewer.layers["axons STED"]
    first.annotations.value = [viewer.layers["axons rings"]]
    second = train.add_set()
    second.confocal.value = viewer.layers["axons #2 confocal"]
    second.sted.value = viewer.layers["axons #2 STED"]
    second.annotations.value = [viewer.layers["axons #2 rings"]]
    train.validation.value = 1
    train.preset.value = "axons"
    train.filters.value = 8
    train.iterations.value = args.iterations
    train.batch_size.value = 4
    train.crop.value = 96
    train.device.value = "cpu"
    train.preview_every.value = 25
    train.validate_every.value = max(1, args.iterations // 6)
    train.checkpoint_every.value = args.iterations
    runs = Path(tempfile.mkdtemp(prefix="tagan-screens-")) / "runs"
    train.output.value = str(runs)
    started = time.monotonic()
    train.train()
    wait(app, lambda: not train.running)
    if train.summary is None:
        raise SystemExit("training failed; see the messages above")
    print(f"trained {train.summary.iterations} iterations in {time.monotonic() - started:.0f} s")
    for name in ("axons rings",):
        viewer.layers[name].visible = False
    viewer.layers.selection.active = viewer.layers["axons confocal training preview"]
    shoot(viewer, app, args.out / "train.png")

    # 3. enhance the confocal image with the model just trained (handed over by Train)
    show_only(viewer, docks, "Enhance")
    assert str(enhance.model_path.value) == str(train.summary.latest)
    viewer.layers["axons confocal training preview"].visible = False
    enhance.image.value = viewer.layers["axons confocal"]
    enhance.device.value = "cpu"
    enhance.run()
    wait(app, lambda: not enhance.running)
    viewer.layers["axons confocal"].visible = False
    viewer.layers["axons confocal segmentation"].visible = False
    viewer.layers.selection.active = viewer.layers["axons confocal synthetic STED"]
    shoot(viewer, app, args.out / "enhance.png")

    # 4. annotate: a Labels layer for the confocal image, with a few strokes
    show_only(viewer, docks, "Annotate")
    for layer in viewer.layers:
        layer.visible = layer.name == "axons confocal"
    annotate.image.value = viewer.layers["axons confocal"]
    annotate.preset.value = "axons"
    (labels,) = annotate.create()
    data = labels.data
    confocal = np.asarray(viewer.layers["axons confocal"].data, np.float32)
    for points in ring_strokes(viewer.layers["axons rings"].data == 2, count=2):
        stroke(data, points, 2, 5)
    for points in background_strokes(confocal, count=2):
        stroke(data, points, 1, 7)
    labels.data = data
    labels.refresh()
    shoot(viewer, app, args.out / "annotate.png")
    viewer.close()


if __name__ == "__main__":
    main()
