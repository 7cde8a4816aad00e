"""The wheel: the npe2 manifest (kept at the top level), type information, metadata."""

from __future__ import annotations

import ast
import importlib.metadata
import re
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
        # typed package (PEP 561) and the core's export list, which runtime and mypy read
        assert zf.read("napari_tagan/py.typed") == b""
        stub = zf.read("napari_tagan/core/__init__.pyi").decode()
        assert stub == (ROOT / "src/napari_tagan/core/__init__.pyi").read_text()
        entry = zf.read(next(n for n in zf.namelist() if n.endswith("entry_points.txt")))
    assert b"napari-tagan = napari_tagan:napari.yaml" in entry


# Declared for what they do outside an import statement, or imported without being ours.
DECLARED_NOT_IMPORTED = {
    "npe2",  # reads napari.yaml, the plugin's manifest
    "pyqt6",  # the Qt binding qtpy finds
    "bioimageio-spec",  # imported as bioimageio.spec, a namespace shared with bioimageio.core
    "distributed",  # imported as dask.distributed
}
IMPORTED_NOT_DECLARED = {"pandas"}  # napari's own dependency, imported early to warm it


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_declared_dependencies_are_the_imported_ones():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    runtime = [
        *project["dependencies"],
        *(
            r
            for k in ("napari", "qt", "demo", "zarr", "omezarr", "distributed", "bioimageio")
            for r in extras[k]
        ),
    ]
    declared = {_canonical(re.match(r"[A-Za-z0-9_.-]+", r)[0]) for r in runtime}
    declared -= {"napari-tagan"}
    imported = set()
    for path in (ROOT / "src").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    imported -= {*sys.stdlib_module_names, "napari_tagan"}
    distributions = importlib.metadata.packages_distributions()
    used = {_canonical(distributions[name][0]) for name in imported - IMPORTED_NOT_DECLARED}
    assert used - declared == set()  # imported but not declared
    assert declared - used == DECLARED_NOT_IMPORTED
