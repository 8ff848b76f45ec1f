"""The analyses bundle, version 2: the file one agent exports and another imports.

Layout (documented for other implementations in docs/analyses.md): a gzip stream of UTF-8 JSON
lines. Line 1 is the **header**, every following line but the last a **record**, the last line the
**trailer**. Header and records are each ``{"body": {...}, "sig": "<base64>"}``: an Ed25519
signature, by the exporting agent's key, over the body's canonical JSON (sorted keys, no
whitespace, ASCII escapes, floats as the shortest repr that round-trips). The header names the key;
the trailer counts the records and hashes their bodies, so a truncated or spliced bundle is
noticed.

Why a signature per record rather than one over the file: an import judges each record on its
own. One flipped score is one refused record, not a refused bundle, and the refusal names the
line; a bundle can be streamed (millions of records) without holding it whole.

Binary values travel as base64 of little-endian arrays: the raw Chromaprint (uint32, what
``fpcalc -raw`` prints) and embeddings (float32), so the numbers an importer stores are bit for bit
those the exporter stored. Version 2 adds each recording's DSP descriptors (the document, its
provenance and the compact timeline, zlib bytes as base64); version 1 bundles, whose records carry
none, are still read (:data:`READABLE`).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from nomarr import paths

FORMAT = "nomarr-analyses"
VERSION = 2
READABLE = (1, 2)  # version 1: the same records without descriptors (docs/analyses.md)
SIG_ALG = "ed25519"
MAX_LINE = 4 << 20  # a record holding a 1280-d and a 512-d embedding is ~15 KB; 4 MB is hostile


class BundleError(Exception):
    """A bundle that cannot be read at all (not gzip, no valid header, unknown version)."""


def canonical(body: Any) -> bytes:
    """The bytes a signature covers: JSON with sorted keys, no whitespace, ASCII only."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def digest(body: Any) -> str:
    """sha256 of a body's canonical form: a record's identity (importing twice adds nothing)."""
    return hashlib.sha256(canonical(body)).hexdigest()


def b64_array(a: np.ndarray, dtype: str) -> str:
    """A numeric array as base64 of its little-endian bytes."""
    return base64.b64encode(np.ascontiguousarray(a, dtype=dtype).tobytes()).decode("ascii")


def array_b64(text: Any, dtype: str, max_items: int) -> np.ndarray:
    """The inverse of :func:`b64_array`; ValueError for anything that is not such an array."""
    if not isinstance(text, str) or len(text) > 4 * (max_items * np.dtype(dtype).itemsize + 2):
        raise ValueError("not a base64 array of the expected size")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as e:
        raise ValueError("invalid base64") from e
    if len(raw) % np.dtype(dtype).itemsize:
        raise ValueError("byte length is not a whole number of items")
    return np.frombuffer(raw, dtype=dtype).copy()


# -- keys --------------------------------------------------------------------------------------


@dataclass
class SigningKey:
    """This agent's Ed25519 key for signing bundles (kept 0600 in the config directory)."""

    private: Any  # cryptography's Ed25519PrivateKey

    @property
    def public_b64(self) -> str:
        """The public key, raw 32 bytes, base64 (what a bundle's header carries)."""
        from cryptography.hazmat.primitives import serialization as ser

        raw = self.private.public_key().public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw)
        return base64.b64encode(raw).decode("ascii")

    @property
    def key_id(self) -> str:
        """Short, stable name of the public key (what an importer pins with ``--trust``)."""
        return key_id(self.public_b64)

    def sign(self, body: Any) -> str:
        """Base64 signature over ``body``'s canonical form."""
        return base64.b64encode(self.private.sign(canonical(body))).decode("ascii")


def key_id(public_b64: str) -> str:
    """sha256 of the raw public key, first 16 hex digits."""
    return hashlib.sha256(base64.b64decode(public_b64)).hexdigest()[:16]


def load_or_create_key(path: Path | None = None) -> SigningKey:
    """The agent's signing key, created on first use (PEM, PKCS#8, mode 0600)."""
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = path or paths.config_dir() / "analyses-key.pem"
    if path.exists():
        key = ser.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise BundleError(f"{path}: not an Ed25519 private key")
        return SigningKey(key)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.replace(tmp, path)
    return SigningKey(key)


def verify(public_b64: str, body: Any, sig: Any) -> bool:
    """Whether ``sig`` is the key's signature over ``body`` (False for any malformed input)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if not isinstance(sig, str) or len(sig) > 200:
        return False
    try:
        pub = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_b64, validate=True))
        pub.verify(base64.b64decode(sig, validate=True), canonical(body))
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


# -- writing -----------------------------------------------------------------------------------


class BundleWriter:
    """Writes a bundle: header, signed records one by one, trailer (to a temp file, then renamed,
    so an interrupted export never leaves a truncated bundle under the final name)."""

    def __init__(self, path: Path, key: SigningKey, header: dict[str, Any]) -> None:
        self.path = path
        self.key = key
        self._tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self._raw: IO[bytes] = open(self._tmp, "wb")  # noqa: SIM115 - closed in close()
        self._gz = gzip.GzipFile(fileobj=self._raw, mode="wb", mtime=0)
        self._hash = hashlib.sha256()
        self.count = 0
        body = {"format": FORMAT, "version": VERSION, "sig_alg": SIG_ALG, **header}
        body["key"] = key.public_b64
        self._line({"body": body, "sig": key.sign(body)})

    def _line(self, obj: dict[str, Any]) -> None:
        self._gz.write(json.dumps(obj, separators=(",", ":"), ensure_ascii=True).encode() + b"\n")

    def add(self, body: dict[str, Any]) -> None:
        """One record (signed here)."""
        self._hash.update(bytes.fromhex(digest(body)))
        self._line({"body": body, "sig": self.key.sign(body)})
        self.count += 1

    def close(self) -> None:
        """Write the trailer and put the bundle in place."""
        trailer = {"end": True, "records": self.count, "records_sha256": self._hash.hexdigest()}
        self._line({"body": trailer, "sig": self.key.sign(trailer)})
        self._gz.close()
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        """Drop the partial file."""
        try:
            self._gz.close()
            self._raw.close()
        finally:
            self._tmp.unlink(missing_ok=True)


# -- reading -----------------------------------------------------------------------------------


@dataclass
class Header:
    """A bundle's verified header."""

    body: dict[str, Any]
    key: str  # public key, base64

    @property
    def signer(self) -> str:
        """The signing key's id."""
        return key_id(self.key)

    @property
    def version(self) -> int:
        """The bundle format version (one of :data:`READABLE`)."""
        return int(self.body["version"])


@dataclass
class Line:
    """One record line as read: its number, the parsed body and signature, or why it is unusable."""

    number: int
    body: Any = None
    sig: Any = None
    error: str | None = None
    trailer: bool = False


def open_bundle(path: Path) -> tuple[Header, Iterator[Line]]:
    """The verified header and an iterator over the remaining lines (records, then the trailer).

    Raises :class:`BundleError` when the file is not a bundle this nomarr can read; problems with
    single records are reported per :class:`Line` instead.
    """
    try:
        raw = open(path, "rb")  # noqa: SIM115 - closed by the line iterator
    except OSError as e:
        raise BundleError(f"{path}: {e.strerror or e}") from e
    gz = gzip.GzipFile(fileobj=raw, mode="rb")
    text = io.BufferedReader(gz)  # type: ignore[arg-type]
    try:
        first = text.readline(MAX_LINE + 1)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raw.close()
        raise BundleError(f"{path}: not a gzip-compressed bundle ({e})") from e
    header = _header(path, first)

    def lines() -> Iterator[Line]:
        n = 1
        try:
            while True:
                try:
                    data = text.readline(MAX_LINE + 1)
                except (OSError, EOFError, gzip.BadGzipFile) as e:
                    yield Line(n + 1, error=f"the compressed stream is damaged ({e})")
                    return
                if not data:
                    return
                n += 1
                yield _parse_line(n, data)
        finally:
            raw.close()

    return header, lines()


def _header(path: Path, first: bytes) -> Header:
    try:
        obj = json.loads(first)
        body, sig = obj["body"], obj["sig"]
        fmt, ver, key = body["format"], body["version"], body["key"]
    except (ValueError, KeyError, TypeError, RecursionError) as e:
        raise BundleError(f"{path}: no valid bundle header on line 1") from e
    if fmt != FORMAT:
        raise BundleError(f"{path}: format {fmt!r} is not {FORMAT!r}")
    if isinstance(ver, bool) or ver not in READABLE:
        readable = " and ".join(str(v) for v in READABLE)
        raise BundleError(f"{path}: bundle version {ver!r}; this nomarr reads versions {readable}")
    if body.get("sig_alg") != SIG_ALG or not isinstance(key, str) or not verify(key, body, sig):
        raise BundleError(f"{path}: the header's signature does not verify")
    return Header(body, key)


def _parse_line(n: int, data: bytes) -> Line:
    if len(data) > MAX_LINE:
        return Line(n, error=f"line longer than {MAX_LINE} bytes")
    try:
        obj = json.loads(data)
    except RecursionError:  # deeply nested arrays: hostile, and the parser's stack would overflow
        return Line(n, error="JSON nested too deeply")
    except ValueError:
        return Line(n, error="not JSON")
    if (
        not isinstance(obj, dict)
        or set(obj) != {"body", "sig"}
        or not isinstance(obj["body"], dict)
    ):
        return Line(n, error='not a {"body", "sig"} object')
    return Line(n, obj["body"], obj["sig"], trailer=obj["body"].get("end") is True)
