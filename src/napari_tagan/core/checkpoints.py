"""Reading and writing model weights.

Two formats:

* **Original TA-GAN checkpoints**: a folder with ``{epoch}_net_G.pth`` and optionally
  ``{epoch}_net_S.pth`` / ``{epoch}_net_D.pth`` (bare ``state_dict``s). They are read with
  ``torch.load(weights_only=True)``, so a file that holds anything but tensors and plain
  containers is refused without running code.
* **Model bundles** (``.tagan``): one safetensors file whose tensors are the weights of G,
  S and optionally D plus any training state, and whose JSON metadata holds the config,
  provenance and training state structure. Loading never unpickles.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from .config import PRESET_NAMES, ModelConfig, NormalizationSpec, preset_config
from .errors import ArchitectureMismatchError, ModelLoadError
from .io import atomic_write_bytes
from .model import Provenance, TAGANModel
from .networks import build_generator, build_segmenter

BUNDLE_FORMAT = "napari-tagan-model"
BUNDLE_VERSION = 1
BUNDLE_SUFFIX = ".tagan"
ROLES = ("generator", "segmenter", "discriminator")
_ROLE_LETTER = {"generator": "G", "segmenter": "S", "discriminator": "D"}

Layout = dict[str, tuple[int, ...]]


# --------------------------------------------------------------------------- layouts


def layout(state: Mapping[str, torch.Tensor] | nn.Module) -> Layout:
    """Key → shape of a state dict or module (works on ``meta`` tensors)."""
    sd = state.state_dict() if isinstance(state, nn.Module) else state
    return {k: tuple(v.shape) for k, v in sd.items()}


def describe_layout_difference(expected: Layout, found: Layout, *, limit: int = 6) -> str:
    """Human summary of missing / unexpected keys and shape differences."""

    def few(items: list[str]) -> str:
        more = f" … (+{len(items) - limit} more)" if len(items) > limit else ""
        return ", ".join(items[:limit]) + more

    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [
        f"{k} {found[k]} (expected {expected[k]})"
        for k in expected
        if k in found and found[k] != expected[k]
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s): {few(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {few(unexpected)}")
    if shapes:
        parts.append(f"{len(shapes)} shape difference(s): {few(shapes)}")
    return "; ".join(parts) if parts else "layouts are identical"


@dataclass(frozen=True)
class NetworkGuess:
    """Architecture recovered from a state dict's keys and shapes."""

    arch: str
    input_nc: int
    output_nc: int
    width: int
    norm: str


def _first_last(sd: Layout) -> tuple[str, int, int, int] | None:
    """(family, input_nc, output_nc, width) from the first and last convolutions."""
    if "model.1.weight" in sd and len(sd["model.1.weight"]) == 4:
        width, input_nc = sd["model.1.weight"][:2]
        last = [
            int(m.group(1))
            for k in sd
            if (m := re.fullmatch(r"model\.(\d+)\.weight", k)) and len(sd[k]) == 4
        ]
        output_nc = sd[f"model.{max(last)}.weight"][0]
        return "resnet", input_nc, output_nc, width
    if "model.model.0.weight" in sd and "model.model.3.weight" in sd:
        width, input_nc = sd["model.model.0.weight"][:2]
        output_nc = sd["model.model.3.weight"][1]
        return "unet", input_nc, output_nc, width
    return None


def infer_network(state: Mapping[str, torch.Tensor], role: str) -> NetworkGuess | None:
    """Which generator/segmenter architecture has exactly this layout, if any."""
    sd = layout(state)
    head = _first_last(sd)
    if head is None:
        return None
    family, input_nc, output_nc, width = head
    first_conv = "model.1" if family == "resnet" else "model.model.0"
    if any(k.endswith("running_mean") for k in sd):
        norm = "batch"
    elif f"{first_conv}.bias" in sd:
        norm = "instance"  # only instance norm gives the inner convolutions a bias
    else:
        norm = "none"
    archs = (
        ("resnet_9blocks", "resnet_6blocks", "unet_128", "unet_256")
        if role == "generator"
        else ("resnet_6blocks", "unet_128", "unet_32")
    )
    for arch in archs:
        if not arch.startswith(family):
            continue
        with torch.device("meta"):
            net = (
                build_generator(arch, input_nc, output_nc, width, norm)  # type: ignore[arg-type]
                if role == "generator"
                else build_segmenter(arch, input_nc, output_nc, width, norm)  # type: ignore[arg-type]
            )
        if layout(net) == sd:
            return NetworkGuess(arch, input_nc, output_nc, width, norm)
    return None


def infer_discriminator(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Config fields (discriminator, n_layers_d, ndf) recovered from a D state dict."""
    sd = layout(state)
    if "net.0.weight" in sd:
        return {"discriminator": "pixel", "ndf": sd["net.0.weight"][0]}
    if "model.0.weight" not in sd:
        return {}
    convs = [k for k, s in sd.items() if k.endswith(".weight") and len(s) == 4]
    n_layers = len(convs) - 2
    return {
        "discriminator": "basic" if n_layers == 3 else "n_layers",
        "n_layers_d": max(n_layers, 1),
        "ndf": sd["model.0.weight"][0],
    }


def fitting_presets(generator: NetworkGuess | None, segmenter: NetworkGuess | None) -> list[str]:
    """Presets whose architecture and channel counts match (any filter count)."""
    if generator is None:
        return []
    fits = []
    for name in PRESET_NAMES:
        cfg = preset_config(name)
        if (generator.arch, generator.input_nc, generator.output_nc, generator.norm) != (
            cfg.generator,
            cfg.input_nc,
            cfg.output_nc,
            cfg.norm,
        ):
            continue
        if segmenter is not None and (
            (segmenter.arch, segmenter.input_nc, segmenter.output_nc, segmenter.norm)
            != (cfg.segmenter, cfg.output_nc, cfg.n_classes, cfg.norm)
        ):
            continue
        fits.append(name)
    return fits


# --------------------------------------------------------------------- original .pth


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a ``.pth`` state dict safely (``weights_only``), stripping ``module.`` prefixes.

    Raises
    ------
    ModelLoadError
        Missing, corrupted or truncated files, files holding arbitrary Python objects
        (refused, never executed), and files that are not a mapping of tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"checkpoint file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelLoadError(
            f"{path.name} holds Python objects other than tensors; refusing to unpickle it "
            "(only plain state dicts are loaded, so a crafted file cannot run code)"
        ) from exc
    except Exception as exc:  # the unpickler fails in many ways on foreign bytes
        raise ModelLoadError(
            f"{path.name} is not a readable PyTorch checkpoint (corrupted or truncated?): "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from exc
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise ModelLoadError(
            f"{path.name} is a PyTorch file but not a state dict (expected a mapping of "
            f"parameter names to tensors, got {type(obj).__name__})"
        )
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return dict(obj)


def original_epochs(directory: str | os.PathLike[str]) -> list[str]:
    """Epoch names (``latest``, ``best``, numbers) with a G checkpoint in ``directory``."""
    names = [p.name[: -len("_net_G.pth")] for p in Path(directory).glob("*_net_G.pth")]

    def order(name: str) -> tuple[int, float]:
        return (0, float(name)) if name.isdigit() else (1, 0.0)

    return sorted(names, key=order)


def find_original_checkpoint(
    path: str | os.PathLike[str], epoch: str | int | None = None
) -> dict[str, Path]:
    """Locate the G (and S, D) files of one epoch of an original checkpoint folder.

    ``path`` is the folder or one of its ``*_net_G.pth`` files. Without ``epoch``,
    ``latest`` is preferred, then ``best``, then the highest numbered epoch. S falls back
    to ``pretrained_net_S.pth`` (the live preset's frozen segmenter).
    """
    path = Path(path)
    if path.is_file():
        m = re.fullmatch(r"(.+)_net_[GSD]\.pth", path.name)
        if m is None:
            raise ModelLoadError(
                f"{path.name} is not named like an original TA-GAN checkpoint "
                "({epoch}_net_G.pth); pass the checkpoint folder or a .tagan bundle"
            )
        path, epoch = path.parent, m.group(1) if epoch is None else epoch
    if not path.is_dir():
        raise ModelLoadError(f"checkpoint folder not found: {path}")
    available = original_epochs(path)
    if not available:
        raise ModelLoadError(
            f"no original TA-GAN checkpoint in {path}: expected files named "
            "{epoch}_net_G.pth (e.g. latest_net_G.pth, 1000_net_G.pth)"
        )
    if epoch is None:
        numbered = [e for e in available if e.isdigit()]
        epoch = next((e for e in ("latest", "best") if e in available), None) or numbered[-1]
    epoch = str(epoch)
    if epoch not in available:
        raise ModelLoadError(
            f"no checkpoint for epoch {epoch!r} in {path}; available: {', '.join(available)}"
        )
    files = {"generator": path / f"{epoch}_net_G.pth"}
    for role, candidates in (
        ("segmenter", (f"{epoch}_net_S.pth", "pretrained_net_S.pth")),
        ("discriminator", (f"{epoch}_net_D.pth",)),
    ):
        found = next((path / c for c in candidates if (path / c).is_file()), None)
        if found is not None:
            files[role] = found
    return files


def _check_fits(
    net: nn.Module, state: Mapping[str, torch.Tensor], what: str, fits: list[str]
) -> None:
    expected, found = layout(net), layout(state)
    if expected == found:
        return
    hint = (
        f"; this checkpoint fits preset(s): {', '.join(fits)}"
        if fits
        else "; no preset has this layout"
    )
    raise ArchitectureMismatchError(
        f"{what} does not fit the chosen architecture: "
        f"{describe_layout_difference(expected, found)}{hint}"
    )


def config_for_original(
    preset: str | None,
    generator: NetworkGuess | None,
    segmenter: NetworkGuess | None,
    *,
    origin: str = "checkpoint",
) -> ModelConfig:
    """The config under which an original checkpoint should be loaded.

    With ``preset=None`` the preset is inferred when exactly one fits; otherwise the error
    names the candidates. The filter counts (ngf, nsf) are taken from the weights.
    """
    fits = fitting_presets(generator, segmenter)
    if preset is None:
        specific = [p for p in fits if p != "generic"]
        if len(specific) == 1:
            preset = specific[0]
        elif specific:
            raise ModelLoadError(
                f"several presets fit {origin} ({', '.join(specific)}); they differ in "
                "normalization, so choose one with --preset / the Preset box"
            )
        elif generator is not None:
            preset = "generic"
        else:
            raise ModelLoadError(f"{origin}: the generator's layout matches no known network")
    overrides: dict[str, Any] = {}
    if generator is not None:
        overrides["ngf"] = generator.width
    if segmenter is not None:
        overrides["nsf"] = segmenter.width
    if preset == "generic" and generator is not None:
        # The original's own pipeline (8-bit conversion) is what such weights saw.
        overrides.update(
            generator=generator.arch,
            image_channels=generator.input_nc,
            output_nc=generator.output_nc,
            norm=generator.norm,
            normalization=NormalizationSpec(kind="legacy8"),
        )
        if segmenter is not None:
            overrides.update(
                segmenter=segmenter.arch,
                class_names=tuple(f"class {i + 1}" for i in range(segmenter.output_nc)),
            )
    return preset_config(preset, **overrides)


def load_original_checkpoint(
    path: str | os.PathLike[str],
    *,
    epoch: str | int | None = None,
    preset: str | None = None,
    with_discriminator: bool = False,
    require_segmenter: bool = False,
) -> TAGANModel:
    """Load an original TA-GAN checkpoint folder into a :class:`TAGANModel`.

    Raises
    ------
    ModelLoadError
        Unreadable files, missing epoch, missing S when ``require_segmenter``.
    ArchitectureMismatchError
        Weights that do not fit the preset; the message lists key/shape differences and
        the presets that would fit.
    """
    files = find_original_checkpoint(path, epoch)
    if require_segmenter and "segmenter" not in files:
        raise ModelLoadError(
            f"{files['generator'].parent} has no segmenter checkpoint "
            f"({files['generator'].name.replace('_net_G', '_net_S')} or pretrained_net_S.pth), "
            "but segmentation was asked for"
        )
    states = {role: read_state_dict(p) for role, p in files.items()}
    if not with_discriminator:
        states.pop("discriminator", None)
    g_guess = infer_network(states["generator"], "generator")
    s_guess = infer_network(states["segmenter"], "segmenter") if "segmenter" in states else None
    config = config_for_original(preset, g_guess, s_guess, origin=files["generator"].name)
    if "segmenter" not in states:
        config = config.with_overrides(segmenter=None)
    if "discriminator" in states:
        config = config.with_overrides(**infer_discriminator(states["discriminator"]))
    model = TAGANModel.from_config(
        config, with_discriminator="discriminator" in states, initialize=False, device="meta"
    )
    fits = fitting_presets(g_guess, s_guess)
    for role, state in states.items():
        net = getattr(model, role)
        _check_fits(net, state, files[role].name, fits)
        net.load_state_dict(state, strict=True, assign=True)
    model.source = f"{files['generator'].parent} (epoch {files['generator'].name[:-10]})"
    model.provenance = Provenance.new(source=model.source)
    return model.eval()


# --------------------------------------------------------------------------- bundles


def pack_state(obj: Any, tensors: dict[str, torch.Tensor], prefix: str) -> Any:
    """Split a nested structure into JSON-able data and named tensors.

    Tensors (and numpy arrays) are stored in ``tensors`` under ``prefix.N`` and replaced by
    references; dicts with non-string keys and tuples are tagged so that
    :func:`unpack_state` restores them exactly (optimizer states have integer keys).
    """
    if isinstance(obj, torch.Tensor | np.ndarray):
        key = f"{prefix}.{len(tensors)}"
        is_np = isinstance(obj, np.ndarray)
        tensors[key] = (torch.from_numpy(np.ascontiguousarray(obj)) if is_np else obj).detach()
        tensors[key] = tensors[key].cpu().contiguous().clone()
        return {"__tensor__": key, "numpy": is_np}
    if isinstance(obj, Mapping):
        if all(isinstance(k, str) for k in obj):
            return {"__dict__": {k: pack_state(v, tensors, prefix) for k, v in obj.items()}}
        return {"__items__": [[k, pack_state(v, tensors, prefix)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [pack_state(v, tensors, prefix) for v in obj]}
    if isinstance(obj, list):
        return [pack_state(v, tensors, prefix) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} in a model bundle")


def unpack_state(data: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """Inverse of :func:`pack_state`."""
    if isinstance(data, list):
        return [unpack_state(v, tensors) for v in data]
    if not isinstance(data, dict):
        return data
    if "__tensor__" in data:
        t = tensors[data["__tensor__"]]
        return t.numpy() if data.get("numpy") else t
    if "__dict__" in data:
        return {k: unpack_state(v, tensors) for k, v in data["__dict__"].items()}
    if "__items__" in data:
        return {k: unpack_state(v, tensors) for k, v in data["__items__"]}
    if "__tuple__" in data:
        return tuple(unpack_state(v, tensors) for v in data["__tuple__"])
    raise ModelLoadError(f"unrecognised entry in a bundle's training state: {sorted(data)}")


@dataclass
class Bundle:
    """A loaded bundle: the model and any training state saved with it."""

    model: TAGANModel
    training_state: dict[str, Any] = field(default_factory=dict)


def save_bundle(
    model: TAGANModel,
    path: str | os.PathLike[str],
    *,
    training_state: Mapping[str, Any] | None = None,
    include_discriminator: bool = True,
) -> Path:
    """Write ``model`` (config, provenance, weights, optional training state) atomically.

    ``training_state`` may nest dicts, lists, numbers, strings, tensors and numpy arrays
    (optimizer and scheduler states, RNG states, iteration counters).
    """
    tensors: dict[str, torch.Tensor] = {}
    for role, net in model.networks().items():
        if role == "discriminator" and not include_discriminator:
            continue
        for key, value in net.state_dict().items():
            tensors[f"{role}.{key}"] = value.detach().cpu().contiguous().clone()
    state_json = pack_state(dict(training_state or {}), tensors, "state")
    metadata = {
        "format": BUNDLE_FORMAT,
        "format_version": str(BUNDLE_VERSION),
        "config": model.config.model_dump_json(),
        "provenance": model.provenance.model_dump_json(),
        "source": model.source,
        "training_state": json.dumps(state_json),
    }
    return atomic_write_bytes(path, st_save(tensors, metadata=metadata))


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    data = path.read_bytes()
    if len(data) < 8:
        raise ModelLoadError(f"{path.name} is empty or truncated ({len(data)} bytes)")
    header_len = int.from_bytes(data[:8], "little")
    if header_len <= 0 or header_len > len(data) - 8 or data[8:9] != b"{":
        raise ModelLoadError(
            f"{path.name} is not a napari-tagan model bundle (expected a safetensors file "
            "made by napari-tagan, or an original checkpoint folder with *_net_G.pth)"
        )
    try:
        metadata = json.loads(data[8 : 8 + header_len]).get("__metadata__") or {}
        tensors = st_load(data)
    except (SafetensorError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelLoadError(
            f"{path.name} is corrupted or truncated: {str(exc).splitlines()[0]}"
        ) from exc
    return tensors, metadata


def read_bundle(path: str | os.PathLike[str], *, with_discriminator: bool = True) -> Bundle:
    """Read a ``.tagan`` bundle written by :func:`save_bundle`.

    Raises
    ------
    ModelLoadError
        Not a bundle, corrupted/truncated, from a newer format, or inconsistent weights.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}")
    tensors, meta = _read_safetensors(path)
    if meta.get("format") != BUNDLE_FORMAT:
        raise ModelLoadError(
            f"{path.name} is a safetensors file but not a napari-tagan model bundle "
            "(its metadata has no napari-tagan format entry)"
        )
    version = int(meta.get("format_version", "0"))
    if version > BUNDLE_VERSION:
        raise ModelLoadError(
            f"{path.name} uses bundle format {version}, made by a newer napari-tagan; "
            f"this version reads format {BUNDLE_VERSION} (upgrade napari-tagan)"
        )
    try:
        config_data = json.loads(meta["config"])
        schema = int(config_data.get("schema_version", 1))
        if schema > ModelConfig().schema_version:
            raise ModelLoadError(
                f"{path.name} has config schema {schema}, newer than this napari-tagan "
                f"understands ({ModelConfig().schema_version}); upgrade napari-tagan"
            )
        config = ModelConfig.model_validate(config_data)
        provenance = Provenance.model_validate_json(meta.get("provenance", "{}"))
        state_json = json.loads(meta.get("training_state", "{}"))
    except (KeyError, ValueError) as exc:
        raise ModelLoadError(f"{path.name} has unreadable metadata: {exc}") from exc

    has_d = any(k.startswith("discriminator.") for k in tensors)
    model = TAGANModel.from_config(
        config, with_discriminator=has_d and with_discriminator, initialize=False, device="meta"
    )
    model.provenance = provenance
    model.source = str(path)
    for role, net in model.networks().items():
        state = {k[len(role) + 1 :]: v for k, v in tensors.items() if k.startswith(role + ".")}
        if not state:
            raise ModelLoadError(f"{path.name} holds no weights for the {role}")
        _check_fits(net, state, f"{path.name} ({_ROLE_LETTER[role]})", [])
        net.load_state_dict(state, strict=True, assign=True)
    training_state = unpack_state(state_json, tensors) if state_json else {}
    return Bundle(model.eval(), training_state or {})


def load_model(
    path: str | os.PathLike[str],
    *,
    epoch: str | int | None = None,
    preset: str | None = None,
    with_discriminator: bool = False,
    require_segmenter: bool = False,
) -> TAGANModel:
    """Load a model from a ``.tagan`` bundle or an original checkpoint folder / ``.pth``.

    This is the one entry point the CLI and the widgets use.
    """
    p = Path(path)
    if p.is_dir() or p.suffix == ".pth":
        return load_original_checkpoint(
            p,
            epoch=epoch,
            preset=preset,
            with_discriminator=with_discriminator,
            require_segmenter=require_segmenter,
        )
    model = read_bundle(p, with_discriminator=with_discriminator).model
    if preset is not None and preset != model.config.preset:
        raise ModelLoadError(
            f"{p.name} is a {model.config.preset!r} model, but preset {preset!r} was asked for"
        )
    if require_segmenter and model.segmenter is None:
        raise ModelLoadError(f"{p.name} has no segmenter, but segmentation was asked for")
    return model


def convert_original(
    path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    epoch: str | int | None = None,
    preset: str | None = None,
) -> Path:
    """Convert an original checkpoint (G, S and D if present) to a ``.tagan`` bundle."""
    model = load_original_checkpoint(path, epoch=epoch, preset=preset, with_discriminator=True)
    return save_bundle(model, output)
