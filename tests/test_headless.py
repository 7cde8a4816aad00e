"""The core never imports Qt, napari or magicgui (the headless contract)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_core_and_cli_import_without_gui_packages():
    code = textwrap.dedent(
        """
        import sys, importlib.abc

        BLOCKED = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui",
                   "superqt", "vispy")

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"blocked GUI import: {name}")
                return None

        sys.meta_path.insert(0, Block())
        import napari_tagan.core, napari_tagan.cli
        import napari_tagan.core.checkpoints, napari_tagan.core.prediction
        napari_tagan.cli.build_parser()
        import pkgutil
        for mod in pkgutil.walk_packages(napari_tagan.core.__path__, "napari_tagan.core."):
            __import__(mod.name)
        print("OK")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "OK"


def test_every_submodule_imported_first_keeps_the_exported_functions():
    """A submodule named like an export (core.predict was one) shadowed the function."""
    code = textwrap.dedent(
        """
        import importlib, pkgutil, napari_tagan.core as core
        for mod in pkgutil.walk_packages(core.__path__, "napari_tagan.core."):
            importlib.import_module(mod.name)
        from napari_tagan.core import __all__ as names
        shadowed = [n for n in names if type(getattr(core, n)).__name__ == "module"]
        print(shadowed)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_plugin_entry_modules_do_not_import_torch():
    code = textwrap.dedent(
        """
        import sys, importlib
        for name in ("napari_tagan", "napari_tagan._sample_data", "napari_tagan._reader",
                     "napari_tagan._writer", "napari_tagan.core", "napari_tagan.core.simulate",
                     "napari_tagan.core.config"):
            try:
                importlib.import_module(name)
            except ModuleNotFoundError as exc:
                if exc.name != name:
                    raise
        print("torch" in sys.modules)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_opening_a_sample_does_not_import_torch():
    code = (
        "import sys; from napari_tagan._sample_data import axons_sample; axons_sample(); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
