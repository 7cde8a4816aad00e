"""Physics, determinism and file-layout tests of the confocal / STED simulator."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
import tifffile
from scipy import ndimage
from scipy.optimize import curve_fit

from napari_tagan.core import layouts
from napari_tagan.core.simulate import (
    CLASS_NAMES,
    FWHM_PER_SIGMA,
    ImagingParams,
    SimulatedSample,
    StructureParams,
    labels_from_masks,
    simulate,
    write_dataset,
)

STRUCTURES = ("axons", "dendrites", "nanodomains", "saureus", "beads")


# ---------------------------------------------------------------------------------------
# Measurements, written independently of the simulator


def _gaussian2d(yx, amplitude, y0, x0, sigma, offset):
    y, x = yx
    return amplitude * np.exp(-((y - y0) ** 2 + (x - x0) ** 2) / (2 * sigma**2)) + offset


def measured_fwhm_nm(image: np.ndarray, centres: np.ndarray, half: int, pixel_nm: float):
    """Fit an isotropic Gaussian to the average of the windows around ``centres``."""
    windows = [
        image[y - half : y + half + 1, x - half : x + half + 1]
        for y, x in centres
        if half <= y < image.shape[0] - half and half <= x < image.shape[1] - half
    ]
    assert len(windows) >= 4
    mean = np.mean(windows, axis=0).astype(float)
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
    p0 = (mean.max() - mean.min(), 0.0, 0.0, half / 3.0, mean.min())
    popt, _ = curve_fit(_gaussian2d, (yy.ravel(), xx.ravel()), mean.ravel(), p0=p0)
    return abs(popt[3]) * FWHM_PER_SIGMA * pixel_nm


def spectral_period_nm(image: np.ndarray, pixel_nm: float, lo=140.0, hi=400.0) -> float:
    """Period of the strongest radial peak of the power spectrum between lo and hi nm.

    The radially averaged power is multiplied by f² (whitening the 1/f² fall-off of
    edges) and the peak refined by a parabola through the log of its three bins.
    """
    n = image.shape[0]
    assert image.shape == (n, n)
    power = np.abs(np.fft.fft2(image - image.mean())) ** 2
    f = np.fft.fftfreq(n) * n
    radius = np.rint(np.hypot(f[:, None], f[None, :])).astype(int)
    radial = np.bincount(radius.ravel(), power.ravel()) / np.bincount(radius.ravel())
    radial = radial[: n // 2]
    r = np.arange(radial.size)
    whitened = radial * r**2
    band = (r >= n * pixel_nm / hi) & (r <= n * pixel_nm / lo)
    k = int(r[band][np.argmax(whitened[band])])
    y0, y1, y2 = np.log(whitened[k - 1 : k + 2])
    return n * pixel_nm / (k + 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2))


# ---------------------------------------------------------------------------------------
# Physics


@pytest.mark.parametrize(
    ("modality", "confocal_pixel_size_nm"),
    [("confocal", None), ("sted", None), ("confocal", 60.0)],
)
def test_isolated_emitter_fwhm_matches_request(modality, confocal_pixel_size_nm):
    params = ImagingParams(
        confocal_photons=400.0,
        sted_photons=400.0,
        confocal_pixel_size_nm=confocal_pixel_size_nm,
    )
    sample = simulate("beads", (256, 256), seed=3, params=params)
    centres = np.argwhere(sample.ground_truth == 1.0)
    asked = params.confocal_fwhm_nm if modality == "confocal" else params.sted_fwhm_nm
    image = sample.confocal if modality == "confocal" else sample.sted
    half = int(np.ceil(2.5 * asked / FWHM_PER_SIGMA / params.pixel_size_nm)) + 2
    fwhm = measured_fwhm_nm(image, centres, half, params.pixel_size_nm)
    assert abs(fwhm / asked - 1) < 0.10, (modality, fwhm, asked)


@pytest.mark.parametrize(
    ("period_nm", "shape", "ring_fraction"),
    [(190.0, (512, 512), 0.5), (250.0, (256, 256), 1.0)],
)
def test_ring_period_recovered_from_sted_spectrum(period_nm, shape, ring_fraction):
    structure_params = StructureParams(ring_period_nm=period_nm, ring_fraction=ring_fraction)
    sample = simulate("axons", shape, seed=0, structure_params=structure_params)
    period = spectral_period_nm(sample.sted, sample.pixel_size_nm)
    assert abs(period / period_nm - 1) < 0.05, period


def test_photon_counts_match_budget():
    params = ImagingParams(sted_photons=100.0, sted_background=5.0, confocal_background=5.0)
    sample = simulate("beads", (512, 512), seed=11, params=params)
    centres = sample.ground_truth == 1.0
    n_beads = int(centres.sum())
    assert n_beads >= 64
    # Budget = expected signal at the brightest pixel (a bead centre), background on top.
    expected_peak = params.sted_photons + params.sted_background
    assert sample.sted_expected.max() == pytest.approx(expected_peak, rel=1e-5)
    assert sample.sted_expected[centres] == pytest.approx(expected_peak, rel=1e-5)
    measured = sample.sted[centres].mean()
    assert abs(measured - expected_peak) < 4 * np.sqrt(expected_peak / n_beads)

    # Far from every bead only background remains: Poisson, so variance ≈ mean ≈ bg.
    far = ndimage.distance_transform_edt(~centres) > 27  # > 5 confocal sigmas
    for image in (sample.sted, sample.confocal):
        values = image[far]
        assert values.mean() == pytest.approx(5.0, rel=0.03)
        assert values.var() == pytest.approx(values.mean(), rel=0.05)


@pytest.mark.parametrize("structure", ["axons", "dendrites", "nanodomains"])
def test_budget_and_poisson_statistics_of_structures(structure):
    params = ImagingParams()
    sample = simulate(structure, (192, 192), seed=5, params=params)
    for image, expected, photons, background in (
        (
            sample.confocal,
            sample.confocal_expected,
            params.confocal_photons,
            params.confocal_background,
        ),
        (sample.sted, sample.sted_expected, params.sted_photons, params.sted_background),
    ):
        assert expected.max() == pytest.approx(photons + background, rel=1e-5)
        assert expected.min() >= background - 1e-4
        assert np.all(image == np.rint(image)) and image.min() >= 0
        residual = image.astype(float) - expected
        # Poisson: mean residual ≈ 0 and squared residual / expectation ≈ 1.
        assert abs(residual.mean()) < 4 * np.sqrt(expected.mean() / image.size)
        assert np.mean(residual**2 / expected) == pytest.approx(1.0, abs=0.03)


def test_coarse_confocal_is_nearest_upsampled():
    params = ImagingParams(pixel_size_nm=15.0, confocal_pixel_size_nm=60.0)
    sample = simulate("nanodomains", (130, 98), seed=2, params=params)
    assert sample.confocal.shape == (130, 98) and params.confocal_binning == 4
    blocks = sample.confocal[:128, :96].reshape(32, 4, 24, 4)
    assert np.all(blocks == blocks[:, :1, :, :1])
    assert sample.confocal_expected.max() == pytest.approx(
        params.confocal_photons + params.confocal_background, rel=1e-5
    )


@pytest.mark.parametrize(
    "changed",
    [
        ImagingParams(sted_photons=30.0),
        ImagingParams(confocal_fwhm_nm=320.0, sted_fwhm_nm=80.0),
        ImagingParams(confocal_pixel_size_nm=80.0),
    ],
)
def test_changing_the_microscope_keeps_the_structures(changed):
    a = simulate("dendrites", (96, 96), seed=4)
    b = simulate("dendrites", (96, 96), seed=4, params=changed)
    np.testing.assert_array_equal(a.ground_truth, b.ground_truth)
    np.testing.assert_array_equal(a.masks, b.masks)


# ---------------------------------------------------------------------------------------
# Determinism, shapes, dtypes, metadata


def _arrays(sample: SimulatedSample):
    return (sample.confocal, sample.sted, sample.labels, sample.masks, sample.ground_truth)


@pytest.mark.parametrize("structure", STRUCTURES)
def test_deterministic_by_seed(structure):
    a = simulate(structure, (80, 72), seed=7)
    b = simulate(structure, (80, 72), seed=7)
    c = simulate(structure, (80, 72), seed=8)
    for x, y in zip(_arrays(a), _arrays(b), strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.sted, c.sted)
    if structure != "beads":  # beads sit on a fixed grid; only their noise changes
        assert not np.array_equal(a.ground_truth, c.ground_truth)


@pytest.mark.parametrize("structure", STRUCTURES)
def test_shapes_dtypes_and_metadata(structure):
    params = ImagingParams(pixel_size_nm=25.0)
    sample = simulate(structure, (72, 88), seed=1, params=params)
    n_classes = len(CLASS_NAMES[structure])
    assert sample.class_names == CLASS_NAMES[structure]
    for image in (sample.confocal, sample.sted, sample.ground_truth):
        assert image.shape == (72, 88) and image.dtype == np.float32
    assert sample.masks.shape == (n_classes, 72, 88) and sample.masks.dtype == bool
    assert sample.labels.shape == (72, 88) and sample.labels.dtype == np.uint8
    np.testing.assert_array_equal(sample.labels, labels_from_masks(sample.masks))
    assert sample.ground_truth.max() == pytest.approx(1.0) and sample.ground_truth.min() >= 0
    assert sample.pixel_size_nm == 25.0 and sample.pixel_size_um == 0.025
    assert sample.structure == structure and sample.seed == 1 and sample.params is params
    meta = sample.metadata()
    assert json.loads(json.dumps(meta)) == meta
    assert meta["pixel_size_nm"] == 25.0 and meta["class_names"] == list(CLASS_NAMES[structure])


def test_class_names_match_tagan_presets():
    assert CLASS_NAMES["axons"] == ("rings",)
    assert CLASS_NAMES["dendrites"] == ("rings", "fibers")
    assert CLASS_NAMES["nanodomains"] == ("nanodomains",)
    assert CLASS_NAMES["saureus"] == ("bacteria",)


def test_imaging_params_defaults_and_frozen():
    params = ImagingParams()
    assert (params.pixel_size_nm, params.confocal_fwhm_nm, params.sted_fwhm_nm) == (
        20.0,
        250.0,
        60.0,
    )
    assert params.confocal_pixel_size_nm is None and params.confocal_binning == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.pixel_size_nm = 10.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: simulate("mitochondria"), "structure must be one of"),
        (lambda: simulate("axons", (4, 64)), "shape must be"),
        (lambda: simulate("axons", (64,)), "shape must be"),
        (lambda: simulate("axons", seed=-1), "seed"),
        (lambda: ImagingParams(sted_fwhm_nm=0.0), "sted_fwhm_nm"),
        (lambda: ImagingParams(sted_photons=-1.0), "sted_photons"),
        (lambda: ImagingParams(confocal_pixel_size_nm=50.0), "integer multiple"),
        (lambda: StructureParams(ring_fraction=1.5), "ring_fraction"),
    ],
)
def test_invalid_inputs_say_what_was_expected(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ---------------------------------------------------------------------------------------
# Ground truth: regions a human would annotate


def test_ring_masks_cover_ring_regions_not_pixels():
    sample = simulate("axons", (256, 256), seed=0)
    rings = sample.masks[0]
    assert 0.02 < rings.mean() < 0.6
    regions, n = ndimage.label(rings)
    sizes = np.bincount(regions.ravel())[1:]
    assert n >= 1 and sizes.min() >= 10
    # Rings mask sits on the structure and its STED shows the ring period.
    assert sample.ground_truth[rings].mean() > 3 * sample.ground_truth[~rings].mean()
    weight = ndimage.gaussian_filter(rings.astype(float), 3)
    masked = (sample.sted - sample.sted[rings].mean()) * weight
    assert abs(spectral_period_nm(masked, sample.pixel_size_nm) / 190.0 - 1) < 0.05


def test_confocal_is_smooth_along_ring_stretches_and_patchy_elsewhere():
    # The rings are far below confocal resolution; the cue TA-GAN can learn from the
    # confocal is context: ring stretches look smooth, ringless ones blotchy.
    ring_cv, plain_cv = [], []
    for seed in range(6):
        sample = simulate("axons", (192, 192), seed=seed)
        signal = sample.confocal_expected - sample.params.confocal_background
        mean = ndimage.uniform_filter(signal, 15)
        var = ndimage.uniform_filter(signal**2, 15) - mean**2
        cv = np.sqrt(np.maximum(var, 0)) / np.maximum(mean, 1e-6)
        core = ndimage.binary_erosion(sample.ground_truth > 0.05, iterations=4)
        rings = sample.masks[0]
        ring_cv.append(cv[core & rings])
        plain_cv.append(cv[core & ~ndimage.binary_dilation(rings, iterations=10)])
    ring_cv, plain_cv = np.concatenate(ring_cv), np.concatenate(plain_cv)
    assert ring_cv.size > 500 and plain_cv.size > 500
    assert np.median(ring_cv) < 0.8 * np.median(plain_cv)


def test_dendrite_classes_overlap_and_later_class_wins():
    found_overlap = False
    for seed in range(6):
        sample = simulate("dendrites", (256, 256), seed=seed)
        rings, fibers = sample.masks
        assert np.all(sample.labels[fibers] == 2)
        assert np.all(sample.labels[rings & ~fibers] == 1)
        found_overlap |= bool((rings & fibers).any())
    assert found_overlap


def test_nanodomain_masks_are_cluster_footprints():
    sample = simulate("nanodomains", (128, 128), seed=9)
    regions, n = ndimage.label(sample.masks[0])
    assert n >= 1
    sizes = np.bincount(regions.ravel())[1:]
    assert sizes.min() >= 5  # never single pixels
    pixel = sample.pixel_size_nm
    # Each footprint is a cluster tens of nm wide (≤ ~3 × 80 nm when clusters touch).
    extents = [sl[0].stop - sl[0].start for sl in ndimage.find_objects(regions)]
    assert max(extents) * pixel <= 300
    assert sample.ground_truth[sample.masks[0]].mean() > 10 * sample.ground_truth.mean()


# ---------------------------------------------------------------------------------------
# Speed and import hygiene


def test_512_squared_is_fast():
    simulate("axons", (64, 64))
    times = {}
    for structure in ("axons", "dendrites", "nanodomains"):
        start = time.perf_counter()
        simulate(structure, (512, 512), seed=0)
        times[structure] = time.perf_counter() - start
    assert max(times.values()) < 2.0, times


def test_simulator_imports_no_torch_napari_or_qt():
    code = (
        "import sys\n"
        "from napari_tagan.core.simulate import simulate\n"
        "simulate('axons', (32, 32))\n"
        "bad = [m for m in ('torch', 'napari', 'qtpy', 'PyQt5', 'PyQt6', 'tifffile')"
        " if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------------------
# Dataset writer


def _read(path):
    with tifffile.TiffFile(path) as tif:
        return tif.asarray(), tif.imagej_metadata, tif.pages[0].tags


@pytest.mark.parametrize(
    ("structure", "channels", "dtype", "mask_value"),
    [
        ("axons", 3, np.uint16, 255),
        ("dendrites", 4, np.uint16, 32768),
        ("nanodomains", 3, np.uint8, 255),
    ],
)
def test_write_dataset_original_layout(tmp_path, structure, channels, dtype, mask_value):
    root = write_dataset(
        tmp_path / "data", structure, n_train=2, n_valid=1, shape=(48, 64), seed=5, n_test=1
    )
    assert root == tmp_path / "data"
    files = {split: sorted((root / split).glob("*.tif")) for split in ("train", "valid", "test")}
    assert [len(files[s]) for s in ("train", "valid", "test")] == [2, 1, 1]
    assert not list(root.rglob("*.tmp"))
    seeds = set()
    for path in [p for split_files in files.values() for p in split_files]:
        data, meta, tags = _read(path)
        assert data.shape == (channels, 48, 64) and data.dtype == dtype
        masks = data[2:]
        assert set(np.unique(masks)) <= {0, mask_value}
        assert data[0].max() > 0 and data[1].max() > 0
        assert data[:2].max() <= 255  # defaults stay inside legacy8's range
        assert meta["unit"] == "um" and meta["spacing"] == pytest.approx(0.02)
        numerator, denominator = tags["XResolution"].value
        assert numerator / denominator == pytest.approx(50.0)  # pixels per µm
        info = json.loads(meta["Info"])
        assert info["structure"] == structure and info["pixel_size_nm"] == 20.0
        assert meta["Labels"][:2] == ["confocal", "STED"]
        seeds.add(info["seed"])
        # The stored seed regenerates the sample exactly.
        again = simulate(structure, (48, 64), seed=info["seed"])
        np.testing.assert_array_equal(data[2] > 0, again.masks[0])
        np.testing.assert_array_equal(data[1], np.rint(again.sted).astype(dtype))
    assert len(seeds) == 4
    manifest = json.loads((root / "simulation.json").read_text())
    assert manifest["structure"] == structure and manifest["splits"]["test"] == 1


def test_write_dataset_saureus_folders(tmp_path):
    root = write_dataset(tmp_path, "saureus", n_train=1, n_valid=1, shape=(64, 64))
    for split in ("train", "valid"):
        names = {
            sub: sorted(p.name for p in (root / split / sub).iterdir())
            for sub in ("BF", "SIM", "masks")
        }
        assert names["BF"] == names["SIM"] == names["masks"] and len(names["BF"]) == 1
        name = names["BF"][0]
        bf = tifffile.imread(root / split / "BF" / name)
        sim = tifffile.imread(root / split / "SIM" / name)
        mask = tifffile.imread(root / split / "masks" / name)
        assert bf.shape == sim.shape == mask.shape == (64, 64)
        assert bf.dtype == sim.dtype == np.uint16 and mask.dtype == bool
        assert mask.any() and not mask.all()
    assert not (root / "test").exists()


def test_write_dataset_warns_before_legacy8_saturation(tmp_path):
    loud = ImagingParams(confocal_photons=600.0)
    with pytest.warns(UserWarning, match="exceed 255"):
        write_dataset(tmp_path, "axons", 1, 0, shape=(64, 64), params=loud)


def test_write_dataset_rejects_bad_counts(tmp_path):
    with pytest.raises(ValueError, match="n_valid"):
        write_dataset(tmp_path, "axons", 1, -1)
    with pytest.raises(ValueError, match="structure"):
        write_dataset(tmp_path, "beads", 1, 1)


def test_written_files_get_the_mode_open_would_give(tmp_path):
    # Written through io.atomic_output: readable by group/others as the umask allows,
    # not owner-only as a bare temporary file would be.
    umask = os.umask(0o022)
    try:
        root = write_dataset(tmp_path / "data", "saureus", n_train=1, n_valid=0, shape=(32, 32))
        write_dataset(tmp_path / "data", "axons", n_train=1, n_valid=0, shape=(32, 32))
    finally:
        os.umask(umask)
    files = [p for p in root.rglob("*") if p.is_file()]
    assert len(files) == 5  # BF, SIM, masks, axons file, simulation.json
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_writer_follows_the_layouts_table(tmp_path):
    for structure in ("axons", "dendrites", "nanodomains"):
        layout = layouts.LAYOUTS[structure]
        assert layout.names("mask") == CLASS_NAMES[structure]
        root = write_dataset(tmp_path / structure, structure, 1, 0, shape=(32, 32))
        (path,) = (root / "train").glob("*.tif")
        data = tifffile.imread(path)
        assert layouts.recognise(data, "CYX") is layout
        assert data.dtype == np.dtype(layout.dtype)
        assert set(np.unique(layouts.split(data, layout)["mask"])) <= {0, layout.mask_on}


def test_cli_offers_the_structures_the_writer_writes():
    from napari_tagan.cli.simulate import STRUCTURES as CLI_STRUCTURES
    from napari_tagan.core.simulate.dataset import WRITABLE

    assert CLI_STRUCTURES == WRITABLE == ("axons", "dendrites", "nanodomains", "saureus")
