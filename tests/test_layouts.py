"""The table of TA-GAN file layouts: known plane roles, splitting, recognising files."""

from __future__ import annotations

import numpy as np
import pytest

from napari_tagan.core.config import preset_config
from napari_tagan.core.errors import InputError
from napari_tagan.core.layouts import (
    LAYOUTS,
    confocal_of,
    layout_for,
    recognise,
    split,
    split_stack,
)


def _stack(n: int, shape=(32, 40)) -> np.ndarray:
    """Plane ``i`` holds the value ``10 * i + 5`` everywhere: a split names its planes."""
    return np.stack([np.full(shape, 10 * i + 5, np.uint16) for i in range(n)])


def _file(rng: np.random.Generator, roles: str, dtype=np.uint16, on=255) -> np.ndarray:
    """A small file: ``i`` image planes and ``m`` binary mask planes, in ``roles`` order."""
    planes = [
        rng.poisson(60, (32, 32)) if r == "i" else np.where(rng.random((32, 32)) > 0.7, on, 0)
        for r in roles
    ]
    return np.stack(planes).astype(dtype)


def test_table_matches_the_original_files():
    roles = {name: [p.role for p in lay.planes] for name, lay in LAYOUTS.items()}
    assert roles["axons"] == ["confocal", "sted", "mask"]
    assert roles["dendrites"] == ["confocal", "sted", "mask", "mask"]
    assert roles["synprot"] == ["confocal", "sted", "mask"] * 2
    assert roles["live"] == ["confocal", "sted"]
    assert (LAYOUTS["dendrites"].mask_on, LAYOUTS["axons"].mask_on) == (32768, 255)
    assert LAYOUTS["nanodomains"].dtype == "uint8"
    assert LAYOUTS["synprot"].mask_encoding == "graded"
    assert LAYOUTS["saureus"].folders == ("BF", "SIM", "masks")


@pytest.mark.parametrize("preset", ["axons", "dendrites", "synprot", "nanodomains", "live"])
def test_table_agrees_with_the_presets(preset):
    config = preset_config(preset)
    layout = LAYOUTS[preset]
    assert len(layout.indices("confocal")) == config.image_channels
    assert len(layout.indices("sted")) == config.output_nc
    masks = config.class_names if config.seg_target == "labels" else ()
    assert layout.names("mask") == masks
    n = layout.n_planes
    assert layout_for(config.image_channels, config.output_nc, masks, n, preset=preset) is layout


def test_split_synprot_takes_every_third_plane():
    parts = split(_stack(6), LAYOUTS["synprot"])
    assert [parts[r][:, 0, 0].tolist() for r in ("confocal", "sted", "mask")] == [
        [5, 35],
        [15, 45],
        [25, 55],
    ]
    stack = _stack(6)
    assert np.shares_memory(split(stack, LAYOUTS["synprot"])["sted"], stack)  # views, no copy
    assert confocal_of(_stack(6), LAYOUTS["synprot"]).shape == (2, 32, 40)
    assert confocal_of(_stack(3), LAYOUTS["axons"]).shape == (32, 40)
    assert "mask" not in split(_stack(2), LAYOUTS["live"])
    with pytest.raises(InputError, match="3 plane"):
        split(_stack(3), LAYOUTS["dendrites"])


def test_split_stack_training_files():
    # without masks, the confocal planes come first (as the training loader reads them)
    parts = split_stack(_stack(4), 2, 2, ("spots 561", "spots 640"), preset="synprot")
    assert parts["confocal"][:, 0, 0].tolist() == [5, 15] and "mask" not in parts
    # (Y, X, C) files are turned channels first
    yxc = np.moveaxis(_stack(3, (20, 24)), 0, -1)
    parts = split_stack(yxc, 1, 1, ("rings",), preset="axons")
    assert parts["mask"].shape == (1, 20, 24) and parts["mask"][0, 0, 0] == 25
    generic = split_stack(_stack(5), 1, 1, ("a", "b", "c"))
    assert generic["mask"][:, 0, 0].tolist() == [25, 35, 45]
    with pytest.raises(InputError, match=r"has 5 channel.*expects 1 confocal \+ 1 STED \+ 1"):
        split_stack(_stack(5), 1, 1, ("rings",), preset="axons", name="x.tif")
    with pytest.raises(InputError, match="expected a multi-page"):
        split_stack(np.zeros((8, 8)), 1, 1, ())


def test_recognise_known_answers():
    rng = np.random.default_rng(0)
    assert recognise(_file(rng, "iim"), "QYX") is LAYOUTS["axons"]
    assert recognise(_file(rng, "iim", np.uint8), "QYX") is LAYOUTS["nanodomains"]
    assert recognise(_file(rng, "iim"), "QYX", hint="nanodomains") is LAYOUTS["nanodomains"]
    assert recognise(_file(rng, "iimm", on=32768), "QYX") is LAYOUTS["dendrites"]
    assert recognise(_file(rng, "iimiim"), "QYX") is LAYOUTS["synprot"]
    assert recognise(_file(rng, "ii"), "QYX") is LAYOUTS["live"]
    # not layouts: a stated Z or channel axis, an image where a mask belongs, floats, specks
    assert recognise(_file(rng, "iim"), "ZYX") is None
    assert recognise(_file(rng, "ii"), "CYX") is None
    assert recognise(_file(rng, "iii"), "QYX") is None
    assert recognise(_file(rng, "mmm"), "QYX") is None
    assert recognise(_file(rng, "iim").astype(np.float32), "QYX") is None
    assert recognise(np.zeros((3, 4, 4), np.uint16), "QYX") is None


def test_a_simulated_file_opened_lazily_gives_its_confocal(tmp_path):
    # what predict does with a whole TA-GAN file: recognise it, take the confocal
    from napari_tagan.core.simulate import simulate, write_dataset
    from napari_tagan.core.tiff import open_tiff

    root = write_dataset(tmp_path, "axons", 1, 0, shape=(48, 64), seed=2)
    (path,) = (root / "train").glob("*.tif")
    source = open_tiff(path)
    layout = recognise(source.data, source.axes, hint="axons")
    assert layout is LAYOUTS["axons"]
    confocal = confocal_of(source.data, layout)
    assert confocal.shape == (48, 64)
    expected = np.rint(simulate("axons", (48, 64), seed=_stored_seed(path)).confocal)
    np.testing.assert_array_equal(confocal, expected.astype(np.uint16))


def _stored_seed(path) -> int:
    import json

    import tifffile

    with tifffile.TiffFile(path) as tif:
        return json.loads(tif.imagej_metadata["Info"])["seed"]
