"""Models people can share: a registry of named models, fetched once and cached.

The registry is a small versioned JSON file shipped in the package (``models.json``),
extended by the files or URLs listed in ``NAPARI_TAGAN_REGISTRY`` (separated by ``;``;
a later entry of the same name replaces an earlier one, so a lab can pin its own models).
An entry is either one of our ``.tagan`` bundles or an original TA-GAN checkpoint folder
(``{epoch}_net_G.pth`` / ``{epoch}_net_S.pth``, read with ``weights_only=True``).

Downloads go through :mod:`pooch` into ``NAPARI_TAGAN_CACHE`` (default: the platform
cache, ``pooch.os_cache("napari-tagan")``), are verified against the entry's SHA-256
(a download that does not match is refused and removed), and are never repeated when the
cached file is present and matches: a cached model works offline. An entry without an
address is a documented slot (its ``note`` says where the weights live); no hash is ever
guessed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import ModelLoadError
from .io import atomic_write_bytes

REGISTRY_FORMAT = "napari-tagan-registry"
REGISTRY_VERSION = 1
REGISTRY_ENV = "NAPARI_TAGAN_REGISTRY"
CACHE_ENV = "NAPARI_TAGAN_CACHE"
_ORIGINAL_FILE = re.compile(r"(\w+_net_[GSD]|pretrained_net_S)\.pth")

if TYPE_CHECKING:
    from .model import TAGANModel

Progress = Callable[[int, int], None]


class RegistryFile(BaseModel):
    """One downloadable file of an entry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[\w.+-]+$")  # a bare file name: nothing escapes the cache
    url: str
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")
    size: int | None = Field(None, ge=0)


class RegistryEntry(BaseModel):
    """A named model: where to fetch it, how to check it, and whom to cite."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[\w.+-]+$")
    version: str = Field("1", pattern=r"^[\w.+-]+$")
    kind: Literal["bundle", "original"] = "bundle"
    preset: str | None = None
    description: str = ""
    homepage: str | None = None
    licence: str | None = None
    citation: str | None = None
    parent: str | None = None
    files: tuple[RegistryFile, ...] = ()
    note: str | None = None
    origin: str = Field("", exclude=True)  # which registry file defined it (for messages)

    @model_validator(mode="before")
    @classmethod
    def _one_file_shorthand(cls, data: Any) -> Any:
        # a bundle entry may give url/sha256/size directly instead of a one-item file list
        if isinstance(data, dict) and "url" in data:
            data = dict(data)
            url, sha, size = data.pop("url"), data.pop("sha256", None), data.pop("size", None)
            if url is not None:
                name = data.get("name", "model") + ".tagan"
                data["files"] = [{"name": name, "url": url, "sha256": sha, "size": size}]
        return data

    @model_validator(mode="after")
    def _check_files(self) -> RegistryEntry:
        names = [f.name for f in self.files]
        if (
            self.kind == "bundle"
            and self.files
            and (len(names) != 1 or not names[0].endswith(".tagan"))
        ):
            raise ValueError("a bundle entry has exactly one file, ending in .tagan")
        if self.kind == "original" and self.files:
            bad = [n for n in names if not _ORIGINAL_FILE.fullmatch(n)]
            if bad or not any("_net_G" in n for n in names):
                raise ValueError(
                    "an original entry's files are {epoch}_net_G.pth (required), "
                    f"{{epoch}}_net_S.pth / _net_D.pth; got {names}"
                )
        return self

    @property
    def available(self) -> bool:
        """Whether the entry has files to download (a slot has none)."""
        return bool(self.files)

    @property
    def size(self) -> int | None:
        sizes = [f.size for f in self.files]
        return None if not sizes or None in sizes else sum(sizes)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- reading


def cache_dir() -> Path:
    """Where fetched models and remote registries are kept."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    import pooch

    return Path(pooch.os_cache("napari-tagan"))


def _parse_registry(text: str, origin: str) -> list[RegistryEntry]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"model registry {origin} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != REGISTRY_FORMAT:
        raise ModelLoadError(f'model registry {origin} has no "format": "{REGISTRY_FORMAT}" entry')
    version = int(data.get("registry_version", 0))
    if version > REGISTRY_VERSION:
        raise ModelLoadError(
            f"model registry {origin} has version {version}, newer than this napari-tagan "
            f"reads ({REGISTRY_VERSION}); upgrade napari-tagan"
        )
    entries = []
    for i, raw in enumerate(data.get("models", [])):
        try:
            entries.append(RegistryEntry.model_validate({**raw, "origin": origin}))
        except (ValidationError, TypeError) as exc:
            first = str(exc).splitlines()[-1].strip() if isinstance(exc, ValidationError) else exc
            name = raw.get("name", f"#{i}") if isinstance(raw, dict) else f"#{i}"
            raise ModelLoadError(f"model registry {origin}: entry {name}: {first}") from None
    return entries


def _read_remote_registry(url: str) -> str:
    """A registry at a URL; the last copy read is kept for offline use."""
    import urllib.error
    import urllib.request

    copy = cache_dir() / "registries" / (hashlib.sha256(url.encode()).hexdigest()[:16] + ".json")
    try:
        with urllib.request.urlopen(url, timeout=15) as response:
            text = response.read().decode("utf-8")
    except (urllib.error.URLError, OSError, UnicodeDecodeError) as exc:
        if copy.is_file():
            return copy.read_text(encoding="utf-8")
        raise ModelLoadError(
            f"model registry {url} could not be read ({exc}) and no copy is cached; "
            f"connect to the network or remove it from {REGISTRY_ENV}"
        ) from None
    atomic_write_bytes(copy, text.encode("utf-8"))
    return text


def registry_sources() -> list[str]:
    """The packaged registry, then the user's/lab's from ``NAPARI_TAGAN_REGISTRY``."""
    extra = [s.strip() for s in os.environ.get(REGISTRY_ENV, "").split(";") if s.strip()]
    return ["napari_tagan:models.json", *extra]


def _read_source(source: str) -> str:
    if source == "napari_tagan:models.json":
        return resources.files("napari_tagan").joinpath("models.json").read_text("utf-8")
    if source.startswith(("http://", "https://")):
        return _read_remote_registry(source)
    path = Path(source).expanduser()
    if not path.is_file():
        raise ModelLoadError(f"model registry not found: {path} (listed in {REGISTRY_ENV})")
    return path.read_text(encoding="utf-8")


def load_registry(sources: list[str] | None = None) -> dict[str, RegistryEntry]:
    """Name → entry, later sources replacing earlier entries of the same name."""
    entries: dict[str, RegistryEntry] = {}
    for source in registry_sources() if sources is None else sources:
        for entry in _parse_registry(_read_source(source), source):
            entries[entry.name] = entry
    return entries


def get_entry(name: str, registry: dict[str, RegistryEntry] | None = None) -> RegistryEntry:
    """The entry called ``name``; a clear error listing the known names otherwise."""
    registry = load_registry() if registry is None else registry
    if name not in registry:
        known = ", ".join(sorted(registry)) or "none"
        raise ModelLoadError(
            f"no model named {name!r} in the registry (known: {known}); "
            "`napari-tagan models list` shows them"
        )
    return registry[name]


# --------------------------------------------------------------------------- fetching


def model_dir(entry: RegistryEntry) -> Path:
    """The cache folder of one entry's version."""
    return cache_dir() / "models" / entry.name / entry.version


def model_path(entry: RegistryEntry) -> Path:
    """What :func:`~napari_tagan.core.load_model` opens: the bundle file or the folder."""
    folder = model_dir(entry)
    return folder / entry.files[0].name if entry.kind == "bundle" and entry.files else folder


def is_cached(entry: RegistryEntry) -> bool:
    """Whether every file of the entry is in the cache (hashes are checked on fetch)."""
    return entry.available and all((model_dir(entry) / f.name).is_file() for f in entry.files)


class _ProgressAdapter:
    """pooch's progress-bar protocol, reported to a ``(done, total)`` callback."""

    def __init__(self, callback: Progress) -> None:
        self.callback, self.total, self.n = callback, 0, 0

    def update(self, chunk: int) -> None:
        self.n += chunk
        self.callback(self.n, self.total)

    def reset(self) -> None:
        self.n = 0

    def close(self) -> None:
        self.callback(self.total, self.total)


def _download(entry: RegistryEntry, file: RegistryFile, progress: bool | Progress) -> None:
    import pooch
    import requests

    bar = _ProgressAdapter(progress) if callable(progress) else bool(progress)
    try:
        pooch.retrieve(
            file.url,
            known_hash=f"sha256:{file.sha256.lower()}",
            fname=file.name,
            path=model_dir(entry),
            progressbar=bar,
        )
    except ValueError as exc:  # pooch: hash mismatch; its temporary file is already gone
        raise ModelLoadError(
            f"{entry.name}: {file.name} downloaded from {file.url} does not match the "
            f"registry's SHA-256 (refused and removed): {str(exc).splitlines()[0]}"
        ) from None
    except (requests.RequestException, OSError) as exc:
        raise ModelLoadError(
            f"{entry.name} is not in the cache ({model_dir(entry)}) and {file.url} could "
            f"not be downloaded ({type(exc).__name__}); connect to the network, or "
            "download it by hand and pass the file with --model PATH"
        ) from None


def fetch(
    name: str | RegistryEntry,
    *,
    progress: bool | Progress = False,
    registry: dict[str, RegistryEntry] | None = None,
) -> Path:
    """Download a registered model if needed; return the path ``load_model`` opens."""
    entry = name if isinstance(name, RegistryEntry) else get_entry(name, registry)
    if not entry.available:
        where = f" ({entry.homepage})" if entry.homepage else ""
        raise ModelLoadError(
            f"{entry.name} has no download address in the registry yet{where}: "
            f"{entry.note or 'download it by hand'}"
        )
    for file in entry.files:
        _download(entry, file, progress)
    return model_path(entry)


def resolve_model(
    name_or_path: str | os.PathLike[str], *, progress: bool | Progress = False
) -> Path:
    """A model path as given, or a registry name fetched (once) into the cache.

    An existing file or folder always wins over a registry entry of the same name.
    """
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    text = str(name_or_path)
    if re.fullmatch(r"[\w.+-]+", text) and not text.endswith((".tagan", ".pth", ".zip")):
        return fetch(text, progress=progress)
    raise ModelLoadError(
        f"model not found: {path} (neither a file, a folder nor a registry name; "
        "`napari-tagan models list` shows the registry)"
    )


def load_named_model(
    name_or_path: str | os.PathLike[str],
    *,
    preset: str | None = None,
    progress: bool | Progress = False,
    **kwargs: Any,
) -> TAGANModel:
    """:func:`~napari_tagan.core.load_model` of a path or a registry name.

    A registered original checkpoint is loaded under its entry's preset unless ``preset``
    says otherwise (original weights alone cannot tell axons from S. aureus).
    """
    from .checkpoints import load_model

    path = resolve_model(name_or_path, progress=progress)
    if preset is None and not Path(name_or_path).expanduser().exists():
        preset = get_entry(str(name_or_path)).preset
    if path.suffix == ".zip":
        from .bioimageio import import_bioimageio, is_bioimageio_package

        if is_bioimageio_package(path):
            model = import_bioimageio(path)
            if preset is not None and preset != model.config.preset:
                raise ModelLoadError(
                    f"{path.name} is a {model.config.preset!r} model, not {preset!r}"
                )
            return model
    return load_model(path, preset=preset, **kwargs)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file, for writing registry entries (``napari-tagan models hash``)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
