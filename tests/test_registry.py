"""Model registry: fetch, hash check, cache hits and offline use, from a loopback server."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import threading

import numpy as np
import pytest
import torch

from napari_tagan.cli import main
from napari_tagan.core import load_model, predict, save_bundle
from napari_tagan.core.errors import ModelLoadError
from napari_tagan.core.registry import (
    fetch,
    is_cached,
    load_named_model,
    load_registry,
    model_dir,
    resolve_model,
)

from conftest import tiny_model


class _Server:
    """Serves ``files`` (path → bytes) on 127.0.0.1 and counts the requests per path."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files, self.requests = files, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append(self.path)
                body = outer.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def server():
    s = _Server({})
    yield s
    s.stop()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_registry(path, entries) -> str:
    path.write_text(
        json.dumps({"format": "napari-tagan-registry", "registry_version": 1, "models": entries})
    )
    return str(path)


@pytest.fixture
def shared(tmp_path, monkeypatch, server):
    """A bundle and an original checkpoint folder on the server, and a lab registry."""
    monkeypatch.setenv("NAPARI_TAGAN_CACHE", str(tmp_path / "cache"))
    model = tiny_model("axons")
    bundle = save_bundle(model, tmp_path / "src" / "m.tagan").read_bytes()
    originals = {}
    for letter, net in (("G", model.generator), ("S", model.segmenter)):
        buf = io.BytesIO()
        torch.save(net.state_dict(), buf)
        originals[f"7_net_{letter}.pth"] = buf.getvalue()
    server.files["/m.tagan"] = bundle
    server.files.update({f"/orig/{k}": v for k, v in originals.items()})
    entries = [
        {"name": "lab-axons", "kind": "bundle", "preset": "axons", "description": "tiny",
         "url": f"{server.url}/m.tagan", "sha256": _sha(bundle), "size": len(bundle)},
        {"name": "lab-orig", "kind": "original", "preset": "axons",
         "files": [{"name": k, "url": f"{server.url}/orig/{k}", "sha256": _sha(v)}
                   for k, v in originals.items()]},
    ]  # fmt: skip
    registry = _write_registry(tmp_path / "lab.json", entries)
    monkeypatch.setenv("NAPARI_TAGAN_REGISTRY", registry)
    return model, bundle


def _same_prediction(a, b) -> None:
    image = np.random.default_rng(1).gamma(2.0, 20.0, (24, 24)).astype(np.float32)
    ra, rb = predict(a, image), predict(b, image)
    np.testing.assert_array_equal(ra.synthetic_sted, rb.synthetic_sted)
    np.testing.assert_array_equal(ra.segmentation, rb.segmentation)


def test_fetch_bundle_verifies_caches_and_works_offline(shared, server):
    model, _ = shared
    path = fetch("lab-axons")
    assert path.name == "lab-axons.tagan" and path.is_file()
    _same_prediction(model, load_model(path))
    assert server.requests == ["/m.tagan"]
    assert fetch("lab-axons") == path  # cache hit: no second request
    assert server.requests == ["/m.tagan"]
    server.stop()  # offline: the cached copy still resolves
    assert resolve_model("lab-axons") == path


def test_fetch_original_checkpoint_folder(shared, server):
    model, _ = shared
    folder = fetch("lab-orig")
    assert sorted(p.name for p in folder.iterdir()) == ["7_net_G.pth", "7_net_S.pth"]
    with pytest.raises(ModelLoadError, match="several presets fit"):
        load_model(folder)  # original weights alone do not name their preset
    _same_prediction(model, load_named_model("lab-orig"))


def test_corrupted_download_is_refused_and_removed(shared, server):
    server.files["/m.tagan"] = server.files["/m.tagan"][:-10] + b"0123456789"
    entry = load_registry()["lab-axons"]
    with pytest.raises(ModelLoadError, match="does not match the registry's SHA-256"):
        fetch(entry)
    assert not is_cached(entry)
    assert list(model_dir(entry).iterdir()) == []  # nor any partial download


def test_offline_and_not_cached_is_one_clear_line(shared, server):
    server.stop()
    with pytest.raises(ModelLoadError) as err:
        fetch("lab-axons")
    message = str(err.value)
    assert "not in the cache" in message and "could not be downloaded" in message
    assert "\n" not in message


def test_packaged_registry_has_slots_without_invented_hashes():
    entries = load_registry(["napari_tagan:models.json"])
    assert {"tagan-axons", "tagan-dendrites", "tagan-synprot", "tagan-saureus"} <= set(entries)
    for entry in entries.values():
        assert entry.citation and "10.1038/s42256-023-00689-3" in entry.citation
        if not entry.available:
            with pytest.raises(ModelLoadError, match="no download address"):
                fetch(entry)


def test_resolve_model_prefers_paths_and_names_unknown_models(shared, tmp_path):
    assert resolve_model(tmp_path / "lab.json") == tmp_path / "lab.json"
    with pytest.raises(ModelLoadError, match="no model named 'nope'.*known: .*lab-axons"):
        resolve_model("nope")
    with pytest.raises(ModelLoadError, match="model not found"):
        resolve_model(tmp_path / "missing.tagan")


def test_a_later_registry_replaces_an_entry_and_bad_entries_are_named(shared, tmp_path):
    other = _write_registry(tmp_path / "b.json", [{"name": "lab-axons", "description": "mine"}])
    entries = load_registry([str(tmp_path / "lab.json"), other])
    assert entries["lab-axons"].description == "mine" and not entries["lab-axons"].available
    bad = _write_registry(
        tmp_path / "c.json", [{"name": "x", "url": "http://h/x", "sha256": "12"}]
    )
    with pytest.raises(ModelLoadError, match="entry x"):
        load_registry([bad])


def test_remote_registry_is_read_and_kept_for_offline_use(shared, server, tmp_path, monkeypatch):
    server.files["/reg.json"] = (tmp_path / "lab.json").read_bytes()
    monkeypatch.setenv("NAPARI_TAGAN_REGISTRY", f"{server.url}/reg.json")
    assert "lab-orig" in load_registry()
    server.stop()
    assert "lab-orig" in load_registry()  # the copy read last time


def test_cli_models_list_and_fetch(shared, capsys):
    assert main(["models", "fetch", "lab-axons", "--no-progress"]) == 0
    assert capsys.readouterr().out.strip().endswith("lab-axons.tagan")
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert any(line.startswith("lab-axons") and "cached" in line for line in out.splitlines())
    assert any(
        line.startswith("tagan-axons") and "no address" in line for line in out.splitlines()
    )
    assert main(["models", "fetch", "nope"]) == 2
    assert "no model named 'nope'" in capsys.readouterr().err
