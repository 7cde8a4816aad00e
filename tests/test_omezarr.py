"""OME-Zarr results: pyramid, pixel sizes and provenance survive a round trip."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_tagan.cli import main
from napari_tagan.core import save_bundle
from napari_tagan.core.errors import InputError
from napari_tagan.core.omezarr import pyramid_factors, read_omezarr, write_omezarr
from napari_tagan.core.tiff import read_zarr

from conftest import tiny_model


def test_round_trip_keeps_data_pyramid_and_pixel_size(tmp_path):
    data = np.random.default_rng(0).random((2, 150, 260)).astype(np.float32)
    path = write_omezarr(
        tmp_path / "r.zarr", data, axes="CYX", pixel_size=(0.02, 0.025),
        name="probe", attributes={"classes": ["rings", "fibers"]},
    )  # fmt: skip
    image = read_omezarr(path)
    assert image.axes == "CYX" and image.name == "probe"
    assert image.pixel_size == (0.02, 0.025)
    assert [tuple(level.shape) for level in image.levels] == [(2, 150, 260), (2, 75, 130)]
    np.testing.assert_array_equal(np.asarray(image.levels[0]), data)
    assert image.attributes == {"classes": ["rings", "fibers"]}
    # the package's zarr reader opens level 0 with the same pixel size
    source = read_zarr(path)
    assert source.pixel_size == (0.02, 0.025)
    np.testing.assert_array_equal(np.asarray(source.data), data)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no leftovers


def test_pyramid_stops_above_the_smallest_side():
    assert pyramid_factors((1024, 300)) == [2, 4]
    assert pyramid_factors((100, 100)) == []


def test_bad_axes_are_refused(tmp_path):
    with pytest.raises(InputError, match="do not describe"):
        write_omezarr(tmp_path / "x.zarr", np.zeros((4, 4)), axes="CYX")


def test_predict_writes_ome_zarr_results(tmp_path):
    bundle = save_bundle(tiny_model("axons"), tmp_path / "m.tagan")
    image = np.random.default_rng(1).poisson(30, (140, 132)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "cell.tif", image, resolution=(1 / 0.03, 1 / 0.03),
                     metadata={"unit": "um"}, imagej=True)  # fmt: skip
    out = tmp_path / "out.zarr"
    code = main(["predict", str(tmp_path / "cell.tif"), "--model", str(bundle),
                 "--output", str(out), "--no-progress"])  # fmt: skip
    assert code == 0
    assert main(["predict", str(tmp_path / "cell.tif"), "--model", str(bundle),
                 "--output", str(tmp_path / "tif"), "--no-progress"]) == 0  # fmt: skip
    sted = read_omezarr(out / "cell_sted")
    seg = read_omezarr(out / "cell_seg")
    assert sted.pixel_size == pytest.approx((0.03, 0.03))
    assert seg.axes == "CYX" and seg.attributes["classes"] == ["rings"]
    reference = tifffile.imread(tmp_path / "tif" / "cell_sted.tif")
    np.testing.assert_array_equal(np.asarray(sted.levels[0]), reference)
