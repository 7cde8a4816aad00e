"""A model format other tools open: bioimage.io model packages (``bioimageio.spec`` 0.5).

:func:`export_bioimageio` writes G and S as one two-output network (synthetic STED,
segmentation probabilities) in three weight formats: PyTorch state dict (architecture
:class:`TwoOutputTAGAN`, importable from this module), TorchScript and ONNX. The package's
pre-processing is our normalization (clip and scale for ``legacy8``, percentile
``scale_range`` for ``percentile``), the output's ``halo`` is the networks' measured
receptive field, its test tensors come from the simulator, and the whole
:class:`ModelConfig` and provenance travel under ``config.napari_tagan``, so that
:func:`import_bioimageio` rebuilds the identical :class:`TAGANModel`.

Only the deterministic eval mode can be expressed (dropout generations and batch
statistics are properties of a run, not of a network); the package's README says so.
``bioimageio.spec`` is imported on first use only.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .config import ModelConfig, NormalizationSpec
from .errors import ModelLoadError, TaganError
from .io import atomic_output
from .model import Provenance, TAGANModel
from .networks import ARCH_STRIDE
from .tiling import default_halo, round_up

TAGAN_DOI = "10.1038/s42256-023-00689-3"
TAGAN_CITATION = (
    "Bouchard, C. et al. Resolution enhancement with a task-assisted GAN to guide optical "
    "nanoscopy image analysis and acquisition. Nat. Mach. Intell. 5, 830-844 (2023)."
)
_IN, _STED, _SEG = "confocal", "sted", "segmentation"


class TwoOutputTAGAN(nn.Module):
    """G, then S on G's output: (synthetic STED in network units, probabilities in [0, 1]).

    The input is a normalized (N, input_nc, Y, X) batch whose sides are multiples of the
    networks' stride. ``config`` is a :class:`ModelConfig` as a JSON-able dict.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        cfg = ModelConfig.model_validate(config)
        model = TAGANModel.from_config(cfg, initialize=False)
        self.generator = model.generator
        self.segmenter = model.segmenter
        self.mask_lo, self.mask_hi = (float(v) for v in cfg.mask_range)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        sted = self.generator(x)
        if self.segmenter is None:
            return (sted,)
        seg = (self.segmenter(sted) - self.mask_lo) / (self.mask_hi - self.mask_lo)
        return sted, seg.clamp(0.0, 1.0)


def two_output_network(model: TAGANModel) -> TwoOutputTAGAN:
    """A :class:`TwoOutputTAGAN` holding ``model``'s G and S weights (eval mode, CPU)."""
    net = TwoOutputTAGAN(json.loads(model.config.model_dump_json()))
    net.generator.load_state_dict(model.generator.state_dict())
    if model.segmenter is not None:
        net.segmenter.load_state_dict(model.segmenter.state_dict())
    return net.float().cpu().eval()


def package_halo(config: ModelConfig) -> int:
    """Context a window needs on each side for exact output: G's halo plus S's."""
    halo = default_halo(config.generator, "generator")
    if config.segmenter is not None:
        halo += default_halo(config.segmenter, "segmenter")
    return halo


def package_stride(config: ModelConfig) -> int:
    """Side lengths the package accepts are multiples of this."""
    archs = [config.generator] + ([config.segmenter] if config.segmenter else [])
    return max(ARCH_STRIDE[a] for a in archs)


# --------------------------------------------------------------------------- processing


def preprocessing(spec: NormalizationSpec) -> list[Any]:
    """bioimage.io pre-processing steps equal to :func:`~napari_tagan.core.normalize`."""
    from bioimageio.spec.model import v0_5 as b

    a, hi = spec.out_range
    spatial = [b.AxisId("y"), b.AxisId("x")]
    steps: list[Any] = []
    if spec.kind.startswith("legacy8"):
        # integer-valued inputs: legacy8's truncation to integers is then the identity
        steps.append(b.ClipDescr(kwargs=b.ClipKwargs(min=0.0, max=255.0)))
    if spec.kind == "legacy8":
        gain, offset = (hi - a) / 255.0, a
    else:
        p_lo, p_hi = (spec.p_low, spec.p_high) if spec.kind == "percentile" else (0.0, 100.0)
        steps.append(
            b.ScaleRangeDescr(
                kwargs=b.ScaleRangeKwargs(
                    axes=spatial, min_percentile=p_lo, max_percentile=p_hi, eps=1e-30
                )
            )
        )
        gain, offset = hi - a, a
    steps.append(b.ScaleLinearDescr(kwargs=b.ScaleLinearKwargs(gain=gain, offset=offset)))
    steps.append(b.EnsureDtypeDescr(kwargs=b.EnsureDtypeKwargs(dtype="float32")))
    return steps


def sted_postprocessing(spec: NormalizationSpec) -> list[Any]:
    """G's output to 8-bit intensity units (``legacy8``) or to [0, 1] (other kinds)."""
    from bioimageio.spec.model import v0_5 as b

    a, hi = spec.out_range
    scale = 255.0 if spec.kind == "legacy8" else 1.0
    gain = scale / (hi - a)
    return [b.ScaleLinearDescr(kwargs=b.ScaleLinearKwargs(gain=gain, offset=-a * gain))]


def _numpy_preprocess(raw: np.ndarray, spec: NormalizationSpec) -> np.ndarray:
    from .normalization import normalize

    return np.stack([normalize(plane, spec)[0] for plane in raw])


def _numpy_sted_post(y: np.ndarray, spec: NormalizationSpec) -> np.ndarray:
    a, hi = spec.out_range
    scale = 255.0 if spec.kind == "legacy8" else 1.0
    return ((y - a) * (scale / (hi - a))).astype(np.float32)


# --------------------------------------------------------------------------- export


def simulated_input(config: ModelConfig, side: int, seed: int = 0) -> np.ndarray:
    """A simulated confocal image (1, input_nc, side, side), integer photon counts."""
    from .simulate import simulate

    structure = {"saureus": "saureus", "dendrites": "dendrites", "synprot": "nanodomains"}
    sample = simulate(structure.get(config.preset, "axons"), (side, side), seed=seed)
    plane = np.round(np.clip(sample.confocal, 0, None)).astype(np.float32)
    return np.repeat(plane[None, None], config.input_nc, axis=1)


def _cover(raw: np.ndarray, sted: np.ndarray, path: Path) -> None:
    from PIL import Image

    def to8(a: np.ndarray) -> np.ndarray:
        lo, hi = np.percentile(a, (0.5, 99.5))
        return (np.clip((a - lo) / max(hi - lo, 1e-12), 0, 1) * 255).astype(np.uint8)

    tile = np.concatenate([to8(raw[0, 0]), to8(sted[0, 0])], axis=1)
    Image.fromarray(tile).resize((tile.shape[1] * 2, tile.shape[0] * 2)).save(path)


_README = """# {name}

TA-GAN (task-assisted GAN) exported by napari-tagan {version}: a generator G that turns a
{channels} image into a synthetic STED image, and a segmenter S applied to G's output
({classes}). Preset: `{preset}`; normalization: `{norm}`.

Inputs are normalized by the package's pre-processing ({pre}). The `sted` output is
{post}; the `segmentation` output holds per-pixel probabilities in [0, 1].

**Only the deterministic eval mode is expressed.** napari-tagan's Monte-Carlo dropout
generations (variability maps) and the original's batch-statistics mode are properties of
a run, not of a network, and are not part of this package; open it with napari-tagan
(`napari-tagan predict --model this.zip`) for those.

Tiles need `halo` = {halo} pixels of context on each side for exact results; sides must be
multiples of {stride}. The whole napari-tagan configuration is under `config.napari_tagan`.

Cite the TA-GAN paper: {citation} https://doi.org/{doi}
"""


def _tensor_descrs(config: ModelConfig, files: dict[str, Path], halo: int) -> tuple[Any, Any]:
    from bioimageio.spec.model import v0_5 as b

    stride = package_stride(config)
    min_side = round_up(2 * halo + stride, stride)
    space_in = [
        b.SpaceInputAxis(id=b.AxisId(ax), size=b.ParameterizedSize(min=min_side, step=stride))
        for ax in "yx"
    ]
    names = [b.Identifier(n) for n in config.channel_names]
    names += [b.Identifier(f"extra{i}") for i in range(config.input_nc - len(names))]
    inputs = [
        b.InputTensorDescr(
            id=b.TensorId(_IN),
            axes=[b.BatchAxis(), b.ChannelAxis(channel_names=names), *space_in],
            test_tensor=b.FileDescr(source=files["in"]),
            preprocessing=preprocessing(config.normalization),
        )
    ]

    def out_axes(channel_names: list[str]) -> list[Any]:
        space = [
            b.SpaceOutputAxisWithHalo(
                id=b.AxisId(ax),
                halo=halo,
                size=b.SizeReference(tensor_id=b.TensorId(_IN), axis_id=b.AxisId(ax)),
            )
            for ax in "yx"
        ]
        channel = b.ChannelAxis(channel_names=[b.Identifier(n) for n in channel_names])
        return [b.BatchAxis(), channel, *space]

    sted_names = [f"sted_{n}" for n in config.channel_names][: config.output_nc]
    sted_names += [f"sted{i}" for i in range(len(sted_names), config.output_nc)]
    outputs = [
        b.OutputTensorDescr(
            id=b.TensorId(_STED),
            axes=out_axes(sted_names),
            test_tensor=b.FileDescr(source=files[_STED]),
            postprocessing=sted_postprocessing(config.normalization),
        )
    ]
    if config.segmenter is not None:
        outputs.append(
            b.OutputTensorDescr(
                id=b.TensorId(_SEG),
                axes=out_axes(list(config.class_names)),
                test_tensor=b.FileDescr(source=files[_SEG]),
            )
        )
    return inputs, outputs


def _write_weights(net: TwoOutputTAGAN, example: torch.Tensor, folder: Path) -> dict[str, Path]:
    files = {
        "state": folder / "weights.pt",
        "torchscript": folder / "weights_torchscript.pt",
        "onnx": folder / "weights.onnx",
    }
    torch.save(net.state_dict(), files["state"])
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.jit.trace(net, example).save(str(files["torchscript"]))
        names = [_STED] + ([_SEG] if net.segmenter is not None else [])
        dynamic = {n: {0: "n", 2: "h", 3: "w"} for n in [_IN, *names]}
        torch.onnx.export(
            net,
            (example,),
            str(files["onnx"]),
            dynamo=False,
            input_names=[_IN],
            output_names=names,
            dynamic_axes=dynamic,
            opset_version=17,
        )
    return files


def _write_tensors(model: TAGANModel, net: TwoOutputTAGAN, folder: Path, side: int) -> dict:
    config = model.config
    raw = simulated_input(config, side)
    x = torch.from_numpy(_numpy_preprocess(raw, config.normalization))
    with torch.no_grad():
        outs = [o.numpy() for o in net(x)]
    files = {"in": folder / "test_input.npy", _STED: folder / "test_sted.npy"}
    np.save(files["in"], raw)
    np.save(files[_STED], _numpy_sted_post(outs[0], config.normalization))
    if len(outs) > 1:
        files[_SEG] = folder / "test_segmentation.npy"
        np.save(files[_SEG], outs[1].astype(np.float32))
    files["cover"] = folder / "cover.png"
    _cover(raw, outs[0], files["cover"])
    files["example"] = x
    return files


def export_bioimageio(
    model: TAGANModel,
    output: str | os.PathLike[str],
    *,
    name: str | None = None,
    authors: tuple[str, ...] = ("napari-tagan",),
    licence: str = "BSD-3-Clause",
    parent_id: str | None = None,
) -> Path:
    """Write ``model`` as a bioimage.io model package (``.zip``), atomically.

    ``parent_id`` names the bioimage.io model this one was fine-tuned from, if any.
    """
    from bioimageio.spec import save_bioimageio_package
    from bioimageio.spec.model import v0_5 as b

    from napari_tagan import __version__

    problem = bioimageio_problem()
    if problem:
        raise TaganError(problem)
    config = model.config
    net = two_output_network(model)
    halo, stride = package_halo(config), package_stride(config)
    name = name or f"napari-tagan {config.preset}"
    with tempfile.TemporaryDirectory(prefix="tagan-bioimageio-") as tmp:
        folder = Path(tmp)
        side = round_up(2 * halo + 2 * stride, stride)
        files = _write_tensors(model, net, folder, side)
        weights = _write_weights(net, files.pop("example"), folder)
        inputs, outputs = _tensor_descrs(config, files, halo)
        doc = folder / "README.md"
        doc.write_text(_readme(config, name, __version__, halo, stride), encoding="utf-8")
        torch_version = b.Version(torch.__version__.split("+")[0])
        arch = b.ArchitectureFromLibraryDescr(
            callable=b.Identifier("TwoOutputTAGAN"),
            import_from="napari_tagan.core.bioimageio",
            kwargs={"config": json.loads(config.model_dump_json())},
        )
        descr = b.ModelDescr(
            name=name,
            description=(config.description or f"TA-GAN {config.preset}: confocal to STED"),
            authors=[b.Author(name=a) for a in authors],
            cite=[b.CiteEntry(text=TAGAN_CITATION, doi=b.Doi(TAGAN_DOI))],
            license=b.LicenseId(licence),
            covers=[b.FileDescr(source=files["cover"])],
            documentation=b.FileDescr(source=doc),
            tags=["tagan", "super-resolution", "sted", "segmentation", "napari-tagan"],
            inputs=inputs,
            outputs=outputs,
            parent=b.LinkedModel(id=b.ModelId(parent_id)) if parent_id else None,
            weights=b.WeightsDescr(
                pytorch_state_dict=b.PytorchStateDictWeightsDescr(
                    source=weights["state"], architecture=arch, pytorch_version=torch_version
                ),
                torchscript=b.TorchscriptWeightsDescr(
                    source=weights["torchscript"],
                    pytorch_version=torch_version,
                    parent="pytorch_state_dict",
                ),
                onnx=b.OnnxWeightsDescr(
                    source=weights["onnx"], opset_version=17, parent="pytorch_state_dict"
                ),
            ),
            config=b.Config(napari_tagan=_our_config(model)),
        )
        with atomic_output(output) as part:
            save_bioimageio_package(descr, output_path=part.with_suffix(".zip"))
            part.with_suffix(".zip").replace(part)
    return Path(output)


def bioimageio_problem() -> str | None:
    """Why bioimageio.spec cannot write packages here (one line), or None when it can."""
    try:
        import pydantic
        from bioimageio.spec.model import v0_5 as b
    except ImportError:
        return "bioimageio.spec is not installed: pip install 'napari-tagan[bioimageio]'"
    probe = b.TorchscriptWeightsDescr(source=Path(__file__), pytorch_version=b.Version("2.0"))
    try:  # bioimageio.spec 0.5.12 passes SerializationInfo as index_key: pydantic >= 2.14 refuses
        probe.model_dump(mode="json")
    except (TypeError, ValueError):
        return (
            f"this bioimageio.spec cannot run with pydantic {pydantic.VERSION}; install "
            "pydantic<2.14 or a newer bioimageio.spec"
        )
    return None


def _our_config(model: TAGANModel) -> dict[str, Any]:
    return {
        "format": "napari-tagan-bioimageio",
        "format_version": 1,
        "model_config": json.loads(model.config.model_dump_json()),
        "provenance": json.loads(model.provenance.model_dump_json()),
        "state_dict": "weights.pt",
        "modes": ["eval"],
    }


def _readme(config: ModelConfig, name: str, version: str, halo: int, stride: int) -> str:
    norm = config.normalization
    if norm.kind == "legacy8":
        pre, post = "clip to [0, 255], then scale to the network range", "in 8-bit units"
    else:
        pre = f"{norm.kind} scale_range, then scale to the network range"
        post = "scaled to [0, 1] (the input's intensity scale is not recoverable)"
    return _README.format(
        name=name,
        version=version,
        channels=" + ".join(config.channel_names),
        classes=", ".join(config.class_names) if config.segmenter else "no segmenter",
        preset=config.preset,
        norm=norm.kind,
        pre=pre,
        post=post,
        halo=halo,
        stride=stride,
        citation=TAGAN_CITATION,
        doi=TAGAN_DOI,
    )


# --------------------------------------------------------------------------- import


def is_bioimageio_package(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a zip holding a bioimage.io ``rdf.yaml``."""
    p = Path(path)
    if not p.is_file() or not zipfile.is_zipfile(p):
        return False
    with zipfile.ZipFile(p) as zf:
        return any(n.endswith(("rdf.yaml", "bioimageio.yaml")) for n in zf.namelist())


def import_bioimageio(path: str | os.PathLike[str]) -> TAGANModel:
    """Rebuild the :class:`TAGANModel` of a package written by :func:`export_bioimageio`.

    The state dict is read with ``torch.load(weights_only=True)``: nothing is unpickled.
    """
    import yaml

    p = Path(path)
    with zipfile.ZipFile(p) as zf:
        rdf_name = next(n for n in zf.namelist() if n.endswith(("rdf.yaml", "bioimageio.yaml")))
        rdf = yaml.safe_load(zf.read(rdf_name))
        ours = (rdf.get("config") or {}).get("napari_tagan")
        if not ours:
            raise ModelLoadError(
                f"{p.name} is a bioimage.io package, but not one exported by napari-tagan "
                "(no config.napari_tagan); open it with bioimageio.core instead"
            )
        state_bytes = zf.read(ours["state_dict"])
    try:
        config = ModelConfig.model_validate(ours["model_config"])
        state = torch.load(io.BytesIO(state_bytes), map_location="cpu", weights_only=True)
    except (ValueError, RuntimeError, KeyError) as exc:
        msg = f"{p.name} has an unreadable napari-tagan config or weights: {exc}"
        raise ModelLoadError(msg) from None
    model = TAGANModel.from_config(config, initialize=False, device="meta")
    for role in ("generator", "segmenter"):
        net = getattr(model, role)
        if net is not None:
            sub = {k[len(role) + 1 :]: v for k, v in state.items() if k.startswith(role + ".")}
            net.load_state_dict(sub, strict=True, assign=True)
    model.provenance = Provenance.model_validate(ours.get("provenance") or {})
    model.source = str(p)
    return model.eval()
