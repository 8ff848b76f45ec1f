"""The secrets that let an agent, a scheduler and workers trust each other.

``nomarr worker --init-secrets`` writes one folder: a private certificate authority, one node
certificate it signed (used by every participant: TLS in both directions, so the scheduler refuses
any peer without a certificate of this CA), and a random shared secret with which each worker
signs its hello (so an agent refuses a worker that reached the scheduler some other way). The
folder is copied to every machine of the cluster, and whoever holds it can join: it is created
0700 with 0600 files.

The CA key is kept beside the certificates only so that more node certificates can be issued
later; it never leaves the machine that ran ``--init-secrets`` unless the user copies it.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path
from typing import Any

from nomarr import paths

FILES = ("ca.pem", "node.pem", "node-key.pem", "secret")


class SecretsError(Exception):
    """The secrets folder is missing, incomplete or too open."""


def default_dir() -> Path:
    """``<config dir>/remote``."""
    return paths.config_dir() / "remote"


def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def init_secrets(folder: Path, force: bool = False, days: int = 3650) -> dict[str, str]:
    """Create the CA, the node certificate and the shared secret; returns the files written."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    if any((folder / f).exists() for f in FILES) and not force:
        raise SecretsError(f"{folder}: secrets exist already (--force replaces them)")
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    now = datetime.datetime.now(datetime.UTC)
    until = now + datetime.timedelta(days=days)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("nomarr cluster CA"))
        .issuer_name(name("nomarr cluster CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    node_key = ec.generate_private_key(ec.SECP256R1())
    node = (
        x509.CertificateBuilder()
        .subject_name(name("nomarr node"))
        .issuer_name(ca.subject)
        .public_key(node_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [x509.ExtendedKeyUsageOID.SERVER_AUTH, x509.ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = ser.Encoding.PEM
    nokey = ser.NoEncryption()
    _write(folder / "ca.pem", ca.public_bytes(pem))
    _write(folder / "ca-key.pem", ca_key.private_bytes(pem, ser.PrivateFormat.PKCS8, nokey))
    _write(folder / "node.pem", node.public_bytes(pem))
    _write(folder / "node-key.pem", node_key.private_bytes(pem, ser.PrivateFormat.PKCS8, nokey))
    _write(folder / "secret", secrets.token_hex(32).encode() + b"\n")
    return {f: str(folder / f) for f in (*FILES, "ca-key.pem")}


def check_dir(folder: Path) -> None:
    """The folder has every file and nobody but the owner can read the keys."""
    missing = [f for f in FILES if not (folder / f).is_file()]
    if missing:
        raise SecretsError(
            f"{folder}: missing {', '.join(missing)}; run 'nomarr worker --init-secrets' on one "
            "machine and copy the folder to the others"
        )
    for f in ("node-key.pem", "secret"):
        mode = (folder / f).stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SecretsError(f"{folder / f}: readable by others (chmod 600 it)")


def security(folder: Path) -> Any:
    """Dask's ``Security`` for mutual TLS with this folder's CA and node certificate."""
    from distributed import Security

    check_dir(folder)
    cert, key, ca = str(folder / "node.pem"), str(folder / "node-key.pem"), str(folder / "ca.pem")
    return Security(
        require_encryption=True,
        tls_ca_file=ca,
        tls_client_cert=cert,
        tls_client_key=key,
        tls_scheduler_cert=cert,
        tls_scheduler_key=key,
        tls_worker_cert=cert,
        tls_worker_key=key,
    )


def shared_secret(folder: Path) -> bytes:
    """The shared secret's bytes."""
    check_dir(folder)
    return (folder / "secret").read_bytes().strip()


def mac(secret: bytes, nonce: str, payload: bytes) -> str:
    """HMAC-SHA256 over a nonce and a payload: a worker's proof that it holds the secret."""
    return hmac.new(secret, nonce.encode() + b"\0" + payload, hashlib.sha256).hexdigest()


def mac_ok(secret: bytes, nonce: str, payload: bytes, got: Any) -> bool:
    """Constant-time check of :func:`mac`."""
    return isinstance(got, str) and hmac.compare_digest(mac(secret, nonce, payload), got)
