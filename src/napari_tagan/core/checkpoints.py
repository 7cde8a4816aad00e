"""Model bundles (``.tagan``), the one entry point that loads any model, and fine-tune loaders.

A bundle is one safetensors file whose tensors are the weights of G, S and optionally D
plus any training state, and whose JSON metadata holds the config, provenance and
training state structure. Loading never unpickles. Original TA-GAN checkpoint folders are
read by :mod:`.original_checkpoints`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .config import ModelConfig
from .errors import InputError, ModelLoadError
from .io import atomic_write_bytes
from .model import Provenance, TAGANModel
from .original_checkpoints import (
    AmbiguousPresetError,
    NetworkGuess,
    check_fits,
    config_for_original,
    describe_layout_difference,
    find_original_checkpoint,
    fitting_presets,
    infer_discriminator,
    infer_network,
    layout,
    load_original_checkpoint,
    original_epochs,
    read_state_dict,
)

BUNDLE_FORMAT = "napari-tagan-model"
BUNDLE_VERSION = 1
BUNDLE_SUFFIX = ".tagan"
ROLES = ("generator", "segmenter", "discriminator")
_ROLE_LETTER = {"generator": "G", "segmenter": "S", "discriminator": "D"}

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
        check_fits(net, state, f"{path.name} ({_ROLE_LETTER[role]})", [])
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


# --------------------------------------------------------------------------- fine-tuning

#: Config fields that decide the networks' layouts: a fine-tune cannot change them.
ARCHITECTURE_FIELDS = (
    "generator",
    "segmenter",
    "discriminator",
    "n_layers_d",
    "image_channels",
    "input_nc",
    "output_nc",
    "class_names",
    "ngf",
    "nsf",
    "ndf",
    "norm",
)


def model_for_fine_tuning(
    path: str | os.PathLike[str],
    *,
    preset: str | None = None,
    epoch: str | int | None = None,
    overrides: dict[str, Any] | None = None,
) -> TAGANModel:
    """Load a bundle or original checkpoint (G, S and D if present) to train further.

    ``overrides`` may change training fields (losses, lr, schedule, batch, crop, ...)
    but not the architecture, which the weights fix.
    """
    model = load_model(path, preset=preset, epoch=epoch, with_discriminator=True)
    if overrides:
        model.config = model.config.with_training_overrides(**overrides)
    return model


def _segmenter_state(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """S's weights from a bundle, a ``*_net_S.pth`` file or a folder holding one."""
    if path.is_dir():
        candidates = sorted(path.glob("pretrained_net_S.pth")) or sorted(path.glob("*_net_S.pth"))
        if not candidates:
            raise ModelLoadError(f"no *_net_S.pth segmenter checkpoint in {path}")
        path = candidates[0]
    if path.suffix == ".pth":
        return read_state_dict(path), path.name
    other = read_bundle(path, with_discriminator=False).model
    if other.segmenter is None:
        raise ModelLoadError(f"{path.name} holds no segmenter")
    return other.segmenter.state_dict(), path.name


def load_pretrained_segmenter(model: TAGANModel, path: str | os.PathLike[str]) -> TAGANModel:
    """Put a pretrained S into ``model`` (the live preset trains with it frozen).

    ``path`` is a ``.tagan`` bundle with a segmenter, an original ``*_net_S.pth`` file
    (e.g. ``pretrained_net_S.pth``) or a checkpoint folder holding one.
    """
    if model.segmenter is None:
        raise InputError("this model has no segmenter to load weights into")
    state, name = _segmenter_state(Path(path))
    try:
        model.segmenter.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(
            f"{name} does not fit the {model.config.preset!r} segmenter "
            f"({model.config.segmenter}, {model.config.n_classes} classes): "
            f"{str(exc).splitlines()[0]}"
        ) from exc
    return model


__all__ = [
    "ARCHITECTURE_FIELDS",
    "AmbiguousPresetError",
    "Bundle",
    "NetworkGuess",
    "config_for_original",
    "convert_original",
    "describe_layout_difference",
    "find_original_checkpoint",
    "fitting_presets",
    "infer_discriminator",
    "infer_network",
    "layout",
    "load_model",
    "load_original_checkpoint",
    "load_pretrained_segmenter",
    "model_for_fine_tuning",
    "original_epochs",
    "read_bundle",
    "read_state_dict",
    "save_bundle",
]
