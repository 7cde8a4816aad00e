"""CLI subcommands of the core issue: convert and info, and the error contract."""

from __future__ import annotations

import subprocess
import sys

import torch

from napari_tagan.cli import main
from napari_tagan.core import read_bundle

from conftest import tiny_model


def test_convert_and_info(tmp_path, capsys):
    model = tiny_model("dendrites")
    (tmp_path / "exp").mkdir()
    torch.save(model.generator.state_dict(), tmp_path / "exp" / "500_net_G.pth")
    torch.save(model.segmenter.state_dict(), tmp_path / "exp" / "500_net_S.pth")
    assert main(["convert", str(tmp_path / "exp"), str(tmp_path / "d.tagan")]) == 0
    assert "preset dendrites" in capsys.readouterr().out
    assert read_bundle(tmp_path / "d.tagan").model.config.class_names == ("rings", "fibers")
    assert main(["info", str(tmp_path / "d.tagan")]) == 0
    out = capsys.readouterr().out
    assert "preset:     dendrites" in out and "rings, fibers" in out
    assert main(["info", "--json", str(tmp_path / "exp")]) == 0
    assert '"preset": "dendrites"' in capsys.readouterr().out


def test_bad_model_is_one_line_and_nonzero(tmp_path):
    (tmp_path / "junk.tagan").write_bytes(b"\x00" * 64)
    out = subprocess.run(
        [sys.executable, "-m", "napari_tagan.cli", "info", str(tmp_path / "junk.tagan")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert "not a napari-tagan model bundle" in out.stderr
