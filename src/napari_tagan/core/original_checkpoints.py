"""Original TA-GAN checkpoints: folders of ``{epoch}_net_G.pth`` (and ``_net_S``/``_net_D``).

Bare ``state_dict``s read with ``torch.load(weights_only=True)``, so a file that holds
anything but tensors and plain containers is refused without running code. The
architecture is inferred from the weights' layout (:func:`infer_network`) and matched
against the presets.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import PRESET_NAMES, ModelConfig, NormalizationSpec, preset_config
from .errors import ArchitectureMismatchError, ModelLoadError
from .guards import conform_weights
from .model import Provenance, TAGANModel
from .networks import build_generator, build_segmenter

Layout = dict[str, tuple[int, ...]]


class AmbiguousPresetError(ModelLoadError):
    """Several presets fit a checkpoint; the caller must name one (``candidates``)."""

    def __init__(self, origin: str, candidates: list[str]) -> None:
        self.origin, self.candidates = origin, candidates
        super().__init__(
            f"several presets fit {origin} ({', '.join(candidates)}); they differ in "
            "normalization, so name the preset"
        )


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


def _looks_like_pytorch(path: Path) -> bool:
    """A zip archive (torch.save since 1.6) or a legacy pickle (protocol 2+ opcode)."""
    with path.open("rb") as fh:
        head = fh.read(4)
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


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
    if not _looks_like_pytorch(path):
        raise ModelLoadError(
            f"{path.name} is not a readable PyTorch checkpoint: it was not saved by "
            "torch.save (expected e.g. latest_net_G.pth from TA-GAN)"
        )
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


def check_fits(
    net: nn.Module, state: Mapping[str, torch.Tensor], what: str, fits: list[str]
) -> None:
    """Raise :class:`ArchitectureMismatchError` unless ``state`` has ``net``'s layout."""
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
            raise AmbiguousPresetError(origin, specific)
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
    if preset == "live":
        # the original live test input: 8-bit after min-max (data/live_test_dataset.py)
        overrides["normalization"] = NormalizationSpec(kind="minmax8")
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
        check_fits(net, state, files[role].name, fits)
        state = conform_weights(net.state_dict(), state, files[role].name)
        net.load_state_dict(state, strict=True, assign=True)
    model.source = f"{files['generator'].parent} (epoch {files['generator'].name[:-10]})"
    model.provenance = Provenance.new(source=model.source)
    return model.eval()
