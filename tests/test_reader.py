"""The TIFF reader on real files written by tifffile: layouts, plain images, pixel sizes."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import dask.array as da
import numpy as np
import pytest
import tifffile
from napari.components import ViewerModel
from npe2 import PluginManager

from napari_tagan import _reader
from napari_tagan._reader import napari_get_reader, read_layers
from napari_tagan.core.layouts import LAYOUTS, recognise


def _image(rng: np.random.Generator, shape=(64, 64), dtype=np.uint16, scale=60) -> np.ndarray:
    return rng.poisson(scale, size=shape).astype(dtype)


def _mask(rng: np.random.Generator, on: int, shape=(64, 64), dtype=np.uint16) -> np.ndarray:
    return np.where(rng.random(shape) > 0.7, on, 0).astype(dtype)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1)


# --- declining -----------------------------------------------------------------------------


def test_declines_non_tiff_missing_and_corrupt_files(tmp_path):
    png = tmp_path / "picture.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 32)
    fake = tmp_path / "fake.tif"
    fake.write_bytes(b"this is not a tiff at all")
    empty = tmp_path / "empty.tiff"
    empty.write_bytes(b"")
    good = tmp_path / "good.tif"
    tifffile.imwrite(good, np.zeros((8, 8), np.uint8))
    assert napari_get_reader(str(png)) is None
    assert napari_get_reader(str(fake)) is None
    assert napari_get_reader(str(empty)) is None
    assert napari_get_reader(str(tmp_path / "missing.tif")) is None
    assert napari_get_reader(str(tmp_path)) is None
    assert napari_get_reader([str(good), str(png)]) is None
    assert napari_get_reader([]) is None
    assert napari_get_reader(str(good)) is read_layers
    assert napari_get_reader([str(good), str(good)]) is read_layers


def test_reader_never_imports_torch(tmp_path):
    path = tmp_path / "axons.tif"
    rng = np.random.default_rng(0)
    tifffile.imwrite(
        path, np.stack([_image(rng), _image(rng), _mask(rng, 255)]), photometric="minisblack"
    )
    code = textwrap.dedent(
        f"""
        import sys
        from napari_tagan._reader import napari_get_reader
        assert napari_get_reader({str(tmp_path / "x.png")!r}) is None
        layers = napari_get_reader({str(path)!r})({str(path)!r})
        assert len(layers) == 3, layers
        assert "torch" not in sys.modules
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- TA-GAN layouts ------------------------------------------------------------------------


# Old tifffile versions stored 3×Y×X uint16 as planar RGB: such files exist in the wild.
@pytest.mark.filterwarnings("ignore:.*stored as RGB:DeprecationWarning")
@pytest.mark.parametrize("photometric", [None, "minisblack"])
def test_axons_layout_opens_as_named_layers(tmp_path, rng, photometric):
    confocal, sted, mask = _image(rng), _image(rng, scale=120), _mask(rng, 255)
    path = tmp_path / "axons_0.tif"
    kwargs = {"photometric": photometric} if photometric else {}
    tifffile.imwrite(path, np.stack([confocal, sted, mask]), **kwargs)

    layers = read_layers(str(path))
    assert [(m["name"], t) for _, m, t in layers] == [
        ("axons_0 confocal", "image"),
        ("axons_0 STED", "image"),
        ("axons_0 rings", "labels"),
    ]
    np.testing.assert_array_equal(layers[0][0], confocal)
    np.testing.assert_array_equal(layers[1][0], sted)
    labels = layers[2][0]
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, np.where(mask > 0, 2, 1))
    assert layers[2][1]["features"]["class"] == ["not annotated", "background", "rings"]
    assert layers[2][1]["metadata"]["tagan"]["classes"] == ["rings"]
    assert all(m["metadata"]["tagan"]["layout"] == "axons" for _, m, _ in layers)


def test_dendrites_layout_gives_one_labels_layer_per_class(tmp_path, rng):
    rings, fibers = _mask(rng, 32768), _mask(rng, 32768)
    data = np.stack([_image(rng), _image(rng), rings, fibers])
    path = tmp_path / "dend.tif"
    tifffile.imwrite(path, data, photometric="minisblack")
    layers = read_layers(str(path))
    names = [m["name"] for _, m, _ in layers]
    assert names == ["dend confocal", "dend STED", "dend rings", "dend fibers"]
    assert [t for *_, t in layers] == ["image", "image", "labels", "labels"]
    np.testing.assert_array_equal(layers[2][0], np.where(rings > 0, 2, 1))
    np.testing.assert_array_equal(layers[3][0], np.where(fibers > 0, 2, 1))


def test_synprot_nanodomains_and_live_layouts(tmp_path, rng):
    synprot = np.stack(
        [_image(rng), _image(rng), _mask(rng, 255), _image(rng), _image(rng), _mask(rng, 255)]
    )
    tifffile.imwrite(tmp_path / "syn.tif", synprot, photometric="minisblack")
    nano = np.stack(
        [_image(rng, dtype=np.uint8), _image(rng, dtype=np.uint8), _mask(rng, 255, dtype=np.uint8)]
    )
    tifffile.imwrite(tmp_path / "nano.tif", nano, photometric="minisblack")
    live = np.stack([_image(rng, (50, 70)), _image(rng, (50, 70))])
    tifffile.imwrite(tmp_path / "live.tif", live, photometric="minisblack")

    syn = read_layers(str(tmp_path / "syn.tif"))
    assert [m["name"] for _, m, _ in syn] == [
        "syn confocal 561",
        "syn STED 561",
        "syn confocal 640",
        "syn STED 640",
        "syn spots 561",
        "syn spots 640",
    ]
    np.testing.assert_array_equal(syn[2][0], synprot[3])
    nano_layers = read_layers(str(tmp_path / "nano.tif"))
    assert nano_layers[2][1]["name"] == "nano nanodomains"
    assert nano_layers[0][1]["metadata"]["tagan"]["layout"] == "nanodomains"
    live_layers = read_layers(str(tmp_path / "live.tif"))
    assert [m["name"] for _, m, _ in live_layers] == ["live confocal", "live STED"]
    assert live_layers[0][0].shape == (50, 70)


def _graded_mask(rng: np.random.Generator, levels: int, shape=(64, 64)) -> np.ndarray:
    """Spots of graded grey values on a zero background, as the original synprot masks."""
    grey = rng.integers(1, levels + 1, size=shape) * 700
    return np.where(rng.random(shape) > 0.8, grey, 0).astype(np.uint16)


def test_original_synprot_file_with_graded_masks_opens_as_named_layers(tmp_path, rng):
    spots_561, spots_640 = _graded_mask(rng, 28), _graded_mask(rng, 48)
    assert len(np.unique(spots_561)) > 2 and len(np.unique(spots_640)) > 2
    confocal = np.repeat(np.repeat(_image(rng, (16, 16)), 4, 0), 4, 1)  # 60 nm shown at 15
    planes = [confocal, _image(rng), spots_561, confocal[::-1], _image(rng), spots_640]
    path = tmp_path / "synprot_0.tif"
    tifffile.imwrite(path, np.stack(planes), photometric="minisblack")

    layers = read_layers(str(path))
    assert [(m["name"], t) for _, m, t in layers] == [
        ("synprot_0 confocal 561", "image"),
        ("synprot_0 STED 561", "image"),
        ("synprot_0 confocal 640", "image"),
        ("synprot_0 STED 640", "image"),
        ("synprot_0 spots 561", "labels"),
        ("synprot_0 spots 640", "labels"),
    ]
    for _, meta, _ in layers:
        tagan = meta["metadata"]["tagan"]
        assert tagan["layout"] == "synprot" and tagan["mask_encoding"] == "graded"
        assert tagan["source"] == str(path)
    np.testing.assert_array_equal(layers[2][0], confocal[::-1])
    np.testing.assert_array_equal(layers[4][0], np.where(spots_561 > 0, 2, 1))
    np.testing.assert_array_equal(layers[5][0], np.where(spots_640 > 0, 2, 1))
    assert layers[5][1]["metadata"]["tagan"]["classes"] == ["spots 640"]
    # Graded planes where an image belongs, or images where the masks belong: no layout.
    swapped = np.stack([planes[i] for i in (2, 1, 0, 3, 4, 5)])
    assert recognise(swapped, "QYX") is None
    assert recognise(np.stack([_image(rng) for _ in range(6)]), "QYX") is None


def test_non_binary_third_channel_is_not_a_layout(tmp_path, rng):
    data = np.stack([_image(rng), _image(rng), _image(rng)])
    assert recognise(data, "QYX") is None
    path = tmp_path / "three.tif"
    tifffile.imwrite(path, data, photometric="minisblack")
    layers = read_layers(str(path))
    assert len(layers) == 1
    layer_data, meta, kind = layers[0]
    assert kind == "image" and layer_data.shape == (3, 64, 64) and "channel_axis" not in meta
    # A stack of three binary masks is not a layout either (its "images" are binary).
    masks = np.stack([_mask(rng, 255), _mask(rng, 255), _mask(rng, 255)])
    assert recognise(masks, "QYX") is None
    # A stated Z axis wins over the channel count.
    assert recognise(np.stack([_image(rng), _image(rng), _mask(rng, 255)]), "ZYX") is None
    assert recognise(np.stack([_image(rng), _image(rng)]), "CYX") is None
    assert recognise(np.stack([_image(rng), _image(rng)]), "QYX") is LAYOUTS["live"]


def test_sixteen_bit_planar_rgb_opens_as_channels(tmp_path, rng):
    data = np.stack([_image(rng), _image(rng), _image(rng)])
    path = tmp_path / "planar.tif"
    tifffile.imwrite(path, data, photometric="rgb", planarconfig="separate")
    ((layer_data, meta, _kind),) = read_layers(str(path))
    assert meta["channel_axis"] == 0 and meta["name"] == [f"planar ch{i}" for i in range(3)]
    np.testing.assert_array_equal(layer_data, data)


def test_rgb_uint8_opens_as_rgb(tmp_path, rng):
    data = rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)
    path = tmp_path / "photo.tif"
    tifffile.imwrite(path, data, photometric="rgb")
    ((layer_data, meta, _kind),) = read_layers(str(path))
    assert meta["rgb"] is True and meta["scale"] == (1.0, 1.0)
    np.testing.assert_array_equal(layer_data, data)


# --- pixel sizes ---------------------------------------------------------------------------


def test_plain_image_scale_from_resolution_tags(tmp_path, rng):
    data = _image(rng, (48, 40))
    cm = tmp_path / "cm.tif"
    tifffile.imwrite(cm, data, resolution=(1e4 / 0.02, 1e4 / 0.03), resolutionunit="CENTIMETER")
    inch = tmp_path / "inch.tif"
    tifffile.imwrite(inch, data, resolution=(25400 / 0.5, 25400 / 0.5), resolutionunit="INCH")
    none = tmp_path / "none.tif"
    tifffile.imwrite(none, data)

    ((arr, meta, kind),) = read_layers(str(cm))
    assert kind == "image" and meta["name"] == "cm"
    np.testing.assert_allclose(meta["scale"], (0.03, 0.02))
    assert meta["units"] == "µm"
    np.testing.assert_array_equal(arr, data)
    ((_, meta, _),) = read_layers(str(inch))
    np.testing.assert_allclose(meta["scale"], (0.5, 0.5))
    ((_, meta, _),) = read_layers(str(none))
    assert meta["scale"] == (1.0, 1.0) and "units" not in meta


def test_imagej_hyperstack_channels_and_spacing(tmp_path, rng):
    data = rng.integers(0, 500, (5, 2, 32, 24), dtype=np.uint16)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(
        path,
        data,
        imagej=True,
        resolution=(1 / 0.05, 1 / 0.04),
        metadata={"axes": "ZCYX", "spacing": 0.3, "unit": "um"},
    )
    ((arr, meta, _kind),) = read_layers(str(path))
    assert meta["channel_axis"] == 1
    assert meta["name"] == ["stack ch0", "stack ch1"]
    np.testing.assert_allclose(meta["scale"], (0.3, 0.04, 0.05))
    np.testing.assert_array_equal(arr, data)

    # nanometres in ImageJ units are converted to µm
    nm = tmp_path / "nm.tif"
    tifffile.imwrite(
        nm, data[0, 0], imagej=True, resolution=(1 / 20, 1 / 20), metadata={"unit": "nm"}
    )
    ((_, meta, _),) = read_layers(str(nm))
    np.testing.assert_allclose(meta["scale"], (0.02, 0.02))


def test_ome_physical_size(tmp_path, rng):
    data = rng.integers(0, 500, (3, 32, 24), dtype=np.uint16)
    path = tmp_path / "img.ome.tif"
    tifffile.imwrite(
        path,
        data,
        ome=True,
        metadata={
            "axes": "ZYX",
            "PhysicalSizeX": 15.0,
            "PhysicalSizeXUnit": "nm",
            "PhysicalSizeY": 15.0,
            "PhysicalSizeYUnit": "nm",
            "PhysicalSizeZ": 0.25,
        },
    )
    ((arr, meta, _kind),) = read_layers(str(path))
    assert "channel_axis" not in meta
    np.testing.assert_allclose(meta["scale"], (0.25, 0.015, 0.015))
    np.testing.assert_array_equal(arr, data)


def test_ta_gan_layout_keeps_pixel_size(tmp_path, rng):
    data = np.stack([_image(rng), _image(rng), _mask(rng, 255)])
    path = tmp_path / "axons_px.tif"
    tifffile.imwrite(
        path,
        data,
        photometric="minisblack",
        resolution=(1e4 / 0.015, 1e4 / 0.015),
        resolutionunit="CENTIMETER",
    )
    for _, meta, _ in read_layers(str(path)):
        np.testing.assert_allclose(meta["scale"], (0.015, 0.015))


# --- large files and napari ----------------------------------------------------------------


def test_large_files_open_lazily(tmp_path, rng, monkeypatch):
    data = rng.integers(0, 500, (6, 32, 32), dtype=np.uint16)
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, data, photometric="minisblack")
    monkeypatch.setattr(_reader, "LAZY_BYTES", 1024)
    ((arr, _meta, _kind),) = read_layers(str(path))
    assert isinstance(arr, da.Array)
    np.testing.assert_array_equal(arr[2].compute(), data[2])


def test_napari_opens_layout_through_the_plugin(tmp_path, rng):
    data = np.stack([_image(rng), _image(rng), _mask(rng, 255)])
    path = tmp_path / "sample.tif"
    tifffile.imwrite(
        path,
        data,
        photometric="minisblack",
        resolution=(1e4 / 0.02, 1e4 / 0.02),
        resolutionunit="CENTIMETER",
    )
    PluginManager.instance().discover()
    viewer = ViewerModel()
    layers = viewer.open(str(path), plugin="napari-tagan")
    assert [layer.name for layer in layers] == [
        "sample confocal",
        "sample STED",
        "sample rings",
    ]
    assert type(layers[2]).__name__ == "Labels"
    np.testing.assert_allclose(layers[0].scale, (0.02, 0.02))
    assert layers[2].get_status((0, 0))["value"].split(";")[1].strip().startswith("class:")
