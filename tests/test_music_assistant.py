"""The Music Assistant provider's tests, run from the main suite.

They need Python 3.13 and the real ``music-assistant-models`` (plugins/music_assistant/
setup-test-env.sh builds ``.venv-ma`` with them at install time), so they run there as a
subprocess; this wrapper makes the README's one test command cover them, skips with the reason when
``.venv-ma`` is missing, and fails with their output when they fail.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MA_PYTHON = REPO / ".venv-ma" / "bin" / "python"
MA_TESTS = REPO / "plugins" / "music_assistant" / "tests"

pytestmark = pytest.mark.slow


def test_music_assistant_provider() -> None:
    if not MA_PYTHON.exists():
        pytest.skip(
            "no .venv-ma (Python 3.13 with music-assistant-models): run "
            "plugins/music_assistant/setup-test-env.sh to include the Music Assistant provider tests"
        )
    env = dict(os.environ)
    env.setdefault("NOMARR_AGENT_BIN", str(Path(sys.executable).parent / "nomarr"))
    env.pop("PYTHONPATH", None)  # the 3.11 suite's paths mean nothing to the 3.13 interpreter
    res = subprocess.run(
        [str(MA_PYTHON), "-m", "pytest", "-q", "-p", "no:cacheprovider", str(MA_TESTS)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    out = (res.stdout + res.stderr)[-12000:]
    if res.returncode == 5:
        pytest.fail(f"no provider tests were collected:\n{out}")
    assert res.returncode == 0, f"the Music Assistant provider tests failed:\n{out}"
    if " passed" not in res.stdout:
        pytest.fail(f"the provider tests reported no passes:\n{out}")
