"""bioimage.io export: validated by bioimageio.core, and read back as the same model."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import yaml

from napari_tagan.cli import main
from napari_tagan.core import NormalizationSpec, predict, save_bundle
from napari_tagan.core.bioimageio import bioimageio_problem
from napari_tagan.core.registry import load_named_model

from conftest import tiny_model

needs_bioimageio = pytest.mark.skipif(
    bioimageio_problem() is not None, reason=str(bioimageio_problem())
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bioimageio")
    bundle = save_bundle(tiny_model("axons"), folder / "m.tagan")
    assert main(["export", str(bundle), str(folder / "m.zip"), "--author", "Ada"]) == 0
    return bundle, folder / "m.zip"


@needs_bioimageio
@pytest.mark.slow
def test_package_passes_bioimageio_core_test_model(exported):
    from bioimageio.core import test_model

    summary = test_model(str(exported[1]))
    assert summary.status == "passed", summary.format()


@needs_bioimageio
def test_package_reads_back_as_the_same_model(exported):
    bundle, package = exported
    image = np.random.default_rng(3).poisson(30, (40, 36)).astype(np.uint16)
    a = predict(load_named_model(bundle), image)
    b = predict(load_named_model(package), image)
    np.testing.assert_allclose(b.synthetic_sted, a.synthetic_sted, atol=1e-4, rtol=0)
    np.testing.assert_allclose(b.segmentation, a.segmentation, atol=1e-4, rtol=0)


@needs_bioimageio
def test_package_describes_halo_normalization_citation_and_eval_only(exported):
    with zipfile.ZipFile(exported[1]) as zf:
        rdf = yaml.safe_load(zf.read("rdf.yaml"))
        doc = rdf["documentation"]
        readme = zf.read(doc["source"] if isinstance(doc, dict) else doc).decode()
        names = set(zf.namelist())
    assert {"weights.pt", "weights_torchscript.pt", "weights.onnx"} <= names
    assert set(rdf["weights"]) == {"pytorch_state_dict", "torchscript", "onnx"}
    assert rdf["cite"][0]["doi"] == "10.1038/s42256-023-00689-3"
    assert rdf["authors"] == [{"name": "Ada"}]
    assert [o["id"] for o in rdf["outputs"]] == ["sted", "segmentation"]
    assert all(ax.get("halo", 0) > 0 for ax in rdf["outputs"][0]["axes"][2:])
    pre = [s["id"] for s in rdf["inputs"][0]["preprocessing"] if s["id"] != "ensure_dtype"]
    assert pre[:2] == ["clip", "scale_linear"]  # axons: legacy8
    assert rdf["config"]["napari_tagan"]["model_config"]["preset"] == "axons"
    assert "Only the deterministic eval mode" in readme


@needs_bioimageio
def test_percentile_normalization_becomes_scale_range():
    from napari_tagan.core.bioimageio import preprocessing

    steps = preprocessing(NormalizationSpec(kind="percentile", p_low=2.0, p_high=99.0))
    assert [s.id for s in steps] == ["scale_range", "scale_linear", "ensure_dtype"]
    assert (steps[0].kwargs.min_percentile, steps[0].kwargs.max_percentile) == (2.0, 99.0)
    assert (steps[1].kwargs.gain, steps[1].kwargs.offset) == (2.0, -1.0)


def test_export_refuses_an_output_that_is_not_a_zip(tmp_path, capsys):
    bundle = save_bundle(tiny_model("axons"), tmp_path / "m.tagan")
    assert main(["export", str(bundle), str(tmp_path / "m.tagan2")]) == 2
    assert "is a .zip file" in capsys.readouterr().err


@pytest.mark.skipif(bioimageio_problem() is None, reason="bioimageio.spec works here")
def test_an_unusable_bioimageio_spec_is_one_clear_line(tmp_path, capsys):
    bundle = save_bundle(tiny_model("axons"), tmp_path / "m.tagan")
    assert main(["export", str(bundle), str(tmp_path / "m.zip")]) == 2
    assert "cannot run with pydantic" in capsys.readouterr().err
    assert not (tmp_path / "m.zip").exists()
