"""``napari-tagan predict`` end to end: simulated images, folders, zarr, and bad inputs."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import tifffile
import torch
import zarr

from napari_tagan.cli import main
from napari_tagan.core import predict, save_bundle
from napari_tagan.core.checkpoints import load_model
from napari_tagan.core.simulate import simulate
from napari_tagan.core.tiff import read_tiff

from conftest import tiny_model

PIXEL_UM = 0.02


def _write_tiff(path, array, pixel_um=PIXEL_UM, **kwargs):
    tifffile.imwrite(
        path, array, resolution=(1e4 / pixel_um, 1e4 / pixel_um), resolutionunit="CENTIMETER",
        photometric="minisblack",
        **kwargs,
    )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "axons.tagan"
    save_bundle(tiny_model("axons"), path)
    return path


@pytest.fixture(scope="module")
def confocal():
    return simulate("axons", (72, 60), seed=3).confocal


def test_predict_a_simulated_image(tmp_path, bundle, confocal, capsys):
    src = _write_tiff(tmp_path / "cell.tif", confocal)
    out = tmp_path / "out"
    assert main(["predict", str(src), "--model", str(bundle), "--output", str(out)]) == 0
    captured = capsys.readouterr()
    assert "wrote results for 1 image(s)" in captured.out
    assert "cell" in captured.err and "100%" in captured.err  # the progress bar
    assert sorted(p.name for p in out.iterdir()) == ["cell_seg.tif", "cell_sted.tif"]
    expected = predict(load_model(bundle), confocal)
    sted = read_tiff(out / "cell_sted.tif")
    seg = read_tiff(out / "cell_seg.tif")
    assert sted.data.dtype == np.float32 and seg.data.dtype == np.float32
    np.testing.assert_allclose(np.asarray(sted.data), expected.synthetic_sted, rtol=1e-6)
    seg_data = tifffile.imread(out / "cell_seg.tif")
    assert seg_data.shape == (1, 72, 60)
    np.testing.assert_allclose(seg_data, expected.segmentation, atol=1e-6)
    assert sted.pixel_size == pytest.approx((PIXEL_UM, PIXEL_UM))
    assert seg.pixel_size == pytest.approx((PIXEL_UM, PIXEL_UM))
    with tifffile.TiffFile(out / "cell_sted.tif") as tif:
        own = tif.shaped_metadata[0]["napari_tagan"]
    assert own["metadata"]["tagan"]["preset"] == "axons"
    assert own["metadata"]["tagan"]["input"].endswith("cell.tif")


def test_a_folder_of_tiffs_and_stacks_with_generations(tmp_path, confocal):
    model = tiny_model("axons")
    ckpt = tmp_path / "experiment"
    ckpt.mkdir()
    torch.save(model.generator.state_dict(), ckpt / "latest_net_G.pth")
    torch.save(model.segmenter.state_dict(), ckpt / "latest_net_S.pth")
    folder = tmp_path / "images"
    folder.mkdir()
    _write_tiff(folder / "a.tif", confocal.astype(np.uint16))
    stack = np.stack([confocal, confocal[::-1], confocal[:, ::-1]]).astype(np.float32)
    _write_tiff(folder / "b.tif", stack, metadata={"axes": "ZYX"})
    _write_tiff(folder / "c.tif", confocal[:40, :33], compression="zlib")  # read via zarr
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    args = [
        "predict",
        str(folder),
        "--model",
        str(ckpt),
        "--preset",
        "axons",
        "--output",
        str(out),
    ]
    args += ["--generations", "2", "--seed", "5", "--tile", "48", "--halo", "8", "--no-progress"]
    assert main(args) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"{x}_{k}.tif" for x in "abc" for k in ("seg", "sted", "sted_std")]
    b_sted = tifffile.imread(out / "b_sted.tif")
    assert b_sted.shape == stack.shape and b_sted.dtype == np.float32
    assert tifffile.imread(out / "b_seg.tif").shape == (3, 1, 72, 60)
    assert tifffile.imread(out / "c_sted_std.tif").shape == (40, 33)
    assert tifffile.imread(out / "a_sted_std.tif").max() > 0  # dropout generations differ
    # mc mode: the same seed gives the same files
    again = tmp_path / "again"
    assert main([*args[:7], str(again), *args[8:]]) == 0
    np.testing.assert_array_equal(
        tifffile.imread(again / "a_sted.tif"), tifffile.imread(out / "a_sted.tif")
    )


def test_zarr_input(tmp_path, bundle, confocal):
    store = tmp_path / "plane.zarr"
    z = zarr.open(str(store), mode="w", shape=confocal.shape, chunks=(32, 32), dtype="f4")
    z[...] = confocal
    out = tmp_path / "out"
    assert (
        main(
            ["predict", str(store), "--model", str(bundle), "--output", str(out), "--no-progress"]
        )
        == 0
    )
    expected = predict(load_model(bundle), confocal)
    np.testing.assert_allclose(
        tifffile.imread(out / "plane_sted.tif"), expected.synthetic_sted, rtol=1e-6
    )


def _bad_cases(tmp_path, bundle, confocal):
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"II*\x00" + b"\x17" * 60)
    nan = confocal.astype(np.float32).copy()
    nan[3, 4] = np.nan
    two = _write_tiff(
        tmp_path / "two.tif", np.stack([confocal, confocal]), metadata={"axes": "CYX"}
    )
    synprot = tmp_path / "synprot.tagan"
    save_bundle(tiny_model("synprot"), synprot)
    return {
        "unreadable": ([str(junk), "--model", str(bundle)], "cannot read it as a TIFF image"),
        "nan": (
            [str(_write_tiff(tmp_path / "nan.tif", nan)), "--model", str(bundle)],
            r"nan.tif: image holds 1 NaN or infinite pixel\(s\)",
        ),
        "channels": ([str(two), "--model", str(bundle)], "2 channels, but the model expects 1"),
        "channels2": (
            [str(_write_tiff(tmp_path / "one.tif", confocal)), "--model", str(synprot)],
            r"one.tif: the 'synprot' model expects 2 channels",
        ),
        "model": (
            [str(two), "--model", str(bundle), "--preset", "dendrites"],
            "is a 'axons' model, but preset 'dendrites' was asked for",
        ),
        "missing": (
            [str(tmp_path / "nope.tif"), "--model", str(bundle)],
            "no such file or folder",
        ),
    }


def test_bad_inputs_are_one_line_exit_2(tmp_path, bundle, confocal, capsys):
    import re

    for name, (args, message) in _bad_cases(tmp_path, bundle, confocal).items():
        out = tmp_path / f"out_{name}"
        assert main(["predict", *args, "--output", str(out), "--no-progress"]) == 2, name
        err = capsys.readouterr().err
        assert err.startswith("napari-tagan predict: error: ") and err.count("\n") == 1, err
        assert re.search(message, err), (name, err)
        assert not out.exists() or not any(out.iterdir()), name  # nothing half-written


def test_error_contract_in_a_real_process(tmp_path, bundle, confocal):
    nan = confocal.astype(np.float32).copy()
    nan[0, 0] = np.inf
    good = _write_tiff(tmp_path / "good.tif", confocal)
    bad = _write_tiff(tmp_path / "bad.tif", nan)
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "napari_tagan.cli", "predict", str(good), str(bad)),
            *("--model", str(bundle), "--output", str(out), "--no-progress"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().endswith(
        "bad.tif: image holds 1 NaN or infinite pixel(s); fix or mask them first"
    )
    # the good image was written completely; nothing of the bad one, no temporary files
    assert sorted(p.name for p in out.iterdir()) == ["good_seg.tif", "good_sted.tif"]


def test_warnings_are_one_line_and_the_run_goes_on(tmp_path, bundle, confocal, capsys):
    """16-bit intensities for an 8-bit (legacy8) model: warned, in one line, still written."""
    bright = (confocal.astype(np.float32) * 40 + 300).astype(np.uint16)
    path = _write_tiff(tmp_path / "bright.tif", bright)
    out = str(tmp_path / "out")
    args = ["predict", str(path), "--model", str(bundle), "--output", out, "--no-progress"]
    assert main(args) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "warning" in line]
    assert len(lines) == 1, err
    assert lines[0].startswith("napari-tagan predict: warning: 100% of the image's pixels")
    assert "Warning" not in err and ".py" not in err
    assert (tmp_path / "out" / "bright_sted.tif").is_file()


def test_an_original_three_channel_file_gives_its_confocal(tmp_path, bundle, capsys):
    """confocal, STED, rings (as the reader opens it): the model gets the confocal."""
    sample = simulate("axons", (72, 60), seed=4)
    confocal = sample.confocal.astype(np.uint16)
    sted = sample.sted.astype(np.uint16)
    rings = (sample.masks[0] > 0).astype(np.uint16) * 65535
    path = _write_tiff(
        tmp_path / "orig.tif", np.stack([confocal, sted, rings]), metadata={"axes": "CYX"}
    )
    out = tmp_path / "out"
    args = ["predict", str(path), "--model", str(bundle), "--output", str(out), "--no-progress"]
    assert main(args) == 0
    assert "using its confocal" in capsys.readouterr().out
    expected = predict(load_model(bundle), confocal)
    got = tifffile.imread(out / "orig_sted.tif")
    assert got.shape == confocal.shape
    np.testing.assert_allclose(got, expected.synthetic_sted, rtol=1e-6)
