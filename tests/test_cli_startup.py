"""The CLI starts without torch, and words refused config values as the flags that set them."""

from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap

import pydantic
import pytest

from napari_tagan.cli import _run, config_error_line
from napari_tagan.core.config import ModelConfig, preset_config
from napari_tagan.core.errors import AmbiguousPresetError, ArchitectureChangeError
from napari_tagan.core.model import Provenance


def test_help_and_argument_errors_do_not_import_torch():
    code = textwrap.dedent(
        """
        import io, sys
        from napari_tagan.cli import main
        codes, stdout = [], sys.stdout
        sys.stdout = sys.stderr = io.StringIO()
        for argv in (["--help"], ["train", "--help"], ["predict", "--help"], ["demo", "--help"],
                     ["predict", "x.tif"], ["convert"], ["bogus"]):
            try:
                main(argv)
            except SystemExit as exc:
                codes.append(exc.code)
        print(codes, "torch" in sys.modules, file=stdout)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[0, 0, 0, 0, 2, 2, 2] False"


def _validation_error(**fields) -> pydantic.ValidationError:
    with pytest.raises(pydantic.ValidationError) as exc:
        ModelConfig(**fields)
    return exc.value


def test_config_errors_are_one_line_named_by_flag():
    assert config_error_line(_validation_error(ngf="abc", lr=-1)) == (
        "--set ngf=abc: Input should be a valid integer, unable to parse string as an "
        "integer; --set lr=-1: Input should be greater than 0"
    )
    assert config_error_line(_validation_error(input_nc=3)) == (
        "input_nc must be 1 (image_channels), got 3"
    )
    with pytest.raises(Exception) as unknown:
        preset_config("axon")
    assert config_error_line(unknown.value) == (
        "--preset axon: unknown preset; expected one of axons, dendrites, synprot, saureus, "
        "nanodomains, live, generic"
    )
    assert config_error_line(ArchitectureChangeError({"ngf": 32})) == (
        "--set ngf=32: cannot change when fine-tuning: the loaded weights fix the architecture"
    )
    with pytest.raises(pydantic.ValidationError) as other:
        Provenance(iterations="many")
    assert config_error_line(other.value) == (
        "invalid Provenance: iterations=many: Input should be a valid integer, unable to "
        "parse string as an integer"
    )


def test_a_refused_config_exits_2_with_one_line(capsys):
    def refused(args):
        return preset_config("axons", gan_mode="hinge")

    assert _run(argparse.Namespace(command="train", func=refused)) == 2
    err = capsys.readouterr().err
    assert err == (
        "napari-tagan train: error: --set gan_mode=hinge: Input should be 'vanilla', "
        "'lsgan' or 'wgangp'\n"
    )


def test_an_ambiguous_preset_is_worded_with_the_flag(capsys):
    def ambiguous(args):
        raise AmbiguousPresetError("ckpt/", ["axons", "saureus"])

    assert _run(argparse.Namespace(command="info", func=ambiguous)) == 2
    assert capsys.readouterr().err == (
        "napari-tagan info: error: several presets fit ckpt/ (axons, saureus); they differ "
        "in normalization, so the preset must be given with --preset\n"
    )
