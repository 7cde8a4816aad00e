"""The npe2 manifest lives at the top level and ships inside the package."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_package_manifest_is_the_top_level_file():
    inside = ROOT / "src" / "napari_tagan" / "napari.yaml"
    assert inside.is_symlink()
    assert inside.read_text() == (ROOT / "napari.yaml").read_text()


def test_installed_entry_point_resolves_to_the_manifest():
    from importlib.metadata import entry_points

    (ep,) = [e for e in entry_points(group="napari.manifest") if e.name == "napari-tagan"]
    module, _, resource = ep.value.partition(":")
    import importlib.resources

    text = importlib.resources.files(module).joinpath(resource).read_text()
    assert text == (ROOT / "napari.yaml").read_text()


@pytest.mark.slow
def test_wheel_contains_the_manifest_content(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    (wheel,) = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as zf:
        assert zf.read("napari_tagan/napari.yaml").decode() == (ROOT / "napari.yaml").read_text()
        entry = zf.read(next(n for n in zf.namelist() if n.endswith("entry_points.txt")))
    assert b"napari-tagan = napari_tagan:napari.yaml" in entry
