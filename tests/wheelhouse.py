"""Install-time step: fill a wheelhouse with every third-party wheel an offline install needs.

``tests/test_install_wheels.py`` proves that nomarr installs from wheels alone, without this
repository and without an index: it builds the five distributions from the source tree and installs
them with ``pip --no-index`` and ``pipx``. Tests never use the network, so the wheels of everything
else (the agent's and the plugins' dependencies, the hatchling build backend, pipx itself) are
fetched here, before the tests, by pip from the configured index. ``.ci/run`` and the README's test
command run this; the test skips with this command in its reason where the wheelhouse is missing
or stale (and fails instead under CI, where it must exist).

The requirement list is read from the pyproject files, so a new dependency is picked up without
editing this script; our own packages are left out (the test builds them from the tree). A run
with nothing changed is offline and takes seconds: the wheelhouse is tried on its own first.

    python tests/wheelhouse.py [DIR]      # default: <repo>/.wheelhouse (git-ignored)
"""

from __future__ import annotations

import argparse
import hashlib
import re
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DIR = REPO / ".wheelhouse"
STAMP = ".complete"
# the distributions this repository builds: the agent at the root, the rest under plugins/
PROJECTS = (".", "plugins/client", "plugins/beets", "plugins/navidrome", "plugins/music_assistant")
# what the install test installs besides the agent (beets and Music Assistant pull in their hosts,
# which the test does not install; their wheels are only built and inspected)
INSTALLED = (".", "plugins/client", "plugins/navidrome")
# pipx, and what pipx's shared environment asks pip for
TOOLS = ("pipx", "pip", "setuptools", "wheel")


def own_names() -> set[str]:
    """Normalised names of the distributions this repository builds."""
    return {_norm(_pyproject(p)["project"]["name"]) for p in PROJECTS}


def requirements() -> list[str]:
    """Third-party requirements of an offline install: run-time deps, build backends, pipx."""
    own = own_names()
    reqs: set[str] = set(TOOLS)
    for p in PROJECTS:
        reqs.update(_pyproject(p)["build-system"]["requires"])
    for p in INSTALLED:
        for r in _pyproject(p)["project"]["dependencies"]:
            if _norm(re.split(r"[\s<>=!~;\[(]", r, maxsplit=1)[0]) not in own:
                reqs.add(r)
    return sorted(reqs)


def stamp_text() -> str:
    """What a complete wheelhouse was made for: this Python, this platform, these requirements."""
    key = "\n".join([sys.version.split()[0], sys.platform, *requirements()])
    return hashlib.sha256(key.encode()).hexdigest()[:16] + "\n"


def is_current(where: Path) -> bool:
    """The wheelhouse exists and was completed for the present requirement list."""
    try:
        return (where / STAMP).read_text() == stamp_text()
    except OSError:
        return False


def build(where: Path) -> None:
    """Fill ``where``: offline from itself when it already has everything, else from the index."""
    where.mkdir(parents=True, exist_ok=True)
    (where / STAMP).unlink(missing_ok=True)
    reqs = requirements()
    base = [sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(where)]
    base += ["--find-links", str(where), *reqs]
    offline = subprocess.run([*base, "--no-index"], capture_output=True, text=True)
    if offline.returncode != 0:
        print(f"wheelhouse: fetching {len(reqs)} requirements and their dependencies", flush=True)
        subprocess.run(base, check=True)
    (where / STAMP).write_text(stamp_text())
    n = len(list(where.glob("*.whl")))
    print(f"wheelhouse: {n} wheels in {where}", flush=True)


def _pyproject(project: str) -> dict:
    return tomllib.loads((REPO / project / "pyproject.toml").read_text(encoding="utf-8"))


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main(argv: list[str] | None = None) -> int:
    """Command line: build (or check) the wheelhouse."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", nargs="?", type=Path, default=DEFAULT_DIR, help="wheelhouse folder")
    ap.add_argument("--list", action="store_true", help="print the requirement list and exit")
    args = ap.parse_args(argv)
    if args.list:
        print("\n".join(requirements()))
        return 0
    build(args.dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
