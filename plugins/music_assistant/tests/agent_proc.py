"""A real ``nomarr serve`` as a subprocess, for tests that run under Music Assistant's Python (3.13),
where the agent's own dependencies are not installed: the agent runs from the project's main venv.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
AGENT_BIN = Path(os.environ.get("NOMARR_AGENT_BIN", str(REPO / ".venv" / "bin" / "nomarr")))
AGENT_PYTHON = AGENT_BIN.parent / "python"
CORPUS = Path(os.environ.get("NOMARR_CORPUS", str(REPO.parent / "shared" / "corpus")))

_SERVING = re.compile(rb"serving host=\S+ port=(\d+)")


def copy_clip(name: str, dest: Path) -> Path:
    """A writable copy of a corpus clip (the corpus is read-only)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(CORPUS / name, dest)
    dest.chmod(0o644)
    return dest


def tag(path: Path, **fields: str) -> None:
    """Write Vorbis comments with the agent venv's mutagen (not installed next to MA)."""
    code = (
        "import sys, json; from mutagen import File; f = File(sys.argv[1]); "
        "[f.__setitem__(k, v) for k, v in json.loads(sys.argv[2]).items()]; f.save()"
    )
    subprocess.run(
        [str(AGENT_PYTHON), "-c", code, str(path), json.dumps(fields)], check=True, timeout=60
    )


def decode_pcm(src: Path, dest: Path, rate: int = 44100) -> Path:
    """A clip as raw 16-bit stereo PCM at ``rate`` (what MA's stream pipeline hands a reader),
    decoded with the agent venv's PyAV (not installed next to MA)."""
    code = (
        "import sys, av, numpy as np\n"
        "with av.open(sys.argv[1]) as c, open(sys.argv[2], 'wb') as out:\n"
        "    r = av.AudioResampler(format='s16', layout='stereo', rate=int(sys.argv[3]))\n"
        "    for fr in c.decode(c.streams.audio[0]):\n"
        "        for o in r.resample(fr): out.write(np.ascontiguousarray(o.to_ndarray()).tobytes())\n"
        "    for o in r.resample(None): out.write(np.ascontiguousarray(o.to_ndarray()).tobytes())\n"
    )
    subprocess.run(
        [str(AGENT_PYTHON), "-c", code, str(src), str(dest), str(rate)], check=True, timeout=120
    )
    return dest


class Agent:
    """One running agent: ``url``, ``token``, ``agent_id`` and a JSON helper."""

    def __init__(
        self,
        workdir: Path,
        libraries: list[Path],
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        zeroconf: bool = False,
        netns: str | None = None,
        profile: str = "fast",
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "serve.log"
        env = dict(
            os.environ,
            NOMARR_CONFIG_DIR=str(workdir / "cfg"),
            NOMARR_DATA_DIR=str(workdir / "data"),
            XDG_CACHE_HOME=str(workdir / "cache"),
            NOMARR_WORKERS="1",
        )
        for var in (
            "NOMARR_DB",
            "NOMARR_LIBRARY",
            "NOMARR_TOKEN",
            "NOMARR_AUTH",
            "NOMARR_PORT",
            "NOMARR_HOST",
        ):
            env.pop(var, None)
        cmd = [
            str(AGENT_BIN),
            "--log-level",
            "info",
            "serve",
            "--db",
            str(workdir / "db.sqlite"),
            "--host",
            host,
            "--port",
            str(port),
            "--watch",
            "off",
            "--profile",
            profile,
        ]
        for lib in libraries:
            cmd += ["--library", str(lib)]
        if not zeroconf:
            cmd.append("--no-zeroconf")
        if netns:
            cmd = ["ip", "netns", "exec", netns, *cmd]
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self.port = 0
        self.token = ""
        self.agent_id = ""
        self.host = host

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/api/v1"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def wait_ready(self, timeout: float = 90.0) -> Agent:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"nomarr serve exited with {self.proc.returncode}:\n{self.log()}"
                )
            m = _SERVING.search(self.log_path.read_bytes())
            token_file = self.workdir / "cfg" / "token"
            if m and token_file.exists():
                self.port = int(m.group(1))
                self.token = token_file.read_text().strip()
                self.agent_id = (self.workdir / "data" / "agent-id").read_text().strip()
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"nomarr serve did not start:\n{self.log()}")
            time.sleep(0.1)
        return self

    def wait_idle(self, timeout: float = 180.0, scans: int = 1) -> Agent:
        """Until the first scan (or ``scans`` of them) finished and nothing is queued."""
        deadline = time.monotonic() + timeout
        while True:
            _, st = self.request("GET", "/status")
            q = st["queue"]
            if (
                q.get("scans_completed", 0) >= scans
                and not q["running"]
                and q["pending_paths"] == 0
            ):
                return self
            if time.monotonic() > deadline:
                raise TimeoutError(f"the agent's scan did not finish: {q}\n{self.log()}")
            time.sleep(0.2)

    def request(self, method: str, path: str, body: Any = None, query: str = "") -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.url + path + (f"?{query}" if query else ""),
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
