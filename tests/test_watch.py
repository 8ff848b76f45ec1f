"""LibraryWatcher against real files, real inotify (watchfiles) and a real event loop.

Timing is scaled down (settle 0.3 s, debounce 0.1 s, poll 0.2 s) and every wait polls for a
condition with a deadline instead of sleeping a fixed time; the only fixed sleeps are short ones
that check something does *not* happen again (a second submission of a settled file).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import TypeVar

import pytest
from nomarr.watch import LibrarySpec, LibraryWatcher
from nomarr.watch import fs as watch_fs
from nomarr.watch import watcher as watch

SETTLE = 0.3
DEBOUNCE = 0.1
DEADLINE = 5.0
T = TypeVar("T")


class Recorder:
    """A thread-safe submit callback that remembers (monotonic time, paths, reason)."""

    def __init__(self, fail_first: int = 0) -> None:
        self._lock = threading.Lock()
        self._calls: list[tuple[float, list[str], str]] = []
        self.attempts = 0
        self._fail_first = fail_first

    def __call__(self, paths: list[str], reason: str) -> None:
        with self._lock:
            self.attempts += 1
            if self.attempts <= self._fail_first:
                raise RuntimeError("scanner queue is broken")
            self._calls.append((time.monotonic(), list(paths), reason))

    @property
    def calls(self) -> list[tuple[float, list[str], str]]:
        with self._lock:
            return list(self._calls)

    def batches_with(self, path: Path | str) -> list[tuple[float, list[str], str]]:
        return [c for c in self.calls if str(path) in c[1]]

    def all_paths(self) -> set[str]:
        return {p for _, paths, _ in self.calls for p in paths}


async def wait_for(cond: Callable[[], object], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def watching(
    libs: list[LibrarySpec], rec: Recorder, **kw: object
) -> AsyncIterator[LibraryWatcher]:
    kw.setdefault("settle_s", SETTLE)
    kw.setdefault("debounce_s", DEBOUNCE)
    w = LibraryWatcher(libs, rec, **kw)  # type: ignore[arg-type]
    await w.start()
    try:
        yield w
    finally:
        await w.stop()


def run(coro: Coroutine[object, object, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 20))


def event_lib(root: Path, **kw: object) -> LibrarySpec:
    return LibrarySpec(str(root), "event", **kw)  # type: ignore[arg-type]


def test_growing_file_submitted_once_after_it_stops_growing(tmp_path: Path) -> None:
    rec = Recorder()
    f = tmp_path / "a.flac"

    async def main() -> float:
        async with watching([event_lib(tmp_path)], rec) as w:
            with open(f, "wb") as fh:  # a slow copy: 10 chunks, 0.1 s apart, over 3x settle_s
                for _ in range(10):
                    fh.write(b"x" * 4096)
                    fh.flush()
                    await asyncio.sleep(0.1)
                    assert not rec.batches_with(f), "submitted while still growing"
            last_write = time.monotonic()
            assert w.status()[0]["pending"] == 1
            await wait_for(lambda: rec.batches_with(f), "the file's submission")
            await asyncio.sleep(SETTLE + 2 * DEBOUNCE + 0.2)  # would a second one follow?
            return last_write

    last_write = run(main())
    batches = rec.batches_with(f)
    assert len(batches) == 1, rec.calls
    t, paths, reason = batches[0]
    assert paths == [str(f)] and reason == "event"
    assert t - last_write >= SETTLE, "submitted before it had been still for settle_s"


def test_non_audio_temp_and_ignored_files_are_not_submitted(tmp_path: Path) -> None:
    rec = Recorder()
    (tmp_path / "keep.flac").write_bytes(b"old")
    (tmp_path / "skip").mkdir()

    async def main() -> None:
        async with watching([event_lib(tmp_path)], rec, ignore=lambda p: "/skip/" in p):
            (tmp_path / "cover.jpg").write_bytes(b"jpg")
            (tmp_path / "notes.txt").write_bytes(b"txt")
            (tmp_path / "skip" / "b.mp3").write_bytes(b"mp3")
            tmp = tmp_path / ".keep.flac.nomarr-tmp"  # what agent.tagio does: temp, then replace
            tmp.write_bytes(b"new tags")
            os.replace(tmp, tmp_path / "keep.flac")
            (tmp_path / "LOUD.FLAC").write_bytes(b"upper-case suffix is still audio")
            await wait_for(lambda: rec.batches_with(tmp_path / "LOUD.FLAC"), "the audio file")
            await wait_for(lambda: rec.batches_with(tmp_path / "keep.flac"), "the replaced file")

    run(main())
    assert rec.all_paths() == {str(tmp_path / "LOUD.FLAC"), str(tmp_path / "keep.flac")}


def test_deletion_is_submitted_without_waiting_to_settle(tmp_path: Path) -> None:
    rec = Recorder()
    f = tmp_path / "gone.mp3"
    f.write_bytes(b"x")

    async def main() -> None:
        # settle_s far above the deadline: a deletion must not wait for it
        async with watching([event_lib(tmp_path)], rec, settle_s=30.0):
            f.unlink()
            await wait_for(lambda: rec.batches_with(f), "the deletion", timeout=3.0)

    run(main())
    assert rec.calls[0][1:] == ([str(f)], "event")


def test_rename_submits_both_paths_in_one_batch(tmp_path: Path) -> None:
    rec = Recorder()
    (tmp_path / "Artist").mkdir()
    old, new = tmp_path / "Artist" / "01 old.opus", tmp_path / "Artist" / "01 new.opus"
    old.write_bytes(b"x" * 1000)

    async def main() -> None:
        async with watching([event_lib(tmp_path)], rec):
            os.rename(old, new)
            await wait_for(lambda: rec.batches_with(new), "the renamed file")

    run(main())
    assert len(rec.calls) == 1, rec.calls
    assert rec.calls[0][1] == sorted([str(old), str(new)])


def test_move_into_new_directory_keeps_both_ends_together(tmp_path: Path) -> None:
    """`mkdir new` and `mv a.flac new/` reach the watcher as two change sets; the deletion of
    a.flac must still wait for the new directory so that both go out in one batch."""
    rec = Recorder()
    old = tmp_path / "a.flac"
    old.write_bytes(b"x")

    async def main() -> None:
        async with watching([event_lib(tmp_path)], rec, settle_s=1.0):
            (tmp_path / "new").mkdir()
            await asyncio.sleep(0.15)  # > watchfiles' 50 ms step: a separate change set
            os.rename(old, tmp_path / "new" / "a.flac")
            await wait_for(lambda: rec.calls, "the move")

    run(main())
    assert len(rec.calls) == 1 and rec.calls[0][1] == [str(old), str(tmp_path / "new")], rec.calls


def test_directory_rename_and_move_out_are_submitted_as_directories(tmp_path: Path) -> None:
    rec = Recorder()
    lib, away = tmp_path / "lib", tmp_path / "away"
    lib.mkdir()
    away.mkdir()
    a, b, c = lib / "Album (Vol. 2)", lib / "Album (Vol. 2) [remaster]", lib / "Other"
    for d in (a, c):
        d.mkdir()
        (d / "t.flac").write_bytes(b"x")

    async def main() -> None:
        async with watching([event_lib(lib)], rec) as w:
            # "Album (Vol. 2)" has a suffix ('. 2)'): only the watcher's directory list says it was
            # a directory once it is gone, so wait for that list (built in a thread at start).
            await wait_for(lambda: str(c) in w._roots[0].known_dirs, "the directory listing")
            os.rename(a, b)
            await wait_for(lambda: rec.batches_with(b), "the renamed directory")
            os.rename(c, away / "Other")
            await wait_for(lambda: rec.batches_with(c), "the directory moved away")

    run(main())
    assert rec.calls[0][1] == sorted([str(a), str(b)])
    assert rec.calls[1][1] == [str(c)]


def test_directory_moved_in_is_submitted_after_it_settles(tmp_path: Path) -> None:
    rec = Recorder()
    lib, outside = tmp_path / "lib", tmp_path / "outside"
    lib.mkdir()
    album = outside / "Album"
    album.mkdir(parents=True)
    (album / "01.flac").write_bytes(b"x" * 100)
    (album / "02.flac").write_bytes(b"x" * 100)

    async def main() -> float:
        async with watching([event_lib(lib)], rec):
            os.rename(album, lib / "Album")
            with open(lib / "Album" / "02.flac", "ab") as fh:  # still being written after the move
                for _ in range(8):
                    fh.write(b"y" * 1000)
                    fh.flush()
                    await asyncio.sleep(0.1)
                    assert not rec.calls, "directory submitted while a file in it still grew"
            last_write = time.monotonic()
            await wait_for(lambda: rec.calls, "the directory's submission")
            return last_write

    last_write = run(main())
    t, paths, reason = rec.calls[0]
    assert paths == [str(lib / "Album")] and reason == "event"
    assert t - last_write >= SETTLE


def test_poll_mode_submits_root_on_interval(tmp_path: Path) -> None:
    rec = Recorder()

    async def main() -> None:
        async with watching([LibrarySpec(str(tmp_path), "poll", poll_interval_s=0.2)], rec) as w:
            await wait_for(lambda: len(rec.calls) >= 2, "two polls")
            st = w.status()[0]
            assert st["watch"] == "poll" and st["running"] and st["fallback"] is None

    run(main())
    assert all(paths == [str(tmp_path)] and reason == "poll" for _, paths, reason in rec.calls)


def test_event_mode_rescan_job(tmp_path: Path) -> None:
    rec = Recorder()

    async def main() -> None:
        async with watching([event_lib(tmp_path, rescan_interval_s=0.2)], rec):
            await wait_for(lambda: rec.calls, "a safety-net rescan")

    run(main())
    assert rec.calls[0][1:] == ([str(tmp_path)], "rescan")


def test_off_mode_does_nothing(tmp_path: Path) -> None:
    rec = Recorder()

    async def main() -> None:
        async with watching([LibrarySpec(str(tmp_path), "off", poll_interval_s=0.05)], rec) as w:
            (tmp_path / "a.flac").write_bytes(b"x")
            await asyncio.sleep(0.3)
            assert w.status()[0]["running"] is False

    run(main())
    assert rec.calls == []


def test_missing_root_falls_back_to_poll_and_rearms_when_it_appears(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rec = Recorder()
    root = tmp_path / "not-mounted-yet"
    caplog.set_level(logging.WARNING, logger="nomarr.watch")

    async def main() -> None:
        async with watching([event_lib(root, poll_interval_s=0.2)], rec) as w:
            st = w.status()[0]
            assert st["watch"] == "poll" and st["configured_watch"] == "event"
            assert "does not exist" in st["fallback"]
            await asyncio.sleep(0.5)  # two poll intervals: a missing root is not submitted
            assert rec.calls == []
            root.mkdir()
            await wait_for(lambda: rec.calls, "the poll once the root exists")
            assert rec.calls[0][1:] == ([str(root)], "poll")
            st = w.status()[0]
            assert st["watch"] == "event" and st["running"] and st["fallback"] is None
            (root / "new.m4a").write_bytes(b"x")
            await wait_for(lambda: rec.batches_with(root / "new.m4a"), "an event after re-arming")

    run(main())
    assert any("does not exist" in r.getMessage() for r in caplog.records)


def test_watch_limit_failure_falls_back_to_poll(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken_awatch(*paths: object, **kw: object) -> AsyncIterator[set[object]]:
        raise OSError(errno.ENOSPC, "OS file watch limit reached")
        yield set()  # pragma: no cover - makes this an async generator

    monkeypatch.setattr(watch.watchfiles, "awatch", broken_awatch)
    rec = Recorder()

    async def main() -> None:
        async with watching([event_lib(tmp_path, poll_interval_s=0.2)], rec) as w:
            await wait_for(lambda: w.status()[0]["watch"] == "poll", "the fallback")
            st = w.status()[0]
            assert "fs.inotify.max_user_watches" in st["fallback"] and st["running"]
            await wait_for(lambda: rec.calls, "a poll")

    run(main())
    assert rec.calls[0][1:] == ([str(tmp_path)], "poll")
    assert any(
        "fs.inotify.max_user_watches" in r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING
    )


def test_watch_that_breaks_while_running_is_restarted_with_a_rescan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_awatch = watch.watchfiles.awatch
    calls = 0

    def flaky_awatch(*paths: object, **kw: object) -> AsyncIterator[set[object]]:
        nonlocal calls
        calls += 1
        if calls > 1:
            return real_awatch(*paths, **kw)  # type: ignore[arg-type]

        async def breaks() -> AsyncIterator[set[object]]:
            await asyncio.sleep(0.1)  # watching for a while, then what watchfiles raises on
            raise ExceptionGroup(
                "unhandled errors in a TaskGroup",
                [  # a non-UTF-8 file name
                    RuntimeError("Unable to decode path b'bad\\xe9.flac' to string")
                ],
            )
            yield set()  # pragma: no cover

        return breaks()

    monkeypatch.setattr(watch.watchfiles, "awatch", flaky_awatch)
    rec = Recorder()

    async def main() -> None:
        async with watching([event_lib(tmp_path)], rec) as w:
            await wait_for(lambda: rec.calls, "the rescan after the restart")
            assert rec.calls[0][1:] == ([str(tmp_path)], "rescan")
            st = w.status()[0]
            assert (
                st["watch"] == "event" and st["running"] and "Unable to decode" in st["last_error"]
            )
            (tmp_path / "after.ogg").write_bytes(b"x")
            await wait_for(
                lambda: rec.batches_with(tmp_path / "after.ogg"), "an event after the restart"
            )

    run(main())
    assert calls == 2


def test_network_filesystem_is_polled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watch, "fs_type", lambda path: "nfs4")
    rec = Recorder()

    async def main() -> None:
        async with watching([event_lib(tmp_path, poll_interval_s=0.2)], rec) as w:
            st = w.status()[0]
            assert st["watch"] == "poll" and "network filesystem (nfs4)" in st["fallback"]
            await wait_for(lambda: rec.calls, "a poll")

    run(main())


def test_fs_type_reads_mountinfo() -> None:
    assert watch_fs.fs_type("/") is not None
    assert watch_fs.unescape_mount(r"/mnt/my\040music") == "/mnt/my music"


def test_stop_is_idempotent_and_leaves_no_tasks(tmp_path: Path) -> None:
    rec = Recorder()

    async def main() -> None:
        w = LibraryWatcher(
            [
                event_lib(tmp_path / "a"),
                LibrarySpec(str(tmp_path / "b"), "poll", poll_interval_s=0.1),
            ],
            rec,
            settle_s=SETTLE,
            debounce_s=DEBOUNCE,
        )
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        await w.stop()  # before start: nothing to do
        await w.start()
        await w.start()  # idempotent too
        assert [s["running"] for s in w.status()] == [True, True]
        (tmp_path / "a" / "half-copied.flac").write_bytes(b"x")  # still settling at stop
        await wait_for(lambda: w.status()[0]["pending"] == 1, "the file to be settling")
        await w.stop()
        await w.stop()
        assert asyncio.all_tasks() == {asyncio.current_task()}
        assert [s["running"] for s in w.status()] == [False, False]
        assert [s["pending"] for s in w.status()] == [0, 0]
        n = len(rec.calls)
        await asyncio.sleep(0.3)  # the poll job is gone
        assert len(rec.calls) == n

    asyncio.run(main())  # not run(): its wait_for wrapper would be one more task


def test_failing_callback_does_not_kill_the_watcher(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rec = Recorder(fail_first=1)

    async def main() -> None:
        async with watching([event_lib(tmp_path)], rec) as w:
            (tmp_path / "first.wav").write_bytes(b"x")
            await wait_for(lambda: rec.attempts >= 1, "the failing call")
            st = w.status()[0]
            assert st["running"] and "submit failed" in st["last_error"]
            (tmp_path / "second.wav").write_bytes(b"x")
            await wait_for(lambda: rec.batches_with(tmp_path / "second.wav"), "the next submission")
            assert w.status()[0]["running"]

    run(main())
    assert any(r.getMessage() == "submit callback failed" for r in caplog.records)
