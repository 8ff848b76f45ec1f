"""``nomarr serve`` configuration: file < environment < flags, validation, the token file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from nomarr import config
from nomarr.cli import main

from tests.conftest import REPO


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
    tok, created = config.ensure_token(cfg)
    assert created and tok and len(tok) >= 32
    f = Path(os.environ["XDG_CONFIG_HOME"]) / "nomarr" / "token"
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert config.ensure_token(cfg) == (tok, False)
    os.chmod(f, 0o644)  # someone loosened it: tightened again on the next start
    assert config.ensure_token(cfg) == (tok, False)
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert config.ensure_token(config.ServeConfig(token="configured-token-123")) == (
        "configured-token-123",
        False,
    )
    with pytest.raises(config.ConfigError):
        config.ensure_token(config.ServeConfig(token="short"))
    assert config.ensure_token(config.ServeConfig(auth="none")) == (None, False)


def test_agent_id_is_stable() -> None:
    a = config.agent_id()
    assert a == config.agent_id() and len(a) == 36


def test_cpu_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    import nomarr.models.runtime as rt

    monkeypatch.setattr(rt, "available_cores", lambda: 4)
    assert config.ServeConfig().worker_count() == 2
    assert config.ServeConfig(cpu_share=0.1).worker_count() == 1
    assert config.ServeConfig(workers=3).worker_count() == 3
    assert config.ServeConfig(workers=64).worker_count() == 4
