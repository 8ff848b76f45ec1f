"""Remote analysis on a real Dask scheduler and real ``nomarr worker`` processes talking TLS.

The network tests put the agent and the scheduler in one network namespace and each worker in its
own (three hosts joined by veth pairs): a scan through two workers stores the numbers a local scan
stores, with one worker killed (-9) mid-scan; a worker whose model file differs is refused with the
reason and none of its results are stored. The loopback tests (no namespaces needed) cover the
scheduler going away mid-scan, a plain Dask worker that is not nomarr's, and the secrets."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, encode, music_like
from tests.test_discovery import _ids, _ip, _new_ns, _require_netns

pytest.importorskip("distributed")

pytestmark = pytest.mark.slow
NOMARR = str(Path(sys.executable).parent / "nomarr")
MODEL = "msd-musicnn-1"


# -- helpers ------------------------------------------------------------------------------------


def env_for(base: Path, name: str) -> dict[str, str]:
    e = dict(os.environ)
    e.update(
        NOMARR_CONFIG_DIR=str(base / name / "cfg"),
        NOMARR_DATA_DIR=str(base / name / "data"),
        XDG_CACHE_HOME=str(base / name / "cache"),
        PYTHONPATH=str(REPO),
    )
    return e


class Proc:
    """A nomarr process (optionally in a namespace) with its stderr in a file."""

    def __init__(self, base: Path, label: str, args: list[str], ns: str | None, env: dict) -> None:
        self.log = base / f"{label}.log"
        pre = ["ip", "netns", "exec", ns] if ns else []
        self.p = subprocess.Popen(
            [*pre, NOMARR, "--log-level", "info", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "wb"),  # noqa: SIM115
        )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(pattern, self.text())
            if m:
                return m
            assert self.p.poll() is None, self.text()[-3000:]
            assert time.monotonic() < deadline, self.text()[-3000:]
            time.sleep(0.2)

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


def library(d: Path, n: int, seconds: float = 20.0) -> Path:
    d.mkdir(parents=True)
    for i in range(n):
        encode(d / f"r{i:02d}.flac", music_like(seconds + i, seed=300 + i), 44100)
    return d


def scan_json(args: list[str], env: dict, ns: str | None = None, timeout: float = 400) -> dict:
    pre = ["ip", "netns", "exec", ns] if ns else []
    res = subprocess.run(
        [*pre, NOMARR, "scan", *args, "--json", "--no-write"],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout)


def numbers(db: Path) -> dict[str, tuple[dict[str, float], np.ndarray]]:
    from nomarr.store import Store

    out = {}
    with Store(db, readonly=True) as st:
        assert st.counts().get("ok", 0) == len(st.tracks())
        for t in st.tracks():
            a = st.analyses(t.recording_id)[MODEL]
            out[Path(t.path).name] = (a.scores, st.embedding(MODEL, t.recording_id))
        assert st.counts()["analyses"] == len(out)  # one analysis per recording: nothing twice
    return out


def assert_same_numbers(remote: Path, local: Path) -> None:
    """Scores and embeddings as a local scan stores them (ONNX Runtime with another thread count
    may differ in the last float bits; the 4-decimal tags may not)."""
    r, lo = numbers(remote), numbers(local)
    assert set(r) == set(lo)
    for name in r:
        (rs, re_), (ls, le) = r[name], lo[name]
        assert set(rs) == set(ls)
        assert max(abs(rs[k] - ls[k]) for k in rs) < 1e-5, name
        assert {k: f"{v:.4f}" for k, v in rs.items()} == {k: f"{v:.4f}" for k, v in ls.items()}
        assert np.max(np.abs(re_ - le)) < 1e-4, name


def swapped_manifest(data_dir: Path) -> None:
    """A worker whose msd-musicnn-1 is really another model file (the MTT build): a different
    provenance under the same id, as a wrong download or a local experiment would give."""
    text = (REPO / "models" / "manifests" / f"{MODEL}.toml").read_text()
    mtt = (REPO / "models" / "manifests" / "mtt-musicnn-1.toml").read_text()
    sha = re.search(r'sha256 = "([0-9a-f]{64})"', mtt).group(1)
    size = re.search(r"size = (\d+)", mtt).group(1)
    text = text.replace('name = "msd_musicnn.onnx"', 'name = "mtt_musicnn.onnx"')
    text = re.sub(r'sha256 = "[0-9a-f]{64}"', f'sha256 = "{sha}"', text, count=1)
    text = re.sub(r"size = \d+", f"size = {size}", text, count=1)
    (data_dir / "manifests").mkdir(parents=True, exist_ok=True)
    (data_dir / "manifests" / f"{MODEL}.toml").write_text(text)


# -- three hosts --------------------------------------------------------------------------------


@dataclass
class Hosts:
    a: str  # agent + scheduler
    b: str  # worker 1
    c: str  # worker 2
    addr_a_b: str  # A's address as B sees it
    addr_a_c: str


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    """Namespaces A, B, C; A-B and A-C veth pairs on their own /24s (A listens on both)."""
    _require_netns()
    n = next(_ids)
    tag = f"{os.getpid() % 100000}r{n}"
    made: list[str] = []
    try:
        names = {h: f"nomarr-t{tag}-{h}" for h in "abc"}
        for ns in names.values():
            _new_ns(ns, made)
        addrs = {}
        for i, peer in enumerate("bc"):
            va, vp = f"nm{tag}{peer}a", f"nm{tag}{peer}"
            res = _ip(
                *f"link add {va} netns {names['a']} type veth peer name {vp} netns {names[peer]}".split(),
                check=False,
            )
            if res.returncode != 0:
                pytest.skip(f"cannot create a veth pair: {res.stderr.strip()}")
            subnet = f"10.{150 + os.getpid() % 50}.{(2 * n + i) % 250}"
            for ns, dev, host in ((names["a"], va, 1), (names[peer], vp, 2)):
                _ip("-n", ns, "addr", "add", f"{subnet}.{host}/24", "dev", dev)
                _ip("-n", ns, "link", "set", dev, "up")
            addrs[peer] = f"{subnet}.1"
        yield Hosts(names["a"], names["b"], names["c"], addrs["b"], addrs["c"])
    finally:
        for ns in made:
            _ip("netns", "del", ns, check=False)


@pytest.fixture
def cluster_dir(tmp_path: Path) -> Path:
    """The cluster's secrets, made by the real command."""
    sec = tmp_path / "secrets"
    res = subprocess.run(
        [NOMARR, "worker", "--init-secrets", "--secrets", str(sec)],
        env=env_for(tmp_path, "init"),
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    return sec


def start_cluster(
    tmp_path: Path, hosts: Hosts, sec: Path, swapped_c: bool = False
) -> tuple[Proc, Proc, Proc]:
    port = 8786  # each test has namespaces of its own: no other process can hold this port
    sched = Proc(
        tmp_path,
        "scheduler",
        ["scheduler", "--listen", f"tls://0.0.0.0:{port}", "--secrets", str(sec)],
        hosts.a,
        env_for(tmp_path, "sched"),
    )
    sched.wait_for("listening at")
    workers = []
    for name, ns, addr in (("wb", hosts.b, hosts.addr_a_b), ("wc", hosts.c, hosts.addr_a_c)):
        env = env_for(tmp_path, name)
        if name == "wc" and swapped_c:
            swapped_manifest(Path(env["NOMARR_DATA_DIR"]))
        args = ["worker", f"tls://{addr}:{port}", "--secrets", str(sec), "--name", name]
        workers.append(Proc(tmp_path, name, [*args, "--threads", "1"], ns, env))
    for w in workers:
        w.wait_for("ready at")
    return sched, workers[0], workers[1]


def test_scan_through_two_workers_with_one_killed_midway(hosts, cluster_dir, tmp_path) -> None:
    lib = library(tmp_path / "lib", 8)
    local_db = tmp_path / "local.db"
    scan_json([str(lib), "--db", str(local_db), "--workers", "1"], env_for(tmp_path, "local"))
    sched, wb, wc = start_cluster(tmp_path, hosts, cluster_dir)
    try:
        db = tmp_path / "remote.db"
        args = [str(lib), "--db", str(db), "--workers", "0", "--scheduler"]
        args += ["tls://127.0.0.1:8786", "--secrets", str(cluster_dir)]
        pre = ["ip", "netns", "exec", hosts.a]
        scan = subprocess.Popen(
            [*pre, NOMARR, "scan", *args, "--json", "--no-write"],
            env=env_for(tmp_path, "agent"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # kill -9 worker B while it holds an analysis task
        wb.wait_for(r"task started.*mode=analyze", timeout=120)
        wb.p.kill()
        out, err = scan.communicate(timeout=400)
        assert scan.returncode == 0, err[-3000:]
        doc = json.loads(out)
    finally:
        for p in (wc, wb, sched):
            p.stop()
    assert doc["files"] == 8 and doc["analysed"] == 8 and doc["failed"] == 0, doc["failures"]
    r = doc["remote"]
    assert r["down"] is None and r["refused"] == []
    assert set(r["files"]) == {str(p) for p in sorted(lib.iterdir())}
    assert set(r["files"].values()) <= {"wb", "wc", "local"}
    assert r["workers"]["wc"]["analysed"] >= 1  # the survivor took over
    assert r["bytes_sent"] > 0  # B and C see no mount of A's: the agent sent the bytes
    assert_same_numbers(db, local_db)


def test_a_worker_with_a_swapped_model_is_refused(hosts, cluster_dir, tmp_path) -> None:
    lib = library(tmp_path / "lib", 4, seconds=12.0)
    sched, wb, wc = start_cluster(tmp_path, hosts, cluster_dir, swapped_c=True)
    try:
        db = tmp_path / "remote.db"
        args = [str(lib), "--db", str(db), "--workers", "0", "--scheduler"]
        doc = scan_json(
            [*args, "tls://127.0.0.1:8786", "--secrets", str(cluster_dir)],
            env_for(tmp_path, "agent"),
            ns=hosts.a,
        )
    finally:
        for p in (wc, wb, sched):
            p.stop()
    r = doc["remote"]
    assert doc["analysed"] == 4 and doc["failed"] == 0
    assert len(r["refused"]) == 1 and r["refused"][0].startswith("wc ")
    assert f"model {MODEL} has provenance" in r["refused"][0]
    assert "wc" not in r["workers"] and set(r["files"].values()) == {"wb"}
    assert "task started" not in wc.text()  # no task ever reached it
    local_db = tmp_path / "local.db"
    scan_json([str(lib), "--db", str(local_db), "--workers", "0"], env_for(tmp_path, "local"))
    assert_same_numbers(db, local_db)


# -- loopback -----------------------------------------------------------------------------------


def loopback_scheduler(tmp_path: Path, sec: Path) -> tuple[Proc, str]:
    """A scheduler on 127.0.0.1 with a port the kernel picks (tests run side by side)."""
    sched = Proc(
        tmp_path,
        "scheduler",
        ["scheduler", "--listen", "tls://127.0.0.1:0", "--secrets", str(sec)],
        None,
        env_for(tmp_path, "sched"),
    )
    return sched, sched.wait_for(r"listening at (tls://\S+)").group(1)


def test_scheduler_gone_midway_the_scan_goes_on_locally(cluster_dir, tmp_path) -> None:
    lib = library(tmp_path / "lib", 6)
    sched, addr = loopback_scheduler(tmp_path, cluster_dir)
    w = Proc(
        tmp_path,
        "w1",
        ["worker", addr, "--secrets", str(cluster_dir), "--name", "w1", "--threads", "1"],
        None,
        env_for(tmp_path, "w1"),
    )
    try:
        w.wait_for("ready at")
        db = tmp_path / "db.sqlite"
        scan = subprocess.Popen(
            [NOMARR, "scan", str(lib), "--db", str(db), "--workers", "0", "--no-write", "--json",
             "--scheduler", addr, "--secrets", str(cluster_dir)],
            env=env_for(tmp_path, "agent"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        w.wait_for(r"task started.*mode=analyze", timeout=120)
        sched.p.kill()
        out, err = scan.communicate(timeout=400)
        assert scan.returncode == 0, err[-3000:]
        doc = json.loads(out)
    finally:
        w.stop()
        sched.stop()
    assert doc["analysed"] == 6 and doc["failed"] == 0, doc["failures"]
    r = doc["remote"]
    assert r["down"] and "scheduler" in r["down"]
    assert "local" in r["files"].values()
    assert numbers(db).keys() == {p.name for p in lib.iterdir()}


def test_unreachable_scheduler_and_plain_dask_workers(cluster_dir, tmp_path) -> None:
    """No scheduler there: the scan runs locally and says why. A plain Dask worker (not
    'nomarr worker') on the scheduler gets no task."""
    lib = library(tmp_path / "lib", 2, seconds=8.0)
    doc = scan_json(
        [str(lib), "--db", str(tmp_path / "a.db"), "--workers", "0",
         "--scheduler", "tls://127.0.0.1:9", "--secrets", str(cluster_dir)],
        env_for(tmp_path, "agent"),
    )  # fmt: skip
    assert doc["analysed"] == 2 and "cannot connect" in doc["remote"]["down"]
    sched, addr = loopback_scheduler(tmp_path, cluster_dir)
    code = (
        "import asyncio, sys\n"
        "from distributed import Worker\n"
        "from nomarr.remote.secrets import security\n"
        "from pathlib import Path\n"
        "async def main():\n"
        "    async with Worker(sys.argv[1], security=security(Path(sys.argv[2])), nthreads=1,\n"
        "                      resources={'nomarr': 1}, dashboard_address='127.0.0.1:0') as w:\n"
        "        print('ready at', w.address, file=sys.stderr, flush=True)\n"
        "        await w.finished()\n"
        "asyncio.run(main())\n"
    )
    plain = subprocess.Popen(
        [sys.executable, "-c", code, addr, str(cluster_dir)],
        env=env_for(tmp_path, "plain"),
        stderr=open(tmp_path / "plain.log", "wb"),  # noqa: SIM115
    )
    try:
        deadline = time.monotonic() + 60
        while b"ready at" not in (tmp_path / "plain.log").read_bytes():
            assert plain.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        doc = scan_json(
            [str(lib), "--db", str(tmp_path / "b.db"), "--workers", "0",
             "--scheduler", addr, "--secrets", str(cluster_dir)],
            env_for(tmp_path, "agent"),
        )  # fmt: skip
    finally:
        plain.kill()
        plain.wait()
        sched.stop()
    r = doc["remote"]
    assert doc["analysed"] == 2 and len(r["refused"]) == 1
    assert "nomarr worker" in r["refused"][0] and set(r["files"].values()) == {"local"}


def test_secrets_and_security_defaults(tmp_path, capsys) -> None:
    from nomarr.cli import main
    from nomarr.remote.secrets import SecretsError, check_dir, mac, mac_ok
    from nomarr.remote.worker import map_path, parse_path_map

    sec = tmp_path / "s"
    assert main(["worker", "--init-secrets", "--secrets", str(sec)]) == 0
    assert stat.S_IMODE(sec.stat().st_mode) == 0o700
    for f in ("node-key.pem", "secret", "ca-key.pem"):
        assert stat.S_IMODE((sec / f).stat().st_mode) == 0o600
    assert main(["worker", "--init-secrets", "--secrets", str(sec)]) == 1  # never overwritten
    os.chmod(sec / "secret", 0o644)
    with pytest.raises(SecretsError, match="readable by others"):
        check_dir(sec)
    assert mac_ok(b"k", "n", b"p", mac(b"k", "n", b"p")) and not mac_ok(
        b"x", "n", b"p", mac(b"k", "n", b"p")
    )
    # plain tcp:// is refused unless asked for
    lib = library(tmp_path / "lib", 1, seconds=5.0)
    assert (
        main(["scan", str(lib), "--db", str(tmp_path / "d.db"), "--scheduler", "tcp://127.0.0.1:9"])
        == 1
    )
    assert "TLS only" in capsys.readouterr().err
    assert main(["scheduler", "--listen", "tcp://0.0.0.0:8786"]) == 1
    assert main(["worker", "tls://127.0.0.1:9", "--secrets", str(tmp_path / "none")]) == 1
    assert "--init-secrets" in capsys.readouterr().err
    pm = parse_path_map(["/music=/mnt/nas/music", "/music/classical=/mnt/c"])
    assert map_path("/music/classical/a.flac", pm) == "/mnt/c/a.flac"
    assert map_path("/music/pop/b.flac", pm) == "/mnt/nas/music/pop/b.flac"
    assert map_path("/musicx/b.flac", pm) is None


def test_files_reach_workers_by_path_when_the_mount_is_shared(cluster_dir, tmp_path) -> None:
    """A worker whose --path-map shows it the same files reads them itself (no bytes sent);
    one whose map points at other bytes is caught by the probe and gets the bytes instead."""
    lib = library(tmp_path / "lib", 3, seconds=8.0)
    mirror = tmp_path / "mirror"
    mirror.symlink_to(lib)  # the worker's own path to the same files (a mount, in real life)
    sched, addr = loopback_scheduler(tmp_path, cluster_dir)
    w = Proc(
        tmp_path,
        "w1",
        ["worker", addr, "--secrets", str(cluster_dir), "--name", "w1",
         "--path-map", f"{lib}={mirror}"],
        None,
        env_for(tmp_path, "w1"),
    )  # fmt: skip
    try:
        w.wait_for("ready at")
        doc = scan_json(
            [str(lib), "--db", str(tmp_path / "d.db"), "--workers", "0",
             "--scheduler", addr, "--secrets", str(cluster_dir)],
            env_for(tmp_path, "agent"),
        )  # fmt: skip
    finally:
        w.stop()
        sched.stop()
    r = doc["remote"]
    assert doc["analysed"] == 3 and r["bytes_sent"] == 0
    assert r["workers"]["w1"]["roots_seen"] == [str(lib)]
    assert set(r["files"].values()) == {"w1"}
    assert "via=path" in w.text() and "via=bytes" not in w.text()
