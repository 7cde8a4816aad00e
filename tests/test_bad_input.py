"""Bad input never trains a broken model, overwrites a user's file, or runs away.

One table of bad or odd inputs goes through the CLI in a real process (exit status 2,
exactly one line on stderr, no traceback, the files on disk unchanged), then the same
classes through the API and the napari reader; a property test writes random bytes into
valid TIFFs and bundles and checks that only our errors (``TaganError``) come out.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from napari_tagan._reader import _own_layer, napari_get_reader
from napari_tagan.core import save_bundle
from napari_tagan.core.checkpoints import read_bundle
from napari_tagan.core.errors import InputError, ModelLoadError, TaganError
from napari_tagan.core.guards import LOCK_NAME, run_folder_lock
from napari_tagan.core.prediction import predict
from napari_tagan.core.simulate import write_dataset
from napari_tagan.core.tiff import open_tiff, read_tiff_array

from conftest import tiny_model

TINY = ["--set", "ngf=4", "--set", "nsf=4", "--set", "ndf=4"]

# ------------------------------------------------------------------------------ files


def _tiff(path: Path, array: np.ndarray, **kwargs) -> Path:
    tifffile.imwrite(path, array, **kwargs)
    return path


def _bundle_variant(good: Path, path: Path, *, meta=None, tensors=None) -> Path:
    """``good`` re-saved with metadata entries replaced and tensors changed."""
    with safe_open(good, "pt") as fh:
        metadata = dict(fh.metadata())
        state = {k: fh.get_tensor(k) for k in fh.keys()}
    metadata.update(meta or {})
    if tensors is not None:
        state = tensors(state)
    save_file(state, path, metadata=metadata)
    return path


def _corrupt_zlib_tiff(path: Path, image: np.ndarray) -> Path:
    _tiff(path, image, compression="zlib", tile=(16, 16))
    with tifffile.TiffFile(path) as tif:
        offset = int(tif.pages[0].dataoffsets[1])
    raw = bytearray(path.read_bytes())
    raw[offset + 2 : offset + 12] = b"\xff" * 10
    path.write_bytes(bytes(raw))
    return path


def _huge_header_tiff(path: Path) -> Path:
    """A few hundred bytes whose header claims 200,000 × 200,000 pixels."""
    _tiff(path, np.zeros((16, 16), np.uint16), compression="zlib")
    with tifffile.TiffFile(path) as tif:
        tags = tif.pages[0].tags
        offsets = [tags[n].valueoffset for n in ("ImageWidth", "ImageLength", "RowsPerStrip")]
    raw = bytearray(path.read_bytes())
    for off in offsets:
        raw[off : off + 4] = struct.pack("<I", 200_000)
    path.write_bytes(bytes(raw))
    return path


def _with_out_range(bundle: Path, out_range: list[float]) -> str:
    with safe_open(bundle, "pt") as fh:
        config = json.loads(fh.metadata()["config"])
    config["normalization"]["out_range"] = out_range
    return json.dumps(config)


def _nested(depth: int) -> str:
    return '{"__dict__": {"a": ' * depth + "1" + "}}" * depth


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Every input the table needs, written once: returns a name → path map."""
    root = tmp_path_factory.mktemp("bad")
    rng = np.random.default_rng(0)
    image = rng.gamma(2.0, 20.0, size=(40, 36)).astype(np.uint16)
    f: dict[str, Path] = {"root": root}
    good = save_bundle(tiny_model("axons"), root / "good.tagan")
    f["good"] = good
    pct = tiny_model("axons", normalization={"kind": "percentile"})
    f["pct"] = save_bundle(pct, root / "pct.tagan")
    (root / "images").mkdir()
    f["image"] = _tiff(root / "images" / "a.tif", image)
    f["corrupt"] = _corrupt_zlib_tiff(root / "corrupt.tif", image)
    trunc = _tiff(root / "trunc.tif", image)
    trunc.write_bytes(trunc.read_bytes()[:1200])
    f["trunc"] = trunc
    f["huge"] = _huge_header_tiff(root / "huge.tif")
    f["bright"] = _tiff(
        root / "bright.tif", np.full((40, 36), 3e38, np.float32) * rng.random((40, 36), np.float32)
    )
    variant = {
        "nan_range": {"meta": {"config": _with_out_range(good, [float("nan"), 1.0])}},
        "config_list": {"meta": {"config": "[1, 2]"}},
        "version_abc": {"meta": {"format_version": "abc"}},
        "missing_tensor": {
            "meta": {"training_state": json.dumps({"__dict__": {"x": {"__tensor__": "state.7"}}})}
        },
        "deep": {"meta": {"training_state": _nested(100_000)}},
        "int_weights": {
            "tensors": lambda s: {
                k: v.to(torch.int32) if v.dtype.is_floating_point else v for k, v in s.items()
            }
        },
        "nan_weights": {
            "tensors": lambda s: {
                k: v * float("nan") if k.endswith("weight") else v for k, v in s.items()
            }
        },
        "half": {
            "tensors": lambda s: {
                k: v.half() if v.dtype.is_floating_point else v for k, v in s.items()
            }
        },
    }
    for name, kw in variant.items():
        f[name] = _bundle_variant(good, root / f"{name}.tagan", **kw)
    big = root / "big.tagan"  # a large foreign file: refused from its first bytes
    with big.open("wb") as fh:
        fh.write(struct.pack("<Q", 1 << 40) + b"{")
        fh.truncate(1 << 30)  # sparse: no disk space used
    f["big"] = big
    orig = root / "orig"
    orig.mkdir()
    torch.save(tiny_model("axons").generator.state_dict(), orig / "latest_net_G.pth")
    f["orig"] = orig
    garbage = root / "garbage"
    garbage.mkdir()
    (garbage / "latest_net_G.pth").write_bytes(os.urandom(300))
    f["garbage"] = garbage
    data = write_dataset(root / "data", "axons", n_train=2, n_valid=1, shape=(40, 40), seed=0)
    f["data"] = data
    f["nan_data"] = _nan_dataset(data, root / "nan_data")
    f["pages_data"] = _pages_dataset(data, root / "pages_data")
    results = root / "results"
    results.mkdir()
    (results / "a_sted.tif").write_bytes(b"the user's own result")
    f["results"] = results
    locked = root / "locked"
    locked.mkdir()
    (locked / LOCK_NAME).write_text(f"{os.getpid()}@{os.uname().nodename}")
    f["locked"] = locked
    return f


def _copy_tree(src: Path, dst: Path) -> None:
    for p in src.rglob("*"):
        if p.is_file():
            (dst / p.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
            (dst / p.relative_to(src)).write_bytes(p.read_bytes())


def _nan_dataset(data: Path, dst: Path) -> Path:
    _copy_tree(data, dst)
    first = sorted(dst.rglob("*.tif"))[0]
    stack = tifffile.imread(first).astype(np.float32)
    stack[0, 3, 3] = np.nan
    _tiff(first, stack)
    return dst


def _pages_dataset(data: Path, dst: Path) -> Path:
    _copy_tree(data, dst)
    first = sorted(dst.rglob("*.tif"))[0]
    stack = tifffile.imread(first)
    with tifffile.TiffWriter(first) as tw:
        tw.write(stack[0])
        tw.write(stack[1][:20])
        tw.write(stack[2])
    return dst


# ------------------------------------------------------------------------------ the table

#: name: (argv with {placeholders}, a regex the one stderr line must match)
CASES: dict[str, tuple[str, str]] = {
    # silent wrong results and lost data
    "nan training data": (
        "train --data {nan_data} --preset axons --output {out} --iterations 1",
        r"NaN or infinite",
    ),
    "too-large pixels": (
        "predict {bright} --model {pct} --output {out}",
        r"too (wide|large) to normalize",
    ),
    "degenerate out_range": (
        "predict {image} --model {nan_range} --output {out}",
        r"out_range|unreadable metadata",
    ),
    "nan weights": ("predict {image} --model {nan_weights} --output {out}", r"NaN or infinite"),
    "output is the input folder": (
        "predict {images} --model {good} --output {images}",
        r"is also an input",
    ),
    "convert onto its source": ("convert {orig} {orig}/latest_net_G.pth", r"not a \.pth"),
    "convert into its folder": ("convert {orig} {orig}", r"is also an input"),
    "output names a tif": (
        "predict {image} --model {good} --output {root}/out.tif",
        r"the output is a folder",
    ),
    "run folder locked": (
        "train --data {data} --preset axons --output {locked} --iterations 1",
        r"another run \(process",
    ),
    "predict into a locked folder": (
        "predict {image} --model {good} --output {locked}",
        r"another run \(process",
    ),
    # tracebacks where a message is due
    "corrupt zlib tile": ("predict {corrupt} --model {good} --output {out}", r"corrupt\.tif"),
    "truncated tiff": ("predict {trunc} --model {good} --output {out}", r"trunc\.tif"),
    "config is a list": (
        "predict {image} --model {config_list} --output {out}",
        r"unreadable metadata",
    ),
    "format_version abc": (
        "predict {image} --model {version_abc} --output {out}",
        r"format_version",
    ),
    "state names a missing tensor": (
        "predict {image} --model {missing_tensor} --output {out}",
        r"training state",
    ),
    "state nested 100000 deep": (
        "predict {image} --model {deep} --output {out}",
        r"training state|unreadable",
    ),
    "int weights": ("predict {image} --model {int_weights} --output {out}", r"dtype int32"),
    "big foreign .tagan": (
        "predict {image} --model {big} --output {out}",
        r"not a napari-tagan model bundle",
    ),
    "preset nope on an original": (
        "predict {image} --model {orig} --preset nope --output {out}",
        r"unknown preset",
    ),
    # unbounded work
    "header claims 200000^2": (
        "predict {huge} --model {good} --output {out}",
        r"MB of memory is available",
    ),
    # messages
    "garbage .pth": (
        "predict {image} --model {garbage} --output {out}",
        r"not a readable PyTorch checkpoint",
    ),
    "pages differ in size": (
        "train --data {pages_data} --preset axons --output {out} --iterations 1",
        r"pages differ in size",
    ),
    "pydantic": (
        "train --data {data} --preset axons --output {out} --set lr=abc",
        r"^napari-tagan train: error: --set lr=abc",
    ),
}


def _argv(template: str, world: dict[str, Path], out: Path) -> list[str]:
    paths = {k: str(v) for k, v in world.items()}
    paths.update(out=str(out), images=str(world["image"].parent))
    argv = [a.format(**paths) for a in template.split()]
    extra = ["--no-progress"] + ([*TINY, "--crop", "32"] if argv[0] == "train" else [])
    return argv + (extra if argv[0] != "convert" else [])


def _snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (but the 1 GB sparse one) → its content hash."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "big.tagan"
    }


_DRIVER = """
import contextlib, io, json, sys, traceback
from napari_tagan.cli import main
out = []
for argv in json.loads(sys.stdin.read()):
    err, std = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(std):
        try:
            status = main(argv)
        except BaseException:
            status = -1
            traceback.print_exc()
    out.append([status, err.getvalue()])
print(json.dumps(out))
"""


def test_cli_table_in_a_real_process(world):
    """Every case: exit 2, one stderr line matching, no traceback, files unchanged.

    The cases run in one Python process (one start-up) through the CLI's ``main``, each
    with its own stderr: an exception that escaped the CLI's handler shows as a traceback.
    """
    root = world["root"]
    before = _snapshot(root)
    names = list(CASES)
    argvs = [_argv(CASES[n][0], world, root / f"out_{i}") for i, n in enumerate(names)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    proc = subprocess.run(
        [sys.executable, "-c", _DRIVER],
        input=json.dumps(argvs),
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    failures = []
    for name, (status, err) in zip(names, results, strict=True):
        lines = err.strip().splitlines() or [""]
        ok = status == 2 and len(lines) == 1 and "Traceback" not in err
        if not ok or not re.search(CASES[name][1], lines[0]):
            failures.append(f"{name}: exit {status}, stderr {err!r}")
    assert not failures, "\n".join(failures)
    assert _snapshot(root) == before  # no input touched, no output left behind
    assert not any((root / f"out_{i}").exists() for i in range(len(names)))


def test_one_case_as_its_own_process(world, tmp_path):
    """The handler's contract holds at the interpreter's top level too."""
    argv = _argv(CASES["corrupt zlib tile"][0], world, tmp_path / "o")
    proc = subprocess.run(
        [sys.executable, "-m", "napari_tagan.cli", *argv],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")},
    )
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "corrupt image data" in proc.stderr and "Traceback" not in proc.stderr


def test_existing_results_need_overwrite_and_batches_go_on(world, tmp_path, capsys):
    from napari_tagan.cli import main

    out = tmp_path / "out"
    out.mkdir()
    (out / "a_sted.tif").write_bytes(b"mine")
    base = ["predict", str(world["image"]), "--model", str(world["good"]), "--no-progress"]
    assert main([*base, "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "already exist" in err and "a_sted.tif" in err and "--overwrite" in err
    assert (out / "a_sted.tif").read_bytes() == b"mine"
    assert main([*base, "--output", str(out), "--overwrite"]) == 0
    capsys.readouterr()
    # one bad file in a batch: reported, the others done, exit status 2
    batch = ["predict", str(world["image"]), str(world["corrupt"]), "--model", str(world["good"])]
    assert main([*batch, "--output", str(tmp_path / "b"), "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert "corrupt.tif" in captured.err and "1 failed (corrupt)" in captured.out
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["a_seg.tif", "a_sted.tif"]


# ------------------------------------------------------------------------------ the API


def test_api_refuses_what_the_cli_refuses(world):
    model = read_bundle(world["good"]).model
    with pytest.raises(InputError, match="torch.Tensor"):
        predict(model, torch.zeros(32, 32))
    with pytest.raises(InputError, match="corrupt image data"):
        np.asarray(open_tiff(world["corrupt"]).data)
    with pytest.raises(InputError, match="MB of memory"):
        open_tiff(world["huge"])
    with pytest.raises(InputError, match="pages differ in size"):
        read_tiff_array(sorted(world["pages_data"].rglob("*.tif"))[0])
    for name, match in [("int_weights", "dtype"), ("nan_weights", "NaN"), ("deep", "unreadable")]:
        with pytest.raises(ModelLoadError, match=match):
            read_bundle(world[name])
    broken = tiny_model("axons")
    with torch.no_grad():
        next(broken.generator.parameters()).fill_(float("inf"))
    with pytest.raises(InputError, match="refusing to save"):
        save_bundle(broken, world["root"] / "never.tagan")
    assert not (world["root"] / "never.tagan").exists()


def test_half_precision_weights_load_as_float32(world):
    half = read_bundle(world["half"]).model
    good = read_bundle(world["good"]).model
    for (k, a), b in zip(
        half.generator.state_dict().items(), good.generator.state_dict().values(), strict=True
    ):
        assert a.dtype == b.dtype, k
        torch.testing.assert_close(a, b.half().to(b.dtype), rtol=0, atol=0)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(world, tmp_path):
    from napari_tagan.core.errors import TrainingDivergedError
    from napari_tagan.core.training import Trainer
    from napari_tagan.core.training.data import dataset_from_folder

    def trainer(lr: float, **kwargs) -> Trainer:
        model = tiny_model("axons", with_discriminator=True, lr=lr)
        data = dataset_from_folder(world["data"], model.config)
        return Trainer(
            model,
            data,
            output_dir=tmp_path,
            iterations=3,
            crop_size=32,
            batch_size=1,
            device="cpu",
            **kwargs,
        )

    trainer(2e-4).run()
    good = (tmp_path / "latest.tagan").read_bytes()
    with pytest.raises(TrainingDivergedError, match=r"iteration \d+: loss \w+ is (nan|inf)"):
        trainer(1e30, overwrite=True, checkpoint_every=1).run()  # diverges at once
    assert (tmp_path / "latest.tagan").read_bytes() == good  # the good run's, untouched
    assert not (tmp_path / LOCK_NAME).exists()


def test_run_folder_lock(tmp_path):
    with run_folder_lock(tmp_path) as lock:
        assert lock.is_file()
        with pytest.raises(InputError, match="another run"), run_folder_lock(tmp_path):
            pass
    assert not lock.exists()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    lock.write_text(f"{dead}@{os.uname().nodename}")  # a killed run's lock: taken over
    with run_folder_lock(tmp_path):
        assert lock.read_text().startswith(str(os.getpid()))


# ------------------------------------------------------------------------------ the reader


def test_reader_declines_what_it_cannot_read(world):
    assert napari_get_reader(str(world["trunc"])) is None
    assert napari_get_reader(str(world["huge"])) is None
    assert napari_get_reader(str(world["image"])) is not None


@pytest.mark.parametrize(
    "own",
    [
        {"colormap": "no-such-map", "contrast_limits": [5, 1], "blending": "sideways"},
        {"colormap": 3, "contrast_limits": ["a", None], "blending": None, "name": 7},
        {"scale": [float("nan"), -1.0], "translate": ["x", 1], "metadata": [1, 2]},
        {"contrast_limits": [0, float("inf")], "rgb": "yes"},
    ],
)
def test_reader_drops_crafted_layer_settings(own):
    import napari

    data = np.zeros((8, 8), np.float32)
    kwargs = _own_layer(Path("x.tif"), data, {"layer_type": "labels", **own})[1]
    napari.layers.Image(data, **kwargs)  # napari accepts every setting left


# ------------------------------------------------------------------------------ properties

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies


@hypothesis.settings(max_examples=40, deadline=None, derandomize=True)
@hypothesis.given(data=st.data())
def test_random_bytes_in_tiffs_give_only_our_errors(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "f.tif"
    image = np.arange(48 * 40, dtype=np.uint16).reshape(48, 40)
    compression = data.draw(st.sampled_from([None, "zlib"]))
    _tiff(path, image, compression=compression, tile=(16, 16) if compression else None)
    raw = bytearray(path.read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw) - 1))
        chunk = data.draw(st.binary(min_size=1, max_size=16))
        raw[at : at + len(chunk)] = chunk
    path.write_bytes(bytes(raw[: data.draw(st.integers(8, len(raw)))]))
    try:
        np.asarray(open_tiff(path).data)
        read_tiff_array(path)
    except TaganError:
        pass
    napari_get_reader(str(path))  # None or a reader; never an exception


@hypothesis.settings(max_examples=40, deadline=None, derandomize=True)
@hypothesis.given(data=st.data())
def test_random_bytes_in_bundles_give_only_our_errors(world, tmp_path_factory, data):
    raw = bytearray(world["good"].read_bytes())
    header = int.from_bytes(raw[:8], "little") + 8
    region = data.draw(st.sampled_from(["header", "tensors", "anywhere"]))
    lo, hi = {"header": (0, header), "tensors": (header, len(raw)), "anywhere": (0, len(raw))}[
        region
    ]
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(lo, hi - 1))
        chunk = data.draw(st.binary(min_size=1, max_size=8))
        raw[at : at + len(chunk)] = chunk
    path = tmp_path_factory.mktemp("fuzz") / "m.tagan"
    path.write_bytes(bytes(raw[: data.draw(st.integers(0, len(raw)))]))
    try:
        read_bundle(path)
    except TaganError:
        pass
