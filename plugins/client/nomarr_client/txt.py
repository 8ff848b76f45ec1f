"""The zeroconf TXT record of DESIGN §6, both halves: what the agent announces and how hosts read it.

Kept apart from :mod:`nomarr_client.discovery` so the agent can build its record without importing
the browsing code, and so the record's keys are written in one place. Standard library only.
"""

from __future__ import annotations

from collections.abc import Mapping

from .models import API_PREFIX, API_VERSION

TXT_VERSION = 1
AUTH_MODES = ("token", "none")


class MalformedRecord(ValueError):
    """A service record this client cannot use; the message is the reason, for the log."""


def txt_properties(*, agent_id: str, version: str, auth: bool) -> dict[str, str]:
    """The TXT record an agent announces: ``txtvers id ver api path auth``."""
    return {
        "txtvers": str(TXT_VERSION),
        "id": agent_id,
        "ver": version,
        "api": str(API_VERSION),
        "path": API_PREFIX,
        "auth": "token" if auth else "none",
    }


def _text(value: bytes | str | None, key: str) -> str:
    if value is None:
        raise MalformedRecord(f"TXT key {key!r} has no value")
    if isinstance(value, str):
        return value
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedRecord(f"TXT key {key!r} is not UTF-8") from None


def parse_txt(properties: Mapping[bytes | str, bytes | str | None]) -> dict[str, str]:
    """The TXT record as lowercase keys to strings (RFC 6763 keys are case-insensitive).

    Raises MalformedRecord when the contract's keys are missing or unusable, naming the key, so
    the log says which agent is misbehaving and how.
    """
    txt: dict[str, str] = {}
    raw: dict[str, bytes | str | None] = {}
    for k, v in properties.items():
        key = (k.decode("utf-8", errors="replace") if isinstance(k, bytes) else k).lower()
        raw.setdefault(key, v)  # a repeated key: the first one counts (RFC 6763 §6.4)
    txtvers = raw.get("txtvers")
    if txtvers is None:
        raise MalformedRecord("TXT has no txtvers")
    txt["txtvers"] = _text(txtvers, "txtvers")
    if txt["txtvers"] != str(TXT_VERSION):
        raise MalformedRecord(f"unsupported txtvers={txt['txtvers']!r} (this client reads 1)")
    for key in ("id", "ver", "api", "path", "auth"):
        if key not in raw:
            raise MalformedRecord(f"TXT has no {key!r}")
        txt[key] = _text(raw[key], key).strip()
    if not txt["id"]:
        raise MalformedRecord("TXT id is empty")
    try:
        api = int(txt["api"])
    except ValueError:
        raise MalformedRecord(f"TXT api={txt['api']!r} is not a number") from None
    if api != API_VERSION:
        raise MalformedRecord(f"unsupported api={api} (this client speaks {API_VERSION})")
    if not txt["path"].startswith("/") or any(c in txt["path"] for c in "?# "):
        raise MalformedRecord(f"TXT path={txt['path']!r} is not an absolute URL path")
    if txt["auth"] not in AUTH_MODES:
        raise MalformedRecord(f"TXT auth={txt['auth']!r} is not token|none")
    return txt
