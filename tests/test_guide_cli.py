"""``napari-tagan guide`` proposes regions; ``predict --regions`` uses them (live models)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_tagan.cli import main
from napari_tagan.core import save_bundle
from napari_tagan.core.checkpoints import load_model
from napari_tagan.core.guide import Region, RegionSet, predict_with_regions, read_regions
from napari_tagan.core.guide import write_regions as write_region_file
from napari_tagan.core.tiff import read_tiff

from conftest import tiny_model

PIXEL_UM = 0.02


def _tiff(path, array, pixel_um=PIXEL_UM):
    kwargs = {}
    if pixel_um:
        kwargs = {"resolution": (1e4 / pixel_um,) * 2, "resolutionunit": "CENTIMETER"}
    tifffile.imwrite(path, array, photometric="minisblack", **kwargs)
    return path


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    return {
        name: save_bundle(tiny_model(name), folder / f"{name}.tagan") for name in ("axons", "live")
    }


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    confocal = rng.gamma(2.0, 20.0, size=(40, 48)).astype(np.float32)
    sted = rng.gamma(2.0, 10.0, size=(40, 48)).astype(np.float32)
    return _tiff(tmp_path / "cell.tif", confocal), _tiff(tmp_path / "cell_sted.tif", sted)


def test_guide_writes_the_proposed_regions(tmp_path, bundles, images, capsys):
    out = tmp_path / "regions.csv"
    argv = ["guide", str(bundles["axons"]), str(images[0]), "--budget", "3"]
    argv += ["--block-um", "0.16", "--generations", "2", "--device", "cpu", "--out", str(out)]
    argv += ["--origin-um", "100", "200"]
    assert main(argv) == 0
    assert "wrote 3 region(s) of 8×8 px" in capsys.readouterr().out
    regions = read_regions(out)
    assert len(regions.regions) == 3 and regions.image_shape == (40, 48)
    assert regions.pixel_size_um == pytest.approx((PIXEL_UM, PIXEL_UM))
    assert regions.origin_um == (100.0, 200.0)
    assert regions.class_names == ("rings",) and len(regions.regions[0].present) == 1
    scores = [r.score for r in regions.regions]
    assert scores == sorted(scores, reverse=True) and scores[0] == 1.0


def test_guide_fraction_budget_as_json(tmp_path, bundles, images):
    out = tmp_path / "regions.json"
    argv = ["guide", str(bundles["axons"]), str(images[0]), "--budget", "25%"]
    argv += ["--block-um", "0.16", "--generations", "2", "--device", "cpu", "--out", str(out)]
    assert main(argv) == 0
    assert read_regions(out).fraction() == pytest.approx(0.25, abs=0.05)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--budget", "many"], "--budget 'many'"),
        (["--budget", "0"], "budget must be ≥ 1"),
        (["--block-um", "-1"], "block size"),
        (["--generations", "1"], "generations must be ≥ 2"),
        (["--out", "regions.txt"], ".csv or .json"),
    ],
)
def test_guide_bad_input_exits_2_with_one_line(tmp_path, bundles, images, capsys, extra, message):
    argv = ["guide", str(bundles["axons"]), str(images[0]), "--out", str(tmp_path / "r.csv")]
    assert main([*argv, "--device", "cpu", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and err.startswith("napari-tagan guide: error:")


def test_guide_needs_a_pixel_size(tmp_path, bundles, capsys):
    image = _tiff(tmp_path / "plain.tif", np.ones((16, 16), np.float32), pixel_um=None)
    argv = ["guide", str(bundles["axons"]), str(image), "--out", str(tmp_path / "r.csv")]
    assert main(argv) == 2
    assert "--pixel-size-um" in capsys.readouterr().err


def _regions_file(tmp_path, suffix=".json"):
    regions = RegionSet((Region(8, 8, 24, 20), Region(30, 40, 40, 48)), (40, 48), PIXEL_UM)
    return regions, write_region_file(regions, tmp_path / f"acquired{suffix}")


def test_predict_with_regions_uses_the_acquired_sted(tmp_path, bundles, images):
    regions, path = _regions_file(tmp_path)
    out = tmp_path / "out"
    argv = ["predict", str(images[0]), "--model", str(bundles["live"]), "--output", str(out)]
    assert main([*argv, "--regions", str(path), "--sted", str(images[1]), "--no-progress"]) == 0
    expected = predict_with_regions(
        load_model(bundles["live"]),
        tifffile.imread(images[0]),
        tifffile.imread(images[1]),
        regions,
    )
    got = np.asarray(read_tiff(out / "cell_sted.tif").data)
    np.testing.assert_allclose(got, expected.synthetic_sted, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(
    ("model", "extra", "message"),
    [
        ("axons", ["--regions", "R", "--sted", "S"], "live-preset"),
        ("live", ["--regions", "R"], "--regions and --sted go together"),
        ("live", ["--regions", "BAD", "--sted", "S"], "missing"),
    ],
)
def test_predict_regions_bad_input_exits_2(
    tmp_path, bundles, images, capsys, model, extra, message
):
    _, path = _regions_file(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "napari-tagan regions", "version": 1}')
    names = {"R": str(path), "S": str(images[1]), "BAD": str(bad)}
    argv = ["predict", str(images[0]), "--model", str(bundles[model]), "--output"]
    argv += [str(tmp_path / "out"), *(names.get(a, a) for a in extra)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
