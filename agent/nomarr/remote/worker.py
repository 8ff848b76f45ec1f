"""What runs in a remote worker (``nomarr worker tls://agent:8786``): a Dask worker that loads the
models once, says what it has, and analyses files for an agent without ever opening its database or
writing a tag.

- **Models once.** They are loaded before the worker joins (a broken model is then a reason in the
  hello, not a crash mid-scan); a scan asking for another model set or profile gets its analyzer
  built once and kept.
- **What it has** goes to the scheduler as Dask *resources* (``nomarr`` = concurrent analyses, and
  ``gpu`` when an accelerator provider passed its golden check), so tasks only land on nomarr
  workers and GPU-only work only on GPU workers, and to the agent in a signed *hello*: models, file
  hashes, provenance for the scan's profile, providers, which library roots it sees.
- **Files** are read through the same mount when the worker's ``--path-map`` turns the agent's path
  into one of its own and a probe (size and a hash of the first 64 KiB) agrees; otherwise the agent
  sends the bytes, which the worker keeps in a temporary file for the length of the job.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import tempfile
import threading
from pathlib import Path
from typing import Any

from nomarr import __version__

log = logging.getLogger("nomarr.remote")

PROBE_BYTES = 64 << 10

# The worker process's state: its loaded model sets and analyzers, secret, path map.
_S: dict[str, Any] = {}
_LOCK = threading.Lock()


def probe(path: str) -> tuple[int, str]:
    """(size, sha256 of the first 64 KiB): cheap evidence that two paths hold the same file."""
    with open(path, "rb") as f:
        head = f.read(PROBE_BYTES)
        size = os.fstat(f.fileno()).st_size
    return size, hashlib.sha256(head).hexdigest()


def parse_path_map(items: list[str]) -> list[tuple[str, str]]:
    """``AGENT_PREFIX=LOCAL_PREFIX`` pairs, longest agent prefix first."""
    out = []
    for it in items:
        if "=" not in it:
            raise ValueError(f"--path-map {it!r}: expected AGENT_PREFIX=LOCAL_PREFIX")
        a, b = it.split("=", 1)
        out.append((a.rstrip("/") or "/", b.rstrip("/") or "/"))
    return sorted(out, key=lambda ab: -len(ab[0]))


def map_path(path: str, pmap: list[tuple[str, str]]) -> str | None:
    """The worker's path for an agent path, or None when no prefix maps it."""
    for a, b in pmap:
        if path == a or path.startswith(a.rstrip("/") + "/"):
            return b + path[len(a) :] if a != "/" else b.rstrip("/") + path
    return None


def sees(path: str, want: tuple[int, str] | list[Any] | None) -> str | None:
    """The worker's own path to the agent's file when it can read the very same bytes."""
    local = map_path(path, _S.get("path_map", []))
    if local is None or want is None:
        return None
    try:
        return local if tuple(probe(local)) == tuple(want) else None
    except OSError:
        return None


def load(
    models: list[str],
    profile: str,
    threads: int,
    provider: str | None,
    batch: int,
    path_map: list[tuple[str, str]],
    secret: bytes | None,
    name: str,
) -> dict[str, Any]:
    """Load the worker's models (before it joins the scheduler); returns its facts."""
    from nomarr.models.runtime import ort_available_providers

    _S.update(
        threads=threads,
        provider=provider,
        batch=batch,
        path_map=path_map,
        secret=secret,
        name=name,
        sets={},
        analyzers={},
        default=(tuple(models), profile),
        error=None,
    )
    try:
        _analyzer(tuple(models), profile)
    except Exception as e:  # noqa: BLE001 - said in the hello; the agent refuses this worker
        _S["error"] = f"its models did not load: {type(e).__name__}: {e}"
        log.error("models failed to load", extra={"error": _S["error"]})
    ms = _S["sets"].get(tuple(models))
    lm = list(ms.models.values()) if ms else []
    gpu = any(m.choice.provider not in ("CPUExecutionProvider", "cpu") for m in lm)
    return {"providers": list(ort_available_providers()), "gpu": gpu}


def _analyzer(models: tuple[str, ...], profile: str) -> Any:
    """The analyzer for a model set and profile, built once per worker."""
    from nomarr.models.registry import Registry
    from nomarr.pipeline.analyze import Analyzer, ModelSet
    from nomarr.pipeline.profiles import get_profile

    with _LOCK:
        key = (models, profile)
        if key not in _S["analyzers"]:
            if models not in _S["sets"]:
                _S["sets"][models] = ModelSet(
                    Registry(), list(models), threads=_S["threads"], provider=_S["provider"]
                )
            _S["analyzers"][key] = Analyzer(
                _S["sets"][models], get_profile(profile), batch_size=_S["batch"]
            )
        return _S["analyzers"][key]


def hello(
    nonce: str,
    models: list[str],
    profile: str,
    roots: dict[str, Any],
    dask_worker: Any = None,
) -> dict[str, Any]:
    """The worker's signed self-description for one scan (run by the agent with ``Client.run``).

    ``roots`` maps each library root to a probe of one file under it; the answer says which the
    worker sees through its path map. The MAC covers the whole description, so a worker cannot
    claim another's models, and an agent knows the worker holds the cluster's secret.
    """
    from nomarr.models.registry import ModelError, Registry
    from nomarr.pipeline.modelset import planned_provenance
    from nomarr.pipeline.profiles import get_profile
    from nomarr.remote.secrets import mac

    info: dict[str, Any] = {
        "name": _S.get("name") or (dask_worker.name if dask_worker else socket.gethostname()),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "nomarr": __version__,
        "error": _S.get("error") if "name" in _S else "not a 'nomarr worker' (no models loaded)",
        "provenance": {},
        "models": {},
        "roots": {},
    }
    if "name" in _S:
        try:
            info["provenance"] = planned_provenance(Registry(), models, get_profile(profile))
        except (ModelError, ValueError) as e:
            info["error"] = info["error"] or f"{type(e).__name__}: {e}"
        ms = _S["sets"].get(_S["default"][0])
        if ms is not None:
            info["models"] = {
                m.id: {"sha256": m.sha256, "provider": m.choice.provider}
                for m in ms.models.values()
            }
        info["roots"] = {r: sees(f, p) is not None for r, (f, p) in roots.items()}
    payload = json.dumps(info, sort_keys=True).encode()
    secret = _S.get("secret")
    return {"info": info, "mac": mac(secret, nonce, payload) if secret else None}


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """A Dask task: identify or analyse one file for the agent; returns plain data.

    The file is the worker's own copy through the path map when ``spec["probe"]`` matches, else the
    bytes in ``spec["data"]``; with neither, ``kind`` is ``unseen`` and the agent sends the bytes.
    ``path`` in the answer is the agent's; ``worker`` names who did the work.
    """
    from nomarr.results import to_wire
    from nomarr.workers import process_file

    agent_path = spec["path"]
    out: dict[str, Any]
    if _S.get("error") or "sets" not in _S:
        return {"path": agent_path, "kind": "refused", "error": _S.get("error") or "no models"}
    local = sees(agent_path, spec.get("probe"))
    log.info(
        "task started",
        extra={"path": agent_path, "mode": spec["mode"], "via": "path" if local else "bytes"},
    )
    tmp: str | None = None
    if local is None and spec.get("data") is None:
        return {"path": agent_path, "kind": "unseen", "worker": _S["name"]}
    try:
        if local is None:
            fd, tmp = tempfile.mkstemp(prefix="nomarr-remote-", suffix=Path(agent_path).suffix)
            with os.fdopen(fd, "wb") as f:
                f.write(spec["data"])
            local = tmp
        analyzer = _analyzer(tuple(spec["models"]), spec["profile"])
        out = to_wire(process_file(local, spec["mode"], spec.get("rec"), analyzer=analyzer))
    finally:
        if tmp is not None:
            os.unlink(tmp)
    out["path"] = agent_path
    out["worker"] = _S["name"]
    out["via"] = "bytes" if tmp is not None else "path"
    out.pop("stat", None)  # the worker's stat means nothing to the agent's store
    if out.get("prepared") is not None:
        out["prepared"].path = agent_path
    if "error" in out and local is not None:
        out["error"] = str(out["error"]).replace(local, agent_path)
    return out
