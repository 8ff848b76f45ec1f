#!/usr/bin/env bash
# Install-time set-up for the Music Assistant provider's tests (uses the network; the tests never
# do). Creates <repo>/.venv-ma with Python 3.13, which music-assistant-models >= 1.1.212 requires,
# and installs the provider, the plugins' client, the real music-assistant-models and pytest.
# Idempotent: a second run with nothing changed only checks a stamp. Without any Python 3.13 it
# says so and exits 0, and the provider tests are skipped (tests/test_music_assistant.py).
set -euo pipefail
SELF="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$SELF")/../.."
VENV=.venv-ma
STAMP="$VENV/.nomarr-ma-stamp"

find_python() {
  local root best
  # pyenv's versions, also when pyenv itself is not on PATH (CI shells, cron)
  root="$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")"
  best="$(ls -d "$root"/versions/3.13.* 2>/dev/null | sort -V | tail -n 1 || true)"
  if [ -n "$best" ] && [ -x "$best/bin/python3.13" ]; then
    echo "$best/bin/python3.13"
    return
  fi
  command -v python3.13 2>/dev/null || true
}

want="$(cat plugins/client/pyproject.toml plugins/music_assistant/pyproject.toml "$SELF" | sha256sum | cut -c1-16)"
if [ -x "$VENV/bin/python" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$want" ] \
    && "$VENV/bin/python" -c 'import music_assistant_models, nomarr_client, nomarr_ma, pytest' 2>/dev/null; then
  echo "$VENV is up to date"
  exit 0
fi

PY="$(find_python)"
if [ -z "$PY" ]; then
  echo "no Python 3.13 found (pyenv or python3.13 on PATH): the Music Assistant provider tests will be skipped" >&2
  exit 0
fi
if ! [ -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))'; then
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
"$VENV/bin/python" -m pip install -q -e ./plugins/client -e ./plugins/music_assistant \
  'music-assistant-models>=1.1.212' 'pytest>=8' 'pytest-asyncio>=0.24'
echo "$want" > "$STAMP"
echo "created $VENV ($("$VENV/bin/python" --version))"
