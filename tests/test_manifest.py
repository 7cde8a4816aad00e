"""The npe2 manifest validates and napari finds every contribution."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from npe2 import PluginManager, PluginManifest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def manifest() -> PluginManifest:
    pm = PluginManager.instance()
    pm.discover()
    return pm.get_manifest("napari-tagan")


def test_manifest_file_validates():
    result = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", str(ROOT / "napari.yaml")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout
    assert (ROOT / "src/napari_tagan/napari.yaml").is_symlink()


def test_every_contribution_is_discovered_and_importable(manifest):
    contributions = manifest.contributions
    assert {w.display_name for w in contributions.widgets} == {
        "Enhance",
        "Annotate",
        "Train / fine-tune",
        "Guide acquisition",
    }
    assert [r.command for r in contributions.readers] == ["napari-tagan.read_tiff"]
    assert {tuple(w.layer_types) for w in contributions.writers} == {("image",), ("labels",)}
    assert [s.key for s in contributions.sample_data] == [
        "axons",
        "dendrites",
        "nanodomains",
        "saureus",
    ]
    for command in contributions.commands:
        assert callable(_resolve(command)), command.python_name


def _resolve(command):
    module, _, attr = command.python_name.partition(":")
    mod = __import__(module, fromlist=[attr])
    return getattr(mod, attr)


def test_napari_lists_widgets_reader_and_writers(manifest):
    from napari.plugins import _npe2

    docks = dict(contrib for kind, contrib in _npe2.widget_iterator() if kind == "dock")
    assert docks["napari-tagan"] == [
        "Enhance",
        "Annotate",
        "Train / fine-tune",
        "Guide acquisition",
    ]
    readers = _npe2.get_readers("cell.tif")
    assert "napari-tagan" in readers
    writers = [w.command for w in manifest.contributions.writers]
    assert writers == ["napari-tagan.write_image", "napari-tagan.write_labels"]


def test_startup_modules_do_not_import_torch():
    code = textwrap.dedent(
        """
        import sys
        import napari_tagan._reader, napari_tagan._writer, napari_tagan._sample_data
        import napari_tagan._widgets._enhance, napari_tagan._widgets._annotate
        import napari_tagan._widgets._train, napari_tagan._widgets._guide
        heavy = [m for m in ("torch", "napari_tagan.core.model") if m in sys.modules]
        assert not heavy, heavy
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("key", "names"),
    [
        ("axons", ["axons confocal", "axons STED", "axons rings"]),
        ("saureus", ["saureus brightfield", "saureus SIM", "saureus bacteria"]),
    ],
)
def test_napari_opens_samples_through_the_plugin(key, names):
    from napari.components import ViewerModel

    viewer = ViewerModel()
    viewer.open_sample("napari-tagan", key)
    assert [layer.name for layer in viewer.layers] == names
    assert [layer._type_string for layer in viewer.layers] == ["image", "image", "labels"]
    assert viewer.layers[-1].metadata["tagan"]["classes"] == [names[-1].split()[-1]]
