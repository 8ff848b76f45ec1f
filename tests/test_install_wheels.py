"""nomarr installs from wheels alone: no repository, no index (what ``pipx install nomarr`` needs).

The five distributions are built from this tree with pip (hatchling, from the wheelhouse), then
installed into fresh environments outside the repository with ``pip --no-index`` and with
``pipx``, and the installed agent is run: ``--help``, ``doctor``, a scan of corpus files. The
third-party wheels come from the wheelhouse that ``tests/wheelhouse.py`` fills at install time
(``.ci/run`` and the README's test command run it), because tests never use the network; without
it this module skips and says how to make it (under CI it fails instead: there it must exist).

Every pip here runs with ``PIP_CONFIG_FILE=/dev/null`` and ``PIP_NO_INDEX=1``, so neither the
network nor an index or find-links configured on the machine can make the install pass by accident.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests import wheelhouse
from tests.conftest import REPO

pytestmark = pytest.mark.slow

WHEELHOUSE = Path(os.environ.get("NOMARR_WHEELHOUSE", wheelhouse.DEFAULT_DIR))
# distribution -> the import package its wheel must carry
WHEELS = {
    "nomarr": "nomarr",
    "nomarr_client": "nomarr_client",
    "beets_nomarr": "beetsplug",
    "nomarr_navidrome": "nomarr_navidrome",
    "nomarr_music_assistant": "nomarr_ma",
}


@pytest.fixture(scope="module")
def house() -> Path:
    if not wheelhouse.is_current(WHEELHOUSE):
        why = (
            f"no current wheelhouse at {WHEELHOUSE}: run `python tests/wheelhouse.py` "
            "(install time, uses the network) to test installing from wheels"
        )
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    return WHEELHOUSE


@pytest.fixture(scope="module")
def offline_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment for every command here: no pip configuration, nothing from the checkout
    on the import path, private XDG dirs, and a PATH without the developer's venv."""
    base = tmp_path_factory.mktemp("home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON", "VIRTUAL"))}
    env.update(
        PIP_CONFIG_FILE=os.devnull,
        # every pip, also the ones pipx runs on its own (its shared pip), is offline
        PIP_NO_INDEX="1",
        PIP_FIND_LINKS=str(WHEELHOUSE),
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        XDG_DATA_HOME=str(base / "data"),
        XDG_CONFIG_HOME=str(base / "config"),
        XDG_CACHE_HOME=str(base / "cache"),
        PATH=os.pathsep.join(
            p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(REPO))
        ),
    )
    return env


def run(
    argv: list[str | Path], env: dict[str, str], cwd: Path, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run a command outside the repository; on failure the assertion shows its output."""
    r = subprocess.run(
        [str(a) for a in argv], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    assert r.returncode == 0, f"{argv}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def dist(
    house: Path, offline_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The five wheels, built from this tree offline (build backend from the wheelhouse)."""
    out = tmp_path_factory.mktemp("dist")
    projects = [REPO / p for p in wheelhouse.PROJECTS]
    run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-index"]
        + ["--find-links", house, "--wheel-dir", out, *projects],
        offline_env,
        out,
    )
    return out


def _wheel(dist: Path, name: str) -> Path:
    found = sorted(dist.glob(f"{name}-*.whl"))
    assert len(found) == 1, (name, sorted(p.name for p in dist.iterdir()))
    return found[0]


def test_five_wheels_carry_their_packages_and_the_models(dist: Path) -> None:
    for name, package in WHEELS.items():
        with zipfile.ZipFile(_wheel(dist, name)) as z:
            tops = {n.split("/")[0] for n in z.namelist()}
        assert tops == {package, f"{name}-0.1.0.dist-info"}, (name, tops)  # no agent/, no tests/
    with zipfile.ZipFile(_wheel(dist, "nomarr")) as z:
        names = set(z.namelist())
        for model in (REPO / "agent" / "nomarr" / "models" / "builtin").iterdir():
            inside = z.read(f"nomarr/models/builtin/{model.name}")
            assert hashlib.sha256(inside).digest() == hashlib.sha256(model.read_bytes()).digest()
        manifests = sorted(p.name for p in (REPO / "models" / "manifests").glob("*.toml"))
        assert manifests and all(f"nomarr/manifests/{m}" in names for m in manifests)
        meta = z.read("nomarr-0.1.0.dist-info/METADATA").decode()
        entry = z.read("nomarr-0.1.0.dist-info/entry_points.txt").decode()
    assert "Requires-Dist: nomarr-client" in meta and "nomarr = nomarr.cli:main" in entry


def _check_installed_agent(
    bin_dir: Path, env: dict[str, str], work: Path, corpus: Path, label: str
) -> None:
    """What a user does first with an installed agent, run from outside the repository."""
    nomarr, python = bin_dir / "nomarr", bin_dir / "python"
    assert "usage: nomarr" in run([nomarr, "--help"], env, work).stdout
    assert "--max-json-kb" in run([nomarr, "serve", "--help"], env, work).stdout
    doc = json.loads(run([nomarr, "doctor", "--json"], env, work).stdout)
    builtin = {m["id"]: m for m in doc["models"]}["msd-musicnn-1"]
    assert builtin["builtin"] and builtin["installed"] and builtin["verified"], builtin
    # the checkout is nowhere on the path: the repository's layout cannot be imported
    r = subprocess.run(
        [python, "-c", "import agent"], env=env, cwd=work, capture_output=True, text=True
    )
    assert r.returncode != 0 and "No module named 'agent'" in r.stderr, r.stderr
    where = run([python, "-c", "import nomarr; print(nomarr.__file__)"], env, work).stdout
    assert str(REPO) not in where and "site-packages" in where, where
    lib = work / f"lib-{label}"
    lib.mkdir()
    for f in sorted(corpus.glob("*.ogg"))[:2]:
        shutil.copy(f, lib / f.name)
        (lib / f.name).chmod(0o644)
    argv = [nomarr, "scan", lib, "--db", work / f"{label}.db", "--profile", "fast", "--json"]
    summary = json.loads(run(argv, env, work).stdout)
    assert summary["analysed"] == 2 and summary["failed"] == 0 and summary["written"] == 2, summary
    tags = json.loads(run([nomarr, "tags", next(lib.iterdir()), "--json"], env, work).stdout)
    groups = [g for k, g in tags["groups"].items() if k.startswith("onnx_musicnn_msd-1_msd50")]
    assert len(groups) == 1 and len(groups[0]["scores"]) == 50, tags["groups"].keys()


def test_pip_installs_from_wheels_without_an_index(
    dist: Path, house: Path, offline_env: dict[str, str], corpus: Path, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", venv], offline_env, tmp_path)
    pip = [venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-index"]
    pip += ["--find-links", dist, "--find-links", house]
    run([*pip, "nomarr", "nomarr-navidrome"], offline_env, tmp_path)
    _check_installed_agent(venv / "bin", offline_env, tmp_path, corpus, "pip")
    assert (
        "usage: nomarr-navidrome"
        in run([venv / "bin" / "nomarr-navidrome", "--help"], offline_env, tmp_path).stdout
    )


def test_the_plugins_client_installs_without_numpy(
    dist: Path, house: Path, offline_env: dict[str, str], tmp_path: Path
) -> None:
    """A host that installs a plugin gets the thin client only: no numpy, no onnxruntime."""
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", venv], offline_env, tmp_path)
    py = venv / "bin" / "python"
    pip = [py, "-m", "pip", "install", "-q", "--no-index", "--find-links", dist]
    run([*pip, "--find-links", house, "nomarr-navidrome"], offline_env, tmp_path)
    run([py, "-c", "import nomarr_client, nomarr_navidrome"], offline_env, tmp_path)
    for heavy in ("numpy", "onnxruntime", "nomarr"):
        r = subprocess.run([py, "-c", f"import {heavy}"], env=offline_env, capture_output=True)
        assert r.returncode != 0, f"{heavy} came with the navidrome plugin"


def test_pipx_installs_the_agent_wheel(
    dist: Path, house: Path, offline_env: dict[str, str], corpus: Path, tmp_path: Path
) -> None:
    tools = tmp_path / "tools"
    run([sys.executable, "-m", "venv", tools], offline_env, tmp_path)
    run(
        [tools / "bin" / "python", "-m", "pip", "install", "-q", "--no-index"]
        + ["--find-links", house, "pipx"],
        offline_env,
        tmp_path,
    )
    env = {
        **offline_env,
        "PIPX_HOME": str(tmp_path / "pipx"),
        "PIPX_BIN_DIR": str(tmp_path / "bin"),
        "PIPX_MAN_DIR": str(tmp_path / "man"),
    }
    pip_args = f"--no-index --find-links {dist} --find-links {house}"
    argv = [tools / "bin" / "pipx", "install", f"--pip-args={pip_args}", _wheel(dist, "nomarr")]
    run(argv, env, tmp_path)
    # pipx links the app into PIPX_BIN_DIR; the venv's own python is needed for the import checks
    app_bin = tmp_path / "pipx" / "venvs" / "nomarr" / "bin"
    assert (tmp_path / "bin" / "nomarr").resolve() == (app_bin / "nomarr").resolve()
    _check_installed_agent(app_bin, env, tmp_path, corpus, "pipx")
    listing = json.loads(run([tools / "bin" / "pipx", "list", "--json"], env, tmp_path).stdout)
    assert listing["venvs"]["nomarr"]["metadata"]["main_package"]["package_version"] == "0.1.0"
