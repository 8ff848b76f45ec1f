"""``nomarr serve`` configuration: file < environment < flags, validation, the token file."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from nomarr import config, identity
from nomarr.cli import build_parser, main
from nomarr.cli.serve import setting_flags, settings_markdown

from tests.conftest import REPO

# One non-default value per setting, as each layer spells it: (environment, TOML, flags, expected).
# Flags of None: the setting has no flag (the token never goes on a command line). The test below
# fails when a field is added to ServeConfig without a row here.
SAMPLES: dict[str, tuple[str, str, list[str] | None, Any]] = {
    "libraries": (
        '[{"path": "/m/a", "watch": "poll"}, {"path": "/m/b", "watch": "off"}]',
        '[[libraries]]\npath = "/m/a"\nwatch = "poll"\n[[libraries]]\npath = "/m/b"\nwatch = "off"',
        ["--library", "/m/a", "--library", "/m/b", "--watch", "poll"],
        None,  # compared by _libs below: the flags give both roots the one --watch
    ),
    "db": ("/x/n.db", '"/x/n.db"', ["--db", "/x/n.db"], "/x/n.db"),
    "host": ("127.0.0.2", '"127.0.0.2"', ["--host", "127.0.0.2"], "127.0.0.2"),
    "port": ("9001", "9001", ["--port", "9001"], 9001),
    "auth": ("none", '"none"', ["--no-auth"], "none"),
    "token": ("t" * 20, '"' + "t" * 20 + '"', None, "t" * 20),
    "zeroconf": ("off", "false", ["--no-zeroconf"], False),
    "max_upload_mb": ("7", "7", ["--max-upload-mb", "7"], 7),
    "max_json_kb": ("1", "1", ["--max-json-kb", "1"], 1),
    "max_concurrent_analyses": ("5", "5", ["--max-concurrent-analyses", "5"], 5),
    "log_level": ("DEBUG", '"debug"', ["--log-level", "debug"], "debug"),
    "profile": ("fast", '"fast"', ["--profile", "fast"], "fast"),
    "models": ("a, b", '["a", "b"]', ["--model", "a", "--model", "b"], ["a", "b"]),
    "write_tags": ("0", "false", ["--no-write"], False),
    "mood_field": ("yes", "true", ["--mood-field"], True),
    "scan_on_start": ("false", "false", ["--no-scan-on-start"], False),
    "workers": ("3", "3", ["--workers", "3"], 3),
    "cpu_share": ("0.25", "0.25", ["--cpu-share", "0.25"], 0.25),
    "nice": ("5", "5", ["--nice", "5"], 5),
    "idle_unload_s": ("30", "30", ["--idle-unload-s", "30"], 30.0),
    "vector_index": ("no", "false", ["--no-vector-index"], False),
    "console": ("off", "false", ["--no-console"], False),
    "debounce_s": ("0.5", "0.5", ["--debounce-s", "0.5"], 0.5),
    "settle_s": ("4", "4", ["--settle-s", "4"], 4.0),
    "ingest_sessions": ("2", "2", ["--ingest-sessions", "2"], 2),
    "ingest_idle_s": ("30", "30", ["--ingest-idle-s", "30"], 30.0),
    "ingest_max_mb": ("64", "64", ["--ingest-max-mb", "64"], 64),
    "ingest_min_s": ("5", "5", ["--ingest-min-s", "5"], 5.0),
    "listenbrainz_sync_s": ("0", "0", ["--listenbrainz-sync-s", "0"], 0.0),
    "listenbrainz_url": (
        "http://lb.local:8100",
        '"http://lb.local:8100"',
        ["--listenbrainz-url", "http://lb.local:8100"],
        "http://lb.local:8100",
    ),
}
GLOBAL_FLAGS = {"log_level"}  # flags of the top-level parser: before the command


def _check(name: str, cfg: config.ServeConfig, layer: str) -> None:
    got = getattr(cfg, name)
    if name == "libraries":
        want = [("/m/a", "poll"), ("/m/b", "poll" if layer == "flags" else "off")]
        assert [(lib.path, lib.watch) for lib in got] == want
    else:
        assert got == SAMPLES[name][3], (layer, name, got)
    assert got != config.ServeConfig.model_fields[name].default, f"{name}: sample is the default"


def test_samples_cover_every_setting() -> None:
    assert set(SAMPLES) == set(config.ServeConfig.model_fields)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_setting_through_the_environment(name: str) -> None:
    cfg = config.load(env={config.env_name(name): SAMPLES[name][0], "UNRELATED": "1"})
    _check(name, cfg, "env")


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_setting_through_the_file(name: str, tmp_path: Path) -> None:
    extra = config.ServeConfig.model_fields[name].json_schema_extra
    table = extra["table"]  # type: ignore[index]
    text = SAMPLES[name][1] if name == "libraries" else f"[{table}]\n{name} = {SAMPLES[name][1]}"
    p = tmp_path / "c.toml"
    p.write_text(text + "\n")
    cfg = config.load(p, env={})
    _check(name, cfg, "file")
    assert cfg.source == str(p)


@pytest.mark.parametrize("name", sorted(n for n, s in SAMPLES.items() if s[2] is not None))
def test_every_setting_through_flags(name: str) -> None:
    argv = SAMPLES[name][2] or []
    argv = [*argv, "serve"] if name in GLOBAL_FLAGS else ["serve", *argv]
    args = build_parser().parse_args(argv)
    _check(name, config.load(env={}, flags=setting_flags(args)), "flags")


def test_nested_library_settings_from_the_environment() -> None:
    env = {
        "NOMARR_LIBRARIES": json.dumps(
            [
                {"path": "/nas/music", "watch": "poll", "poll_interval_s": 60},
                {"path": "~/Music", "rescan_interval_s": 0},
            ]
        )
    }
    libs = config.load(env=env).libraries
    assert [(x.path, x.watch, x.poll_interval_s, x.rescan_interval_s) for x in libs] == [
        ("/nas/music", "poll", 60.0, 21600.0),
        (os.path.expanduser("~/Music"), "event", 900.0, 0.0),
    ]
    # roots separated like $PATH (watched with events), under either name
    for var in ("NOMARR_LIBRARIES", "NOMARR_LIBRARY"):
        libs = config.load(env={var: f"/a{os.pathsep}/b"}).libraries
        assert [(x.path, x.watch) for x in libs] == [("/a", "event"), ("/b", "event")]
    with pytest.raises(config.ConfigError, match="set only one"):
        config.load(env={"NOMARR_LIBRARY": "/a", "NOMARR_LIBRARIES": "/b"})


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text('[server]\nport = 1000\n[[libraries]]\npath = "/x"\n[[libraries]]\npath = "/y"\n')
    env = {"NOMARR_PORT": "2000", "NOMARR_LIBRARY": "/z", "NOMARR_NICE": ""}  # empty = unset
    assert config.load(p, env={}).port == 1000
    cfg = config.load(p, env=env)
    assert cfg.port == 2000 and [x.path for x in cfg.libraries] == ["/z"] and cfg.nice == 10
    cfg = config.load(p, env=env, flags={"port": "3000"})
    assert cfg.port == 3000 and [x.path for x in cfg.libraries] == ["/z"]


def test_default_file_is_the_xdg_config(tmp_path: Path) -> None:
    """DESIGN §4: $XDG_CONFIG_HOME/nomarr/config.toml, read when present."""
    p = Path(os.environ["XDG_CONFIG_HOME"]) / "nomarr" / "config.toml"
    assert config.default_path() == p
    assert config.load(env={}).source is None
    p.parent.mkdir(parents=True)
    p.write_text("[scan]\nnice = 3\n")
    cfg = config.load(env={})
    assert cfg.nice == 3 and cfg.source == str(p)


@pytest.mark.parametrize(
    "env,flags,msg",
    [
        ({"NOMARR_PORT": "x"}, {}, "^NOMARR_PORT: expected an integer, got 'x'$"),
        ({"NOMARR_MAX_JSON_KB": "0"}, {}, "^NOMARR_MAX_JSON_KB: must be at least 1"),
        ({"NOMARR_ZEROCONF": "maybe"}, {}, "^NOMARR_ZEROCONF: expected true or false"),
        ({"NOMARR_LIBRARIES": "[{"}, {}, "^NOMARR_LIBRARIES: not valid JSON"),
        (
            {"NOMARR_LIBRARIES": '[{"path": "/a", "wach": "poll"}]'},
            {},
            r"LIBRARIES\[0\]\.wach: unknown",
        ),
        (
            {"NOMARR_LIBRARY": "/a"},
            {"libraries": [{"path": "/a", "watch": "x"}]},
            r"^--library\[0\]",
        ),
        ({}, {"cpu_share": "3"}, "^--cpu-share: must be at most 1.0, got '3'$"),
        ({}, {"log_level": "loud"}, "^--log-level: expected"),
    ],
)
def test_bad_environment_or_flag_names_its_source(
    env: dict[str, str], flags: dict[str, Any], msg: str
) -> None:
    with pytest.raises(config.ConfigError, match=msg) as e:
        config.load(env=env, flags=flags)
    assert "\n" not in str(e.value)


def test_file_errors_name_file_and_key(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    for text, msg in [
        ("[server]\nprot = 1", "c.toml: prot: unknown setting (did you mean port?)"),
        ("[sever]\nport = 1", "c.toml: [sever]: unknown table"),
        ("port = 1\n[server]\nport = 2", "c.toml: port: set twice"),
        ("[[libraries]]\npath = '/a'\nwatch = 'sometimes'", "c.toml: libraries[0].watch: expected"),
        ("models = []", "c.toml: models: must not be empty"),
    ]:
        p.write_text(text)
        with pytest.raises(config.ConfigError) as e:
            config.load(p, env={})
        assert msg in str(e.value) and "\n" not in str(e.value), (text, str(e.value))
    p.write_text("token = 1234567890123456789")  # a secret is never echoed back
    with pytest.raises(config.ConfigError, match="token") as e:
        config.load(p, env={})
    assert "1234567890" not in str(e.value)


def test_example_file_shows_every_setting_at_its_default(tmp_path: Path) -> None:
    """config/nomarr.example.toml documents every setting, in its table, at its default."""
    text = (REPO / "config" / "nomarr.example.toml").read_text()
    tables: dict[str, str] = {}
    for m in re.finditer(r"^\[(\w+)\]\n(.*?)(?=^\[|\Z)", text, re.M | re.S):
        tables[m.group(1)] = m.group(2)
    for name, f in config.ServeConfig.model_fields.items():
        table = f.json_schema_extra["table"]  # type: ignore[index]
        if name == "libraries":
            assert "[[libraries]]" in text
            continue
        assert re.search(rf"^#? ?{name} = ", tables.get(table, ""), re.M), (
            f"{name} not in [{table}]"
        )
    p = tmp_path / "c.toml"
    p.write_text(text.replace("/srv/music", str(tmp_path)))
    cfg = config.load(p, env={})
    for name, f in config.ServeConfig.model_fields.items():
        if name != "libraries":
            assert getattr(cfg, name) == f.default, f"{name}: the example is not the default"


def test_docs_list_every_setting() -> None:
    """The settings table in docs/api.md is the one made from the model (regenerate with
    python -c 'from nomarr.cli.serve import settings_markdown; print(settings_markdown())')."""
    assert settings_markdown() in (REPO / "docs" / "api.md").read_text()


def test_every_setting_is_read_by_the_agent() -> None:
    """A setting the code never reads is a setting silently ignored."""
    src = "\n".join(p.read_text() for p in (REPO / "agent" / "nomarr").rglob("*.py"))
    for name in config.ServeConfig.model_fields:
        assert re.search(rf"\b(?:cfg|self)\.{name}\b", src), f"{name} is never read"


def test_running_agent_honours_max_json_kb_from_the_environment(tmp_path: Path) -> None:
    """NOMARR_MAX_JSON_KB=1: a real ``nomarr serve`` refuses a 3 KiB JSON body with 413."""
    (tmp_path / "lib").mkdir()
    env = {
        **os.environ,
        "NOMARR_MAX_JSON_KB": "1",
        "NOMARR_DB": str(tmp_path / "db.sqlite"),
        "NOMARR_LIBRARY": str(tmp_path / "lib"),
        "NOMARR_SCAN_ON_START": "false",
        "NOMARR_WORKERS": "1",
    }
    argv = [sys.executable, "-m", "nomarr.cli", "--log-level", "info", "serve"]
    argv += ["--host", "127.0.0.1", "--port", "0", "--no-zeroconf", "--no-auth"]
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
    try:
        port = None
        deadline = time.monotonic() + 120
        lines: list[str] = []
        assert proc.stderr is not None
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            m = re.search(r" serving .*\bport=(\d+)", line)
            port = int(m.group(1)) if m else None
        assert port, "".join(lines)

        def post(body: bytes) -> tuple[int, Any]:
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/api/v1/similar",
                data=body,
                headers={"Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as e:
                return e.code, json.loads(e.read())

        big = json.dumps({"vector": [0.123456] * 330, "limit": 5}).encode()
        assert 3 * 1024 <= len(big) < 4 * 1024
        status, doc = post(big)
        assert status == 413 and doc["error"]["code"] == "too-large", doc
        status, doc = post(json.dumps({"vector": [0.5] * 10}).encode())  # under 1 KiB: parsed
        assert status != 413 and doc["error"]["code"] != "too-large", doc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_example_config_loads_and_env_overrides(tmp_path: Path) -> None:
    text = (
        (REPO / "config" / "nomarr.example.toml").read_text().replace("/srv/music", str(tmp_path))
    )
    p = tmp_path / "c.toml"
    p.write_text(text)
    cfg = config.load(p, env={})
    assert (
        cfg.port == 8765 and cfg.cpu_share == 0.5 and cfg.nice == 10 and cfg.profile == "balanced"
    )
    assert [(lib.path, lib.watch, lib.rescan_interval_s) for lib in cfg.libraries] == [
        (str(tmp_path), "event", 21600.0)
    ]
    cfg = config.load(
        p,
        env={
            "NOMARR_PORT": "9000",
            "NOMARR_ZEROCONF": "no",
            "NOMARR_LIBRARY": f"/a{os.pathsep}/b",
            "NOMARR_DB": "/x.db",
            "NOMARR_MODELS": "a,b",
        },
    )
    assert (
        cfg.port == 9000
        and cfg.zeroconf is False
        and [lib.path for lib in cfg.libraries] == ["/a", "/b"]
    )
    assert cfg.db == "/x.db" and cfg.models == ["a", "b"]


@pytest.mark.parametrize(
    "text,msg",
    [
        ("port = 70000", "port"),
        ("bogus = 1", "unknown setting"),
        ("[[libraries]]\npath='/x'\nwatch='sometimes'", "watch"),
        ("zeroconf = 'maybe'", "true or false"),
        ("cpu_share = 0", "cpu_share"),
        ("port = [", "c.toml"),
        ("[[libraries]]\nwatch='poll'", "needs a path"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path: Path, text: str, msg: str) -> None:
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(config.ConfigError, match=msg):
        config.load(p, env={})


def test_bad_config_exits_1_from_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = tmp_path / "c.toml"
    p.write_text("port = 'eighty'")
    assert main(["serve", "--config", str(p)]) == 1
    assert "port: expected an integer" in capsys.readouterr().err
    assert main(["serve", "--config", str(tmp_path / "missing.toml")]) == 1


def test_token_created_once_private_and_reused(tmp_path: Path) -> None:
    cfg = config.ServeConfig()
    tok, created = identity.ensure_token(cfg)
    assert created and tok and len(tok) >= 32
    f = Path(os.environ["XDG_CONFIG_HOME"]) / "nomarr" / "token"
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert identity.ensure_token(cfg) == (tok, False)
    os.chmod(f, 0o644)  # someone loosened it: tightened again on the next start
    assert identity.ensure_token(cfg) == (tok, False)
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert identity.ensure_token(config.ServeConfig(token="configured-token-123")) == (
        "configured-token-123",
        False,
    )
    with pytest.raises(config.ConfigError):
        identity.ensure_token(config.ServeConfig(token="short"))
    assert identity.ensure_token(config.ServeConfig(auth="none")) == (None, False)


def test_agent_id_is_stable() -> None:
    a = identity.agent_id()
    assert a == identity.agent_id() and len(a) == 36


def test_cpu_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    import nomarr.models.runtime as rt

    monkeypatch.setattr(rt, "available_cores", lambda: 4)
    assert config.ServeConfig().worker_count() == 2
    assert config.ServeConfig(cpu_share=0.1).worker_count() == 1
    assert config.ServeConfig(workers=3).worker_count() == 3
    assert config.ServeConfig(workers=64).worker_count() == 4
