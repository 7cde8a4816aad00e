"""dask.distributed scale-out: a 2-worker loopback cluster gives the single-process result."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from napari_tagan.cli import main
from napari_tagan.core import predict, preset_config, save_bundle
from napari_tagan.core.distributed_predict import (
    LOADS,
    block_plan,
    open_client,
    predict_zarr_distributed,
)
from napari_tagan.core.errors import InputError

from conftest import calibrated, tiny_model


@pytest.fixture(scope="module")
def client():
    c = open_client(workers=2)
    yield c
    cluster = c.cluster
    c.close()
    cluster.close()


@pytest.mark.slow
def test_two_workers_match_one_process(tmp_path, client):
    model = calibrated(tiny_model("axons"))
    bundle = save_bundle(model, tmp_path / "m.tagan")
    image = np.random.default_rng(0).poisson(40, (300, 276)).astype(np.uint16)
    zarr.create_array(str(tmp_path / "in.zarr"), data=image, chunks=(128, 128), zarr_format=2)
    assert len(block_plan(model, image.shape, 128)) == 9  # several blocks, real halos
    summary = predict_zarr_distributed(
        bundle, tmp_path / "in.zarr", tmp_path / "out.zarr", client, block=128
    )
    assert summary["pixels"] == image.size and len(summary["workers"]) == 2
    assert sorted(client.run(lambda: len(LOADS)).values()) == [1, 1]  # loaded once each
    out = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")
    whole = predict(model, image, backend="eager")
    np.testing.assert_allclose(out["sted"][:], whole.synthetic_sted, atol=5e-5, rtol=0)
    np.testing.assert_allclose(out["seg"][:], whole.segmentation, atol=5e-5, rtol=0)
    with pytest.raises(InputError, match="exists"):
        predict_zarr_distributed(bundle, tmp_path / "in.zarr", tmp_path / "out.zarr", client)
    # the CLI on the same cluster: the same blocks give the same bits
    address = client.scheduler.address
    args = ["predict", str(tmp_path / "in.zarr"), "--model", str(bundle), "--no-progress"]
    args += ["--output", str(tmp_path / "cli"), "--scheduler", address, "--block", "128"]
    assert main(args) == 0
    cli = zarr.open_group(str(tmp_path / "cli" / "in.zarr"), mode="r")
    np.testing.assert_array_equal(cli["sted"][:], out["sted"][:])


def test_image_dependent_normalization_is_refused(tmp_path):
    model = tiny_model("axons").__class__.from_config(
        preset_config("generic", ngf=4, nsf=4, ndf=4)
    )
    bundle = save_bundle(model, tmp_path / "g.tagan")
    zarr.save_array(str(tmp_path / "in.zarr"), np.zeros((32, 32), np.uint16), zarr_format=2)
    with pytest.raises(InputError, match="block-independent normalization"):
        predict_zarr_distributed(bundle, tmp_path / "in.zarr", tmp_path / "o.zarr", None)
