"""The ``nomarr`` command as a user runs it (a real subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def nomarr(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nomarr.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


@pytest.mark.parametrize(
    "cmd", [[], ["analyze"], ["doctor"], ["models"], ["models", "pull"], ["models", "import"]]
)
def test_every_command_has_help(cmd) -> None:
    r = nomarr(*cmd, "--help")
    assert r.returncode == 0 and "usage: nomarr" in r.stdout


def test_analyze_json(make_audio) -> None:
    path = make_audio("song.flac", seconds=8.0)
    r = nomarr("analyze", str(path), "--json", "--embedding")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    m = doc["models"]["msd-musicnn-1"]
    assert m["embedding_dim"] == 200 and len(m["embedding"]) == 200 and len(m["scores"]) == 50
    assert m["provider"] == "CPUExecutionProvider" and len(m["provenance"]) == 12
    assert set(m["tiers"].values()) <= {"high", "medium", "low"}
    keys = [k for k in doc["tags"] if k.startswith("nom:onnx_musicnn_msd-1_msd50_1_")]
    assert len(keys) == 50 * 2 + 1
    assert doc["timing"]["total"] > 0


def test_analyze_text_output(make_audio) -> None:
    r = nomarr("analyze", str(make_audio("s.ogg", seconds=4.0)), "--top", "3")
    assert r.returncode == 0, r.stderr
    assert "msd-musicnn-1" in r.stdout and "real time" in r.stdout


def test_bad_file_one_line_error(tmp_path) -> None:
    p = tmp_path / "x.flac"
    p.write_text("not audio")
    r = nomarr("analyze", str(p))
    assert r.returncode == 1 and r.stderr.startswith("nomarr: error:") and "x.flac" in r.stderr
    assert "Traceback" not in r.stderr


def test_bad_profile() -> None:
    r = nomarr("analyze", "x.mp3", "--profile", "wrong")
    assert r.returncode == 1 and "unknown profile" in r.stderr


def test_models_list_info_verify() -> None:
    r = nomarr("models", "list", "--json")
    rows = {x["id"]: x for x in json.loads(r.stdout)}
    assert rows["msd-musicnn-1"]["builtin"] and rows["msd-musicnn-1"]["installed"]
    assert not rows["discogs-effnet-bsdynamic-1"]["installed"]
    info = json.loads(nomarr("models", "info", "msd-musicnn-1", "--json").stdout)
    assert info["tag_prefix"] == "nom:onnx_musicnn_msd-1_msd50_1_" and len(info["labels"]) == 50
    v = nomarr("models", "verify", "--json")
    assert v.returncode == 0 and all(x["status"] == "ok" for x in json.loads(v.stdout))
    assert nomarr("models", "info", "nope").returncode == 1


def test_doctor_json() -> None:
    r = nomarr("doctor", "--json")
    doc = json.loads(r.stdout)
    assert "CPUExecutionProvider" in doc["platform"]["providers"]
    builtin = {m["id"]: m for m in doc["models"]}["msd-musicnn-1"]
    assert builtin["verified"] and builtin["provider"] and builtin["reason"]
    assert r.returncode == 0, doc["problems"]
