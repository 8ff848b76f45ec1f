"""Model registry: which models exist, which are installed, verification and resumable download.

Trust rule: a model file is only ever loaded after its sha256 matched the manifest (or the hash
pinned on first download). A swapped or corrupt file is refused with the path and the expected
hash, never run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nomarr import paths
from nomarr.models.manifest import Manifest, ManifestError, ModelFile, load_manifest

log = logging.getLogger(__name__)

CHUNK = 1 << 20


class ModelError(Exception):
    """A model that cannot be used: missing, corrupt, unknown. The message says what to do."""


@dataclass
class FileStatus:
    """Verification result of one model file."""

    name: str
    path: str
    present: bool
    expected_sha256: str | None
    actual_sha256: str | None
    pinned: bool

    @property
    def ok(self) -> bool:
        """Present and (when a hash is known) matching."""
        return self.present and (
            self.expected_sha256 is None or self.expected_sha256 == self.actual_sha256
        )


def sha256_file(path: Path) -> str:
    """Streaming sha256 (model files can be hundreds of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


class Registry:
    """All manifests nomarr knows (shipped + user-imported) and the files on disk."""

    def __init__(
        self,
        shipped_dir: Path | None = None,
        user_dir: Path | None = None,
        models_dir: Path | None = None,
        builtin_dir: Path | None = None,
    ) -> None:
        self.user_dir = user_dir or paths.user_manifests_dir()
        self.manifest_dirs = [shipped_dir or paths.shipped_manifests_dir(), self.user_dir]
        self.models_dir = models_dir or paths.models_dir()
        self.builtin_dir = builtin_dir or paths.builtin_models_dir()
        self._manifests: dict[str, Manifest] | None = None
        self.errors: list[str] = []
        self._hash_cache: dict[tuple[str, int, int], str] = {}

    # -- manifests -------------------------------------------------------------------------
    def manifests(self) -> dict[str, Manifest]:
        """Every valid manifest by id; invalid ones are skipped and listed in ``errors``."""
        if self._manifests is None:
            found: dict[str, Manifest] = {}
            for d in self.manifest_dirs:
                if not d.is_dir():
                    continue
                for p in sorted(d.glob("*.toml")):
                    try:
                        m = load_manifest(p)
                    except ManifestError as e:
                        self.errors.append(str(e))
                        log.warning("invalid manifest skipped: %s", e)
                        continue
                    found[m.id] = m  # later dirs (user) override shipped ones
            self._manifests = found
        return self._manifests

    def get(self, model_id: str) -> Manifest:
        """The manifest for ``model_id`` or a :class:`ModelError` listing the known ids."""
        ms = self.manifests()
        if model_id not in ms:
            raise ModelError(
                f"unknown model {model_id!r}; known: {', '.join(sorted(ms)) or 'none'}"
            )
        return ms[model_id]

    # -- files -----------------------------------------------------------------------------
    def file_path(self, m: Manifest, f: ModelFile) -> Path:
        """Where a model file lives (package folder for built-ins, models dir otherwise)."""
        return self.builtin_dir / f.name if f.builtin else self.models_dir / m.id / f.name

    def _pins_path(self, m: Manifest) -> Path:
        return self.models_dir / m.id / "pins.toml"

    def pins(self, m: Manifest) -> dict[str, str]:
        """Hashes pinned on first download for files whose manifest has none."""
        p = self._pins_path(m)
        if not p.exists():
            return {}
        try:
            return {k: v for k, v in tomllib.loads(p.read_text()).items() if isinstance(v, str)}
        except (tomllib.TOMLDecodeError, OSError):
            raise ModelError(
                f"{p}: pin file is unreadable; delete it and pull {m.id} again"
            ) from None

    def _write_pin(self, m: Manifest, name: str, sha: str) -> None:
        pins = self.pins(m)
        pins[name] = sha
        p = self._pins_path(m)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(".tmp")
        tmp.write_text("".join(f'"{k}" = "{v}"\n' for k, v in sorted(pins.items())))
        os.replace(tmp, p)

    def expected_sha(self, m: Manifest, f: ModelFile) -> tuple[str | None, bool]:
        """(expected sha256, whether it comes from a pin rather than the manifest)."""
        if f.sha256:
            return f.sha256, False
        pinned = self.pins(m).get(f.name)
        return pinned, pinned is not None

    def _hash(self, path: Path) -> str:
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns)
        if key not in self._hash_cache:
            self._hash_cache[key] = sha256_file(path)
        return self._hash_cache[key]

    def verify(self, m: Manifest) -> list[FileStatus]:
        """Hash every file of a model against its manifest or pin."""
        out = []
        for f in m.files:
            path = self.file_path(m, f)
            expected, pinned = self.expected_sha(m, f)
            present = path.is_file()
            out.append(
                FileStatus(
                    f.name,
                    str(path),
                    present,
                    expected,
                    self._hash(path) if present else None,
                    pinned,
                )
            )
        return out

    def installed(self, m: Manifest) -> bool:
        """All files needed to run are present (not hashed: use :meth:`verify` for that).

        Licence texts are fetched by ``pull`` but not needed to run, so a model imported from a
        local file is usable before its licence text is downloaded.
        """
        return all(self.file_path(m, f).is_file() for f in m.files if f.role != "licence")

    def require(self, m: Manifest) -> Path:
        """Path of the verified model file, or a :class:`ModelError` saying what is wrong."""
        needed = {f.name for f in m.files if f.role != "licence"}
        for st in self.verify(m):
            if st.name not in needed:
                continue
            if not st.present:
                hint = "reinstall nomarr" if m.builtin else f"run: nomarr models pull {m.id}"
                raise ModelError(f"model {m.id}: file {st.path} is missing ({hint})")
            if not st.ok:
                raise ModelError(
                    f"model {m.id}: file {st.path} has sha256 {st.actual_sha256}, expected "
                    f"{st.expected_sha256}; refusing to load a corrupt or swapped model"
                    + ("" if m.builtin else f" (delete it and run: nomarr models pull {m.id})")
                )
        return self.file_path(m, m.model_file)

    # -- download --------------------------------------------------------------------------
    def pull(
        self,
        m: Manifest,
        progress: Callable[[str, int, int | None], None] | None = None,
        timeout: float = 30.0,
    ) -> list[FileStatus]:
        """Download missing or bad files, resuming partial downloads with HTTP Range requests.

        Data goes to ``<name>.part`` and is renamed into place only after size and sha256 match,
        so an interrupted pull never leaves a file that looks installed.
        """
        if m.builtin:
            return self.verify(m)
        target_dir = self.models_dir / m.id
        target_dir.mkdir(parents=True, exist_ok=True)
        for f in m.files:
            dest = self.file_path(m, f)
            expected, _ = self.expected_sha(m, f)
            if dest.is_file() and expected and self._hash(dest) == expected:
                continue
            self._download(f, dest, expected, progress, timeout)
            actual = sha256_file(dest.with_suffix(dest.suffix + ".part"))
            part = dest.with_suffix(dest.suffix + ".part")
            if expected and actual != expected:
                part.unlink(missing_ok=True)
                raise ModelError(
                    f"model {m.id}: download of {f.name} from {f.url} has sha256 {actual}, expected {expected}"
                )
            os.replace(part, dest)
            if not expected:
                self._write_pin(m, f.name, actual)
                log.info(
                    "pinned sha256 on first download",
                    extra={"model": m.id, "file": f.name, "sha256": actual},
                )
        return self.verify(m)

    def _download(
        self,
        f: ModelFile,
        dest: Path,
        expected: str | None,
        progress: Callable[[str, int, int | None], None] | None,
        timeout: float,
    ) -> None:
        part = dest.with_suffix(dest.suffix + ".part")
        have = part.stat().st_size if part.exists() else 0
        if f.size is not None and have > f.size:
            part.unlink()
            have = 0
        if f.size is not None and have == f.size:
            return
        req = urllib.request.Request(f.url, headers={"User-Agent": "nomarr"})
        if have:
            req.add_header("Range", f"bytes={have}-")
        try:
            resp = urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 (manifest URLs)
        except urllib.error.HTTPError as e:
            if e.code == 416 and have:  # already complete
                return
            raise ModelError(f"download of {f.url} failed: HTTP {e.code} {e.reason}") from e
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            raise ModelError(f"download of {f.url} failed: {getattr(e, 'reason', e)}") from e
        with resp:
            if have and resp.status != 206:  # server ignored Range: start over
                have = 0
            length = resp.headers.get("Content-Length")
            total = (have + int(length)) if length is not None else f.size
            with open(part, "ab" if have else "wb") as out:
                done = have
                while True:
                    try:
                        block = resp.read(CHUNK)
                    except (TimeoutError, OSError) as e:
                        raise ModelError(
                            f"download of {f.url} interrupted at {done} bytes ({e}); run pull again to resume"
                        ) from e
                    if not block:
                        break
                    out.write(block)
                    done += len(block)
                    if progress:
                        progress(f.name, done, total)
        if f.size is not None and part.stat().st_size != f.size:
            raise ModelError(
                f"download of {f.url} ended at {part.stat().st_size} of {f.size} bytes; run pull again to resume"
            )

    # -- import ----------------------------------------------------------------------------
    def import_essentia(
        self, json_path: Path, model_file: Path | None = None, url: str | None = None
    ) -> Manifest:
        """Write a manifest from an Essentia metadata .json (and install a local model file)."""
        from nomarr.models.essentia_import import dump_manifest_toml, manifest_from_essentia_json

        try:
            meta = json.loads(Path(json_path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ModelError(f"{json_path}: cannot read Essentia metadata ({e})") from e
        try:
            data = manifest_from_essentia_json(
                meta, onnx_file=model_file.name if model_file else None, url=url
            )
        except ValueError as e:
            raise ModelError(f"{json_path}: {e}") from e
        out_dir = self.user_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        out = out_dir / f"{data['id']}.toml"
        text = dump_manifest_toml(data)
        m = load_manifest_text(text, out)
        out.write_text(text, encoding="utf-8")
        self._manifests = None
        if model_file is not None:
            dest = self.file_path(m, m.model_file)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(model_file, dest)
            if not m.model_file.sha256:
                self._write_pin(m, m.model_file.name, sha256_file(dest))
        return m


def load_manifest_text(text: str, where: Path) -> Manifest:
    """Validate manifest text before it is written anywhere."""
    from nomarr.models.manifest import parse_manifest

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ModelError(f"generated manifest is not valid TOML ({e})") from e
    try:
        return parse_manifest(data, str(where))
    except ManifestError as e:
        raise ModelError(str(e)) from e
