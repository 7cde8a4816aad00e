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
from .guards import (
    check_finite_range,
    check_finite_weights,
    check_not_input,
    check_overwrite,
    conform_weights,
)
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
    check_finite_weights(tensors, f"{Path(path).name} ({model.config.preset})")
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


#: Largest bundle header read (the JSON metadata): real ones are a few hundred kB.
MAX_HEADER_BYTES = 100 * 1024 * 1024


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata, after checking the header (so a huge foreign file is not read)."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(9)
        if len(head) < 9:
            raise ModelLoadError(f"{path.name} is empty or truncated ({size} bytes)")
        header_len = int.from_bytes(head[:8], "little")
        if not 0 < header_len <= min(size - 8, MAX_HEADER_BYTES) or head[8:9] != b"{":
            raise ModelLoadError(
                f"{path.name} is not a napari-tagan model bundle (expected a safetensors "
                "file made by napari-tagan, or an original checkpoint folder with *_net_G.pth)"
            )
        try:
            header = json.loads(head[8:] + fh.read(header_len - 1))
            metadata = header.get("__metadata__") or {}
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, RecursionError) as exc:
            raise ModelLoadError(f"{path.name} has a corrupted header: {exc}") from None
        if not isinstance(metadata, dict) or "format" not in metadata:
            raise ModelLoadError(
                f"{path.name} is a safetensors file but not a napari-tagan model bundle "
                "(its metadata has no napari-tagan format entry)"
            )
        fh.seek(0)
        data = fh.read()
    try:
        tensors = st_load(data)
    except (SafetensorError, ValueError, TypeError, RuntimeError) as exc:
        raise ModelLoadError(
            f"{path.name} is corrupted or truncated: {str(exc).splitlines()[0]}"
        ) from None
    return tensors, metadata


def _bundle_version(path: Path, meta: Mapping[str, Any]) -> int:
    try:
        return int(meta.get("format_version", "0"))
    except (TypeError, ValueError):
        raise ModelLoadError(
            f"{path.name} has an unreadable format_version {meta.get('format_version')!r}; "
            "it is not a valid napari-tagan bundle"
        ) from None


def _bundle_metadata(path: Path, meta: Mapping[str, Any]) -> tuple[ModelConfig, Any, Any]:
    """Config, provenance and training-state JSON, each checked for its type."""
    try:
        config_data = json.loads(meta["config"])
        if not isinstance(config_data, dict):
            raise ValueError(f"config is a JSON {type(config_data).__name__}, not an object")
        schema = int(config_data.get("schema_version", 1))
        if schema > ModelConfig().schema_version:
            raise ModelLoadError(
                f"{path.name} has config schema {schema}, newer than this napari-tagan "
                f"understands ({ModelConfig().schema_version}); upgrade napari-tagan"
            )
        config = ModelConfig.model_validate(config_data)
        provenance = Provenance.model_validate_json(meta.get("provenance", "{}"))
        state_json = json.loads(meta.get("training_state", "{}"))
    except (KeyError, ValueError, TypeError, RecursionError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelLoadError(f"{path.name} has unreadable metadata: {first}") from None
    for field_name in ("out_range", "mask_range"):
        source = config.normalization if field_name == "out_range" else config
        check_finite_range(*getattr(source, field_name), f"{path.name}'s {field_name}")
    return config, provenance, state_json


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
    version = _bundle_version(path, meta)
    if version > BUNDLE_VERSION:
        raise ModelLoadError(
            f"{path.name} uses bundle format {version}, made by a newer napari-tagan; "
            f"this version reads format {BUNDLE_VERSION} (upgrade napari-tagan)"
        )
    config, provenance, state_json = _bundle_metadata(path, meta)

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
        origin = f"{path.name} ({_ROLE_LETTER[role]})"
        check_fits(net, state, origin, [])
        net.load_state_dict(
            conform_weights(net.state_dict(), state, origin), strict=True, assign=True
        )
    training_state = _training_state(path, state_json, tensors)
    return Bundle(model.eval(), training_state or {})


def _training_state(path: Path, state_json: Any, tensors: Mapping[str, torch.Tensor]) -> dict:
    try:
        state = unpack_state(state_json, tensors) if state_json else {}
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
        raise ModelLoadError(
            f"{path.name} has an unreadable training state ({type(exc).__name__}: {exc}); "
            "load it for prediction or re-save it"
        ) from None
    if not isinstance(state, dict):
        raise ModelLoadError(f"{path.name} has a training state that is not a mapping")
    return state


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
    overwrite: bool = False,
) -> Path:
    """Convert an original checkpoint (G, S and D if present) to a ``.tagan`` bundle.

    ``output`` may not be one of the files read, nor an existing file unless ``overwrite``.
    """
    out = Path(output)
    if out.suffix.lower() == ".pth":
        raise InputError(
            f"{out.name}: a bundle is not a .pth checkpoint; name the output {out.stem}.tagan"
        )
    check_not_input(out, [path, *find_original_checkpoint(path, epoch).values()])
    check_overwrite([out], overwrite)
    model = load_original_checkpoint(path, epoch=epoch, preset=preset, with_discriminator=True)
    return save_bundle(model, out)


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
    state = conform_weights(model.segmenter.state_dict(), state, name)
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
