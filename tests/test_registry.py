"""Manifests, sha256 verification, pins, and resumable pulls from a local HTTP server."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from pathlib import Path

import pytest
from nomarr.models.manifest import ManifestError, load_manifest, parse_manifest
from nomarr.models.registry import ModelError, Registry

from . import fixture_models as fx


class _Server(http.server.ThreadingHTTPServer):
    files: dict[str, bytes]
    cut_after: int | None  # first full GET is cut after this many bytes (simulates a dropped link)
    requests: list[tuple[str, str | None]]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *a) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        data = self.server.files.get(self.path)
        rng = self.headers.get("Range")
        self.server.requests.append((self.path, rng))
        if data is None:
            self.send_error(404)
            return
        start = 0
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.server.cut_after is not None and not rng:
            self.wfile.write(body[: self.server.cut_after])
            self.wfile.flush()
            self.server.cut_after = None
            self.connection.shutdown(2)
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.files, srv.cut_after, srv.requests = {}, None, []
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


HEAD_MANIFEST = """
schema = 1
id = "fixture-head-1"
kind = "head"
name = "fixture head"
licence = "CC0-1.0"
[namespace]
framework = "onnx"
embedder = "musicnn"
embedder_id = "msd-1"
model = "fixture"
model_id = "1"
[[files]]
name = "head.onnx"
role = "model"
url = "{url}"
{sha}
size = {size}
[input]
frontend = "embedding"
input_name = "embeddings"
[outputs]
scores = "activations"
activation = "none"
labels = ["yes", "no"]
[head]
embedder = "msd-musicnn-1"
input_name = "embeddings"
"""


def _setup(
    tmp_path: Path, server, *, pin: bool, sha_override: str | None = None
) -> tuple[Registry, bytes]:
    onnx_path = tmp_path / "src.onnx"
    sha = fx.head(onnx_path)
    data = onnx_path.read_bytes()
    server.files["/m/head.onnx"] = data
    url = f"http://127.0.0.1:{server.server_address[1]}/m/head.onnx"
    sha_line = "" if pin else f'sha256 = "{sha_override or sha}"'
    user = tmp_path / "manifests"
    user.mkdir()
    fx.write_manifest(user, HEAD_MANIFEST.format(url=url, sha=sha_line, size=len(data)))
    return Registry(user_dir=user, models_dir=tmp_path / "models"), data


def test_shipped_manifests_are_valid() -> None:
    reg = Registry()
    ms = reg.manifests()
    assert not reg.errors
    assert {"msd-musicnn-1", "mtt-musicnn-1", "discogs-effnet-bsdynamic-1"} <= set(ms)
    for m in ms.values():
        if m.kind == "head":
            assert m.embedder_id in ms, m.id


def test_builtin_verifies() -> None:
    reg = Registry()
    for mid in ("msd-musicnn-1", "mtt-musicnn-1"):
        sts = reg.verify(reg.get(mid))
        assert all(s.ok for s in sts)


def test_pull_verifies_and_installs(tmp_path, server) -> None:
    reg, data = _setup(tmp_path, server, pin=False)
    m = reg.get("fixture-head-1")
    assert not reg.installed(m)
    sts = reg.pull(m)
    assert all(s.ok for s in sts)
    assert reg.require(m).read_bytes() == data


def test_interrupted_pull_resumes_with_range(tmp_path, server) -> None:
    reg, data = _setup(tmp_path, server, pin=False)
    server.cut_after = len(data) // 3
    m = reg.get("fixture-head-1")
    with pytest.raises(ModelError, match="resume"):
        reg.pull(m)
    part = reg.models_dir / m.id / "head.onnx.part"
    assert part.exists() and 0 < part.stat().st_size < len(data)
    assert not (reg.models_dir / m.id / "head.onnx").exists()
    reg.pull(m)
    assert reg.require(m).read_bytes() == data
    assert server.requests[-1][1] == f"bytes={len(data) // 3}-"


def test_hash_mismatch_refuses_download(tmp_path, server) -> None:
    reg, _ = _setup(tmp_path, server, pin=False, sha_override="0" * 64)
    m = reg.get("fixture-head-1")
    with pytest.raises(ModelError, match="expected 0000"):
        reg.pull(m)
    assert not reg.installed(m)


def test_pin_on_first_download_then_refuse_change(tmp_path, server) -> None:
    reg, data = _setup(tmp_path, server, pin=True)
    m = reg.get("fixture-head-1")
    reg.pull(m)
    pins = reg.pins(m)
    assert pins == {"head.onnx": hashlib.sha256(data).hexdigest()}
    # the file is later replaced on disk: refused, naming path and expected hash
    path = reg.file_path(m, m.model_file)
    path.write_bytes(data[:-10] + b"0123456789")
    reg2 = Registry(user_dir=tmp_path / "manifests", models_dir=tmp_path / "models")
    with pytest.raises(ModelError, match=pins["head.onnx"]):
        reg2.require(reg2.get("fixture-head-1"))


def test_download_404_is_a_clear_error(tmp_path, server) -> None:
    reg, _ = _setup(tmp_path, server, pin=False)
    server.files.clear()
    with pytest.raises(ModelError, match="HTTP 404"):
        reg.pull(reg.get("fixture-head-1"))


def test_unreachable_server_is_a_clear_error(tmp_path, server) -> None:
    reg, _ = _setup(tmp_path, server, pin=False)
    server.shutdown()
    server.server_close()
    with pytest.raises(ModelError, match="download of"):
        reg.pull(reg.get("fixture-head-1"))


@pytest.mark.parametrize(
    "patch, msg",
    [
        ({"kind": "banana"}, "kind"),
        ({"id": "Bad_Id"}, "id"),
        (
            {
                "namespace": {
                    "framework": "onnx",
                    "embedder": "a_b",
                    "embedder_id": "1",
                    "model": "m",
                    "model_id": "1",
                }
            },
            "no underscores",
        ),
        ({"files": [{"name": "../x.onnx", "url": "http://x"}]}, "plain file name"),
        ({"files": [{"name": "x.onnx", "url": "http://x", "sha256": "abc"}]}, "64 hex"),
        ({"schema": 2}, "schema"),
    ],
)
def test_invalid_manifests_are_refused(patch: dict, msg: str) -> None:
    base = {
        "schema": 1,
        "id": "ok-1",
        "kind": "embedder",
        "namespace": {
            "framework": "onnx",
            "embedder": "e",
            "embedder_id": "1",
            "model": "m",
            "model_id": "1",
        },
        "files": [{"name": "x.onnx", "url": "http://x"}],
        "input": {"sample_rate": 16000},
        "outputs": {},
    }
    base.update(patch)
    with pytest.raises(ManifestError, match=msg):
        parse_manifest(base)


def test_manifest_id_must_match_file_name(tmp_path) -> None:
    p = tmp_path / "other.toml"
    p.write_text(Path(Registry().get("msd-musicnn-1").path).read_text())
    with pytest.raises(ManifestError, match="file name"):
        load_manifest(p)


def test_import_essentia_json_installs_manifest_and_file(tmp_path) -> None:
    meta = {
        "name": "Fixture happy",
        "type": "Music classification",
        "link": "https://example.invalid/x.pb",
        "version": "1",
        "description": "classification of music by mood (happy)",
        "author": "test",
        "email": "",
        "release_date": "2022-08-25",
        "framework": "tensorflow",
        "framework_version": "2.4.0",
        "classes": ["happy", "non_happy"],
        "model_types": ["frozen_model", "onnx"],
        "dataset": {"name": "fixture", "size": "10", "metrics": {}},
        "schema": {
            "inputs": [{"name": "model/Placeholder", "type": "float", "shape": [200]}],
            "outputs": [
                {
                    "name": "model/Softmax",
                    "type": "float",
                    "shape": [2],
                    "op": "Softmax",
                    "output_purpose": "predictions",
                }
            ],
        },
        "citation": "",
        "inference": {
            "sample_rate": 16000,
            "algorithm": "TensorflowPredict2D",
            "embedding_model": {
                "algorithm": "TensorflowPredictMusiCNN",
                "model_name": "msd-musicnn-1",
                "link": "https://essentia.upf.edu/models/x.pb",
            },
        },
    }
    jp = tmp_path / "mood_fixture-msd-musicnn-1.json"
    jp.write_text(json.dumps(meta))
    onnx_file = tmp_path / "mood_fixture-msd-musicnn-1.onnx"
    fx.head(onnx_file)
    reg = Registry(user_dir=tmp_path / "manifests", models_dir=tmp_path / "models")
    m = reg.import_essentia(jp, onnx_file)
    assert m.kind == "head" and m.labels == ["happy", "non_happy"]
    reg2 = Registry(user_dir=tmp_path / "manifests", models_dir=tmp_path / "models")
    assert reg2.require(reg2.get(m.id)).exists()


def test_import_rejects_non_essentia_json(tmp_path) -> None:
    jp = tmp_path / "x.json"
    jp.write_text('{"hello": 1}')
    with pytest.raises(ModelError):
        Registry(user_dir=tmp_path / "m").import_essentia(jp)
