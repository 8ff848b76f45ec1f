"""The beets side of nomarr's listening features (docs/listens.md, docs/taste.md):

- ``beet nomarr-listens [QUERY]`` sends the play and skip counts beets holds (``play_count``,
  ``skip_count`` and ``last_played`` as the mpdstats plugin records them) to the agent, which makes
  every rise since the last report into listens — so it can run after every mpdstats session and
  a repeat adds nothing;
- ``beet nomarr-foryou`` prints (or writes as M3U) the agent's "for you", "rediscover" or
  "discovery" recommendations as beets items, each with its reason.

A module of the plugin rather than a plugin of its own (beets loads only ``beetsplug.nomarr``).
"""

from __future__ import annotations

import getpass
from typing import TYPE_CHECKING, Any

from beets import ui

if TYPE_CHECKING:
    import optparse

    from beets.library import Item, Library

PAGE = 2000
SOURCE = "beets"
MODES = ("for_you", "rediscover", "discovery")


def default_user(plugin: Any) -> str:
    """``nomarr.user`` in beets' config, else the login name."""
    u = plugin.config["user"].get()
    return str(u) if u else getpass.getuser()


def counter(item: Item) -> dict[str, Any] | None:
    """One item's counters (None when it was never played or skipped)."""
    plays = int(item.get("play_count") or 0)
    skips = int(item.get("skip_count") or 0)
    if plays <= 0 and skips <= 0:
        return None
    last = item.get("last_played")
    return {
        "item": f"beets:{item.id}",
        "plays": max(plays, 0),
        "skips": max(skips, 0),
        "last_played": float(last) if last else None,
        "mbid": item.get("mb_trackid") or None,
        "isrc": item.get("isrc") or None,
        "artist": item.get("artist") or None,
        "title": item.get("title") or None,
        "album": item.get("album") or None,
        "duration": float(item.length) if item.get("length") else None,
    }


def listens_command(plugin: Any) -> ui.Subcommand:
    cmd = ui.Subcommand(
        "nomarr-listens",
        help="send play/skip counts (mpdstats) to the nomarr agent: rises become listens",
    )
    cmd.parser.add_option("--user", help="the agent's user id (default: nomarr.user, or login)")

    def run(lib: Library, opts: optparse.Values, args: list[str]) -> None:
        from nomarr_client import NomarrError

        user = opts.user or default_user(plugin)
        items = [c for c in (counter(it) for it in lib.items(args)) if c]
        added = matched = unmatched = 0
        try:
            for i in range(0, len(items), PAGE):
                res = plugin.client().post_counters(user, SOURCE, items[i : i + PAGE])
                added, matched, unmatched = (
                    added + res.added,
                    matched + res.matched,
                    unmatched + res.unmatched,
                )
        except NomarrError as e:
            raise ui.UserError(f"nomarr: {e.message}") from None
        ui.print_(
            f"nomarr: {len(items)} items with counts: {added} new listens for {user} "
            f"({matched} matched to the agent's library, {unmatched} not)"
        )

    cmd.func = run
    return cmd


def foryou_command(plugin: Any) -> ui.Subcommand:
    cmd = ui.Subcommand(
        "nomarr-foryou", help="recommendations from your listening (for you, rediscover, discovery)"
    )
    cmd.parser.add_option(
        "--mode", default="for_you", choices=MODES, help="for_you (default), rediscover, discovery"
    )
    cmd.parser.add_option("--user", help="the agent's user id (default: nomarr.user, or login)")
    cmd.parser.add_option("-n", "--number", type="int", default=None, help="how many")
    cmd.parser.add_option("-o", "--output", help="write an M3U playlist to this file")
    cmd.parser.add_format_option()

    def run(lib: Library, opts: optparse.Values, args: list[str]) -> None:
        from beetsplug.nomarr import _write_m3u
        from nomarr_client import NomarrError

        user = opts.user or default_user(plugin)
        n = opts.number or int(plugin.config["limit"].get(int))
        try:
            recs = plugin.client().recommendations(user, opts.mode, n, filters={"files_only": True})
        except NomarrError as e:
            raise ui.UserError(f"nomarr: {e.message}") from None
        mapped = plugin.map_hits(lib, recs.items)
        if opts.output:
            _write_m3u(opts.output, [it for _, it in mapped])
            ui.print_(f"nomarr: {len(mapped)} items written to {opts.output}")
            return
        for r, it in mapped:
            ui.print_(f"{format(it, opts.format or '')}  ({r.reason})")
        if len(mapped) < len(recs.items):
            plugin._log.info(
                "{} of the agent's answers are not in this beets library",
                len(recs.items) - len(mapped),
            )

    cmd.func = run
    return cmd
