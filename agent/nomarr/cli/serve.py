"""``nomarr serve``: the agent (HTTP API, watcher, scheduler, zeroconf), flags over the config.

Its setting flags are not written here: :func:`add_setting_flags` makes one per field of
:class:`nomarr.config.ServeConfig` (``--max-json-kb``, ``--zeroconf/--no-zeroconf``, …), so a new
setting gets its flag, its ``--help`` line and its error messages without another list to update.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import typing
from typing import Any

from nomarr.cli.common import DeferredParser, UserError

# The global --log-level (on the top parser) is also the serve setting's flag.
_GLOBAL_FLAGS = ("log_level",)


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """One option per setting of :class:`~nomarr.config.ServeConfig`, all defaulting to "not
    given" (``None``) so that only what was typed overrides the file and the environment."""
    from nomarr.config import ServeConfig, env_name, flag_name

    g = parser.add_argument_group(
        "settings",
        "Each overrides the config file's setting of the same name and its NOMARR_* variable "
        "(docs/api.md lists them all).",
    )
    for name, f in ServeConfig.model_fields.items():
        extra: dict[str, Any] = f.json_schema_extra or {}  # type: ignore[assignment]
        if extra.get("flag", "") is None or name in _GLOBAL_FLAGS:
            continue
        flag = flag_name(name)
        shown = _shown(f.default)
        kw: dict[str, Any] = {
            "dest": name,
            "default": None,
            "help": f"{f.description} ({f'default: {shown}; ' if shown else ''}{env_name(name)})",
        }
        if name == "libraries":
            kw.update(action="append", metavar="PATH")
            kw["help"] = (
                "library root (repeatable; replaces the configured libraries; "
                f"{env_name(name)} or NOMARR_LIBRARY)"
            )
        elif f.annotation is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(f.annotation) is list:
            kw.update(action="append", metavar=extra.get("metavar", "VALUE"))
            kw["help"] = f"{f.description}; repeatable (default: {shown}; {env_name(name)})"
        elif typing.get_origin(f.annotation) is typing.Literal:
            kw["choices"] = typing.get_args(f.annotation)
        else:
            kw["metavar"] = extra.get("metavar") or _metavar(name, f.annotation)
        g.add_argument(flag, **kw)
        for alias, value in extra.get("aliases", {}).items():
            same = f"--no-{flag[2:]}" if value is False else f"{flag} {value}"
            g.add_argument(
                alias, dest=name, action="store_const", const=value, help=f"same as {same}"
            )
    g.add_argument(
        "--watch",
        choices=["off", "event", "poll"],
        help="how changes in the libraries are noticed: inotify events (local disks), polling "
        "(network mounts) or off; applies to --library roots, else to every configured library",
    )


def _shown(default: Any) -> str | None:
    """A default as a user would type it (``true``, ``a,b``, ``300``); ``None`` when unset."""
    if default is None or default == []:
        return None
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, list):
        return ",".join(map(str, default))
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    return str(default)


def _metavar(name: str, annotation: Any) -> str:
    if name.endswith("_s"):
        return "SECONDS"
    if annotation is int or name.startswith("max_"):
        return "N"
    return "X" if annotation is float else name.upper()


def flag_spellings(name: str) -> list[str]:
    """Every option that sets the setting ``name`` (empty: none, e.g. the token)."""
    from nomarr.config import ServeConfig, flag_name

    f = ServeConfig.model_fields[name]
    extra: dict[str, Any] = f.json_schema_extra or {}  # type: ignore[assignment]
    if extra.get("flag", "") is None:
        return []
    flag = flag_name(name)
    out = [flag, "--no-" + flag[2:]] if f.annotation is bool else [flag]
    out += list(extra.get("aliases", {}))
    return out + (["--watch"] if name == "libraries" else [])


def settings_markdown() -> str:
    """The settings table of ``docs/api.md``, made from the model (a test keeps them identical)."""
    from nomarr.config import LIBRARY_ENV, ServeConfig, env_name

    rows = [
        "| setting | file table | environment | flags | default | meaning |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, f in ServeConfig.model_fields.items():
        extra: dict[str, Any] = f.json_schema_extra or {}  # type: ignore[assignment]
        table = "`[[libraries]]`" if name == "libraries" else f"`[{extra['table']}]`"
        default = "—" if f.default in (None, []) else f"`{json.dumps(f.default)}`"
        env = f"`{env_name(name)}`" + (f", `{LIBRARY_ENV}`" if name == "libraries" else "")
        flags = ", ".join(f"`{x}`" for x in flag_spellings(name)) or "—"
        if name in _GLOBAL_FLAGS:
            flags = f"`nomarr {flags[1:-1]} serve`"
        meaning = str(f.description).replace("|", "/")
        rows.append(f"| `{name}` | {table} | {env} | {flags} | {default} | {meaning} |")
    return "\n".join(rows) + "\n"


def setting_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line, as ``{field: value}`` for :func:`config.load`."""
    from nomarr.config import ServeConfig

    out = {
        k: getattr(args, k) for k in ServeConfig.model_fields if getattr(args, k, None) is not None
    }
    if "libraries" in out:
        watch = {"watch": args.watch} if args.watch else {}
        out["libraries"] = [{"path": p, **watch} for p in out["libraries"]]
    return out


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the agent: HTTP API, watcher, periodic rescans, zeroconf."""
    import asyncio

    from nomarr import config, logs
    from nomarr.models.registry import ModelError
    from nomarr.store import StoreError

    try:
        cfg = config.load(args.config, flags=setting_flags(args))
        logs.setup(cfg.log_level)
        if args.watch and not args.library:
            for lib in cfg.libraries:
                lib.watch = args.watch
        for lib in cfg.libraries:
            if not os.path.isdir(lib.path):
                log_missing = f"library {lib.path}: not a directory (yet); it is watched by polling until it appears"
                print(f"nomarr: warning: {log_missing}", file=sys.stderr)
        if not cfg.libraries:
            print(
                "nomarr: warning: no library configured (--library PATH or libraries in the config file); "
                "serving queries and uploads only",
                file=sys.stderr,
            )
        from nomarr.server import serve

        asyncio.run(serve(cfg))
    except (config.ConfigError, ValueError, ModelError, StoreError) as e:
        raise UserError(str(e)) from e
    except OSError as e:  # the port is taken, the config dir is unwritable…
        raise UserError(f"cannot start: {e}") from e
    return 0


def add_serve(sub: argparse._SubParsersAction) -> None:
    """The ``serve`` subcommand; its setting flags are added when it is the command run."""
    sv = sub.add_parser(
        "serve",
        help="run the agent: HTTP API, file watcher, periodic rescans, zeroconf",
        description="Run nomarr as a service: keep the libraries' tags and vectors current "
        "(watching for changes, or polling network mounts), answer the HTTP API (DESIGN §5, "
        "OpenAPI at /api/v1/openapi.json) and announce it on the LAN with zeroconf. Settings "
        "come from the config file, then NOMARR_* environment variables, then these flags. "
        "On first start a bearer token is created (shown once, kept mode 0600 in the config "
        "dir). SIGTERM/Ctrl-C shut down gracefully.",
    )
    sv.add_argument(
        "--config",
        metavar="FILE",
        help="config file (default: $XDG_CONFIG_HOME/nomarr/config.toml, i.e. "
        "~/.config/nomarr/config.toml, if it exists; config/nomarr.example.toml documents it)",
    )
    if isinstance(sv, DeferredParser):
        sv.defer(add_setting_flags)
    else:  # a parser tree built by someone else
        add_setting_flags(sv)
    sv.set_defaults(func=cmd_serve)
