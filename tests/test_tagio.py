"""agent.tagio: nom: keys in real files of every supported format, written safely.

Every file here is a genuine bitstream made by PyAV's encoders (conftest.make_audio), and every
write is checked three ways: nomarr's own reader, TagLib (what Navidrome uses) and the audio
packet hash, which must never change.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import mutagen
import pytest
import taglib
from mutagen.asf import ASFUnicodeAttribute
from mutagen.id3 import ID3, TIT2, TMOO, TPE1, TXXX, TYER, Encoding
from mutagen.mp4 import AtomDataType, MP4FreeForm
from nomarr import tagio
from nomarr.tagio import TagError, nom_audio_md5, read_tags, recover, write_tags

from .conftest import FORMATS, REPO

NS = "nom:onnx_musicnn_msd-1_msd50_1_"
NS2 = "nom:onnx_musicnn_msd-2_msd50_1_"
SET_A = {NS + "happy": "0.7340", NS + "happy_high": "0.7340", NS + "provenance": "3f2a9c01"}
SET_B = {NS + "happy": "0.7340", NS2 + "sad": "0.1200", NS2 + "provenance": "77aa0b1c"}
ID3_EXT = {"mp3", "wav", "aiff"}
VORBIS_EXT = {"flac", "ogg", "opus"}


class _Crash(BaseException):
    """Stands in for the process dying: no ``except Exception`` handler may catch it."""


def _make(make_audio, ext: str, name: str = "t", seconds: float = 1.0) -> Path:
    return make_audio(f"{name}.{ext}", seconds=seconds, sr=48000 if ext == "opus" else 44100)


def _add_foreign(p: Path, ext: str) -> None:
    """A title and a custom non-nom field, as another tagger would have written them."""
    f = mutagen.File(p)
    if f.tags is None:
        f.add_tags()
    t = f.tags
    if ext in ID3_EXT:
        t.add(TIT2(encoding=Encoding.UTF8, text=["Foreign Title"]))
        t.add(TXXX(encoding=Encoding.UTF8, desc="CUSTOM_FIELD", text=["keep me"]))
        f.save(v2_version=4)
        return
    if ext in VORBIS_EXT:
        t["TITLE"] = "Foreign Title"
        t["CUSTOM_FIELD"] = "keep me"
    elif ext == "m4a":
        t["©nam"] = ["Foreign Title"]
        t["----:com.apple.iTunes:CUSTOM_FIELD"] = [MP4FreeForm(b"keep me", AtomDataType.UTF8)]
    elif ext == "wma":
        t["Title"] = [ASFUnicodeAttribute("Foreign Title")]
        t["CUSTOM_FIELD"] = [ASFUnicodeAttribute("keep me")]
    f.save()


def _custom_field(p: Path, ext: str) -> str:
    t = mutagen.File(p).tags
    if ext in ID3_EXT:
        return str(t["TXXX:CUSTOM_FIELD"].text[0])
    if ext in VORBIS_EXT:
        return t["custom_field"][0]
    if ext == "m4a":
        return bytes(t["----:com.apple.iTunes:CUSTOM_FIELD"][0]).decode()
    return str(t["CUSTOM_FIELD"][0])


def _taglib(p: Path) -> tuple[dict[str, list[str]], list[str]]:
    with taglib.File(str(p)) as f:
        return dict(f.tags), list(f.unsupported)


def _snapshot(p: Path) -> tuple[bytes, int, int]:
    st = os.stat(p)
    return p.read_bytes(), st.st_mtime_ns, st.st_ino


def _no_temps(d: Path) -> bool:
    return not [x for x in d.iterdir() if x.name.endswith(tagio.TMP_SUFFIX)]


@pytest.fixture(autouse=True)
def _quiet_ffmpeg() -> None:
    import av.logging

    av.logging.set_level(av.logging.PANIC)


# ---------------------------------------------------------------- every format, end to end


@pytest.mark.parametrize("ext", sorted(FORMATS))
def test_write_read_rewrite_every_format(make_audio, ext):
    p = _make(make_audio, ext)
    _add_foreign(p, ext)
    audio = nom_audio_md5(p)

    r = write_tags(p, SET_A, mood="happy")
    assert (r.changed, r.method, r.mood_written) == (True, "replace", "happy")
    assert r.written == SET_A and r.removed == []
    t = read_tags(p)
    assert t.nom == SET_A and t.mood == "happy" and t.legacy == {}
    assert t.ids["title"] == "Foreign Title"
    assert t.format == {"mp3": "id3", "wav": "id3", "aiff": "id3", "m4a": "mp4", "wma": "asf"}.get(
        ext, "vorbis"
    )
    assert nom_audio_md5(p) == audio

    tl, unsupported = _taglib(p)
    assert tl["MOOD"] == ["happy"] and tl["TITLE"] == ["Foreign Title"]
    if ext == "wma":
        # TagLib maps only known ASF attribute names into its property map; custom ones are
        # listed as "unsupported" (still readable via ASF::Tag::attributeListMap()).
        assert not any(k.lower().startswith("nom:") for k in tl)
        assert set(SET_A) <= set(unsupported)
    else:
        # TagLib reports every nom key upper-cased: same key, case-insensitively.
        for k, v in SET_A.items():
            assert tl[k.upper()] == [v]

    # A new model build: stale keys go, equal keys stay, foreign tags survive untouched.
    r = write_tags(p, SET_B, mood="sad", mood_owned="happy")
    assert r.method == "replace" and r.mood_written == "sad"
    assert r.written == {k: v for k, v in SET_B.items() if k not in SET_A}
    assert sorted(r.removed) == sorted(k for k in SET_A if k not in SET_B)
    t = read_tags(p)
    assert t.nom == SET_B and t.mood == "sad"
    assert t.ids["title"] == "Foreign Title"
    assert _custom_field(p, ext) == "keep me"
    assert nom_audio_md5(p) == audio
    tl, _ = _taglib(p)
    assert tl["TITLE"] == ["Foreign Title"]
    assert not any(k.lower().startswith(NS + "happy_high") for k in tl)

    # Same request again: nothing happens at all.
    before = _snapshot(p)
    r = write_tags(p, SET_B, mood="sad", mood_owned="sad")
    assert (r.changed, r.method, r.written, r.removed) == (False, "unchanged", {}, [])
    assert _snapshot(p) == before
    assert _no_temps(p.parent)


def test_audio_md5_tracks_audio_not_tags(make_audio):
    a = make_audio("a.flac", seconds=1.0, seed=1)
    b = make_audio("b.flac", seconds=1.0, seed=2)
    assert nom_audio_md5(a) != nom_audio_md5(b)
    before = nom_audio_md5(a)
    write_tags(a, SET_A)
    assert nom_audio_md5(a) == before


def test_verify_false_still_writes(make_audio):
    p = _make(make_audio, "mp3")
    assert write_tags(p, SET_A, verify=False).method == "replace"
    assert read_tags(p).nom == SET_A


def test_corpus_file(corpus, tmp_path):
    p = tmp_path / "sh01.ogg"
    shutil.copyfile(corpus / "sh01.ogg", p)  # the corpus is read-only; the copy must not be
    audio = nom_audio_md5(p)
    others = [kv for kv in mutagen.File(p).tags if not kv[0].lower().startswith("nom:")]
    write_tags(p, SET_A, mood="happy")
    assert read_tags(p).nom == SET_A
    assert nom_audio_md5(p) == audio
    assert [kv for kv in mutagen.File(p).tags if not kv[0].lower().startswith("nom:")][
        : len(others)
    ] == others
    assert _taglib(p)[0][(NS + "happy").upper()] == ["0.7340"]


# ---------------------------------------------------------------- MOOD ownership


@pytest.mark.parametrize("ext", ["mp3", "flac", "m4a", "wma"])
def test_mood_ownership(make_audio, ext):
    p = _make(make_audio, ext)
    write_tags(p, SET_A, mood="happy")
    # nomarr owns it: updated.
    assert write_tags(p, SET_A, mood="sad", mood_owned="happy").mood_written == "sad"
    # The user sets their own MOOD: never overwritten, whatever nomarr thinks it owned.
    f = mutagen.File(p)
    if ext == "mp3":
        f.tags.setall("TMOO", [TMOO(encoding=Encoding.UTF8, text=["Chill"])])
    elif ext == "flac":
        f.tags["MOOD"] = "Chill"
    elif ext == "m4a":
        f.tags["----:com.apple.iTunes:MOOD"] = [MP4FreeForm(b"Chill", AtomDataType.UTF8)]
    else:
        f.tags["WM/Mood"] = [ASFUnicodeAttribute("Chill")]
    f.save()
    r = write_tags(p, SET_A, mood="happy", mood_owned="sad")
    assert r.mood_written is None and r.method == "unchanged"
    assert read_tags(p).mood == "Chill"
    # mood=None removes only a MOOD nomarr owns.
    assert write_tags(p, SET_A, mood=None, mood_owned="sad").method == "unchanged"
    assert read_tags(p).mood == "Chill"
    f = mutagen.File(p)
    if ext == "mp3":
        f.tags.delall("TMOO")
    elif ext == "flac":
        del f.tags["MOOD"]
    elif ext == "m4a":
        del f.tags["----:com.apple.iTunes:MOOD"]
    else:
        del f.tags["WM/Mood"]
    f.save()
    assert write_tags(p, SET_A, mood="calm").mood_written == "calm"  # empty → filled
    r = write_tags(p, SET_A, mood=None, mood_owned="calm")
    assert r.mood_written == "" and read_tags(p).mood is None
    assert "MOOD" not in _taglib(p)[0]


def test_id3v23_txxx_mood_counts_as_user_mood(make_audio):
    p = _make(make_audio, "mp3")
    tags = ID3(p)
    tags.add(TXXX(encoding=Encoding.UTF8, desc="MOOD", text=["Mellow"]))
    tags.save(p)
    assert write_tags(p, SET_A, mood="happy").mood_written is None
    assert read_tags(p).mood == "Mellow"


# ---------------------------------------------------------------- key case and legacy keys


def test_case_variant_vorbis_key_is_replaced(make_audio):
    p = _make(make_audio, "flac")
    f = mutagen.File(p)
    f.tags[(NS + "happy").upper()] = "0.5000"
    f.tags["NOM:ONNX_OLD_1_X_1_GONE"] = "0.1000"
    f.save()
    assert read_tags(p).nom == {NS + "happy": "0.5000", "nom:onnx_old_1_x_1_gone": "0.1000"}
    r = write_tags(p, {NS + "happy": "0.7340"})
    assert r.written == {NS + "happy": "0.7340"} and r.removed == ["nom:onnx_old_1_x_1_gone"]
    names = [k for k, _ in mutagen.File(p).tags if k.lower().startswith("nom:")]
    assert names == [NS + "happy"]
    # Same value but a non-canonical spelling is also normalised (then stable).
    f = mutagen.File(p)
    del f.tags[NS + "happy"]
    f.tags[(NS + "happy").upper()] = "0.7340"
    f.save()
    assert write_tags(p, {NS + "happy": "0.7340"}).method == "replace"
    assert write_tags(p, {NS + "happy": "0.7340"}).method == "unchanged"


def test_case_variant_id3_desc_is_replaced(make_audio):
    p = _make(make_audio, "mp3")
    tags = ID3()
    tags.add(TXXX(encoding=Encoding.UTF8, desc=(NS + "happy").upper(), text=["0.5000"]))
    tags.save(p)
    write_tags(p, {NS + "happy": "0.7340"})
    descs = [f.desc for f in ID3(p).getall("TXXX")]
    assert descs == [NS + "happy"]


def test_remove_legacy_and_migrate(make_audio):
    p = _make(make_audio, "ogg")
    f = mutagen.File(p)
    f.tags["essentia:mood_happy"] = "0.73"
    f.tags["ESSENTIA:onnx_musicnn_msd-1_msd50_1_sad"] = "0.2"
    f.tags["essentia:weird thing"] = "x"
    f.tags[NS + "sad"] = "0.2500"  # already migrated once: wins over the legacy value
    f.save()
    t = read_tags(p)
    assert set(t.legacy) == {
        "essentia:mood_happy",
        "essentia:onnx_musicnn_msd-1_msd50_1_sad",
        "essentia:weird thing",
    }
    target = "nom:essentia_musicnn_msd-2_mood-happy_1_happy"
    r = tagio.migrate_legacy(p, mapping={"essentia:mood_happy": target})
    assert r.method == "replace" and r.unmapped == ["essentia:weird thing"]
    assert r.written == {target: "0.7300"}
    assert sorted(r.removed) == ["essentia:mood_happy", "essentia:onnx_musicnn_msd-1_msd50_1_sad"]
    t = read_tags(p)
    assert t.nom == {NS + "sad": "0.2500", target: "0.7300"}
    assert t.legacy == {"essentia:weird thing": "x"}
    # write_tags(remove_legacy=True) removes whatever is left.
    r = write_tags(p, t.nom, remove_legacy=True)
    assert r.removed == ["essentia:weird thing"] and read_tags(p).legacy == {}


def test_invalid_keys_are_rejected(make_audio):
    p = _make(make_audio, "flac")
    for bad in ({(NS + "happy").upper(): "1"}, {"nom:short": "1"}, {NS + "happy": ""}):
        with pytest.raises(ValueError):
            write_tags(p, bad)


# ---------------------------------------------------------------- refusing to write


def test_read_only_by_mode_bits(make_audio):
    # Root passes permission checks, so the missing write bits themselves mean "read-only".
    p = _make(make_audio, "flac")
    p.chmod(0o444)
    before = _snapshot(p)
    with pytest.raises(TagError) as e:
        write_tags(p, SET_A)
    assert e.value.reason == "read-only" and str(p) in str(e.value)
    assert _snapshot(p) == before and _no_temps(p.parent)


def test_read_only_simulated_access_and_filesystem(make_audio, monkeypatch):
    # Simulates what a non-root user sees (access() says no) and a read-only mount, which this
    # test environment (often root, writable tmp) cannot produce for real.
    p = _make(make_audio, "mp3")
    before = _snapshot(p)
    real_access = os.access
    monkeypatch.setattr(
        os,
        "access",
        lambda q, m, **kw: (
            False if (m & os.W_OK and os.fspath(q) == str(p)) else real_access(q, m, **kw)
        ),
    )
    with pytest.raises(TagError) as e:
        write_tags(p, SET_A)
    assert e.value.reason == "read-only"
    monkeypatch.setattr(os, "access", real_access)
    monkeypatch.setattr(tagio.writer, "_fs_readonly", lambda d: True)
    with pytest.raises(TagError) as e:
        write_tags(p, SET_A)
    assert e.value.reason == "read-only"
    assert _snapshot(p) == before and _no_temps(p.parent)


def _modes_enforced(d: Path) -> bool:
    probe = d / "probe"
    probe.mkdir()
    probe.chmod(0o555)
    try:
        (probe / "x").touch()
    except PermissionError:
        return True
    finally:
        probe.chmod(0o755)
    return False


def test_read_only_directory_uses_journal(make_audio, tmp_path):
    if not _modes_enforced(tmp_path):
        pytest.skip("this user bypasses permission bits (root with CAP_DAC_OVERRIDE)")
    lib = tmp_path / "lib"
    lib.mkdir()
    p = _make(make_audio, "flac").rename(lib / "t.flac")
    ino = p.stat().st_ino
    jdir = tmp_path / "journal"
    lib.chmod(0o555)
    try:
        r = write_tags(p, SET_A, journal_dir=jdir)
        assert r.method == "inplace-journal" and p.stat().st_ino == ino
        assert read_tags(p).nom == SET_A
        p.chmod(0o444)
        with pytest.raises(TagError) as e:
            write_tags(p, SET_B, journal_dir=jdir)
        assert e.value.reason == "read-only"
    finally:
        lib.chmod(0o755)


def test_unwritable_directory_simulated(make_audio, tmp_path, monkeypatch):
    p = _make(make_audio, "m4a")
    ino = p.stat().st_ino
    monkeypatch.setattr(tagio.writer, "_dir_writable", lambda d: False)
    with pytest.raises(TagError) as e:
        write_tags(p, SET_A)
    assert e.value.reason == "io"
    r = write_tags(p, SET_A, journal_dir=tmp_path / "j")
    assert r.method == "inplace-journal" and p.stat().st_ino == ino
    assert read_tags(p).nom == SET_A and list((tmp_path / "j").iterdir()) == []


@pytest.mark.parametrize(
    "content, name, reason",
    [
        (b"hello, this is not audio\n" * 20, "text.flac", "corrupt"),
        (b"ID3 whatever", "notes.txt", "unsupported"),
    ],
)
def test_not_audio(tmp_path, content, name, reason):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(TagError) as e:
        write_tags(p, SET_A)
    assert e.value.reason == reason
    with pytest.raises(TagError):
        read_tags(p)
    assert p.read_bytes() == content


@pytest.mark.parametrize("ext, cut", [("flac", 200), ("m4a", 0.5), ("wav", 0.5), ("ogg", 0.5)])
def test_truncated_file_is_refused_and_untouched(make_audio, ext, cut):
    p = _make(make_audio, ext)
    data = p.read_bytes()
    p.write_bytes(data[: int(cut * len(data)) if cut < 1 else cut])
    before = _snapshot(p)
    with pytest.raises(TagError) as e:
        write_tags(p, SET_A)
    assert e.value.reason == "corrupt"
    assert _snapshot(p) == before and _no_temps(p.parent)


def test_missing_file(tmp_path):
    with pytest.raises(TagError) as e:
        write_tags(tmp_path / "gone.mp3", SET_A)
    assert e.value.reason == "vanished"


@pytest.mark.parametrize("inplace", [False, True])
def test_file_vanishing_mid_write(make_audio, tmp_path, monkeypatch, inplace):
    p = _make(make_audio, "opus")
    jdir = tmp_path / "j"
    if inplace:
        os.link(p, tmp_path / "other-name.opus")
    real = tagio.edit._tag_copy

    def deleting(*a, **kw):
        p.unlink()
        return real(*a, **kw)

    monkeypatch.setattr(tagio.edit, "_tag_copy", deleting)
    with pytest.raises(TagError) as e:
        write_tags(p, SET_A, journal_dir=jdir)
    assert e.value.reason == "vanished"
    assert not p.exists() and _no_temps(tmp_path)
    assert not jdir.exists() or list(jdir.iterdir()) == []


def test_file_changed_mid_write_is_not_clobbered(make_audio, monkeypatch):
    p = _make(make_audio, "flac")
    real = tagio.edit._tag_copy

    def other_tagger(*a, **kw):
        f = mutagen.File(p)
        f.tags["TITLE"] = "edited meanwhile"
        f.save()
        return real(*a, **kw)

    monkeypatch.setattr(tagio.edit, "_tag_copy", other_tagger)
    with pytest.raises(TagError) as e:
        write_tags(p, SET_A)
    assert e.value.reason == "io"
    assert read_tags(p).ids["title"] == "edited meanwhile" and read_tags(p).nom == {}
    assert _no_temps(p.parent)


@pytest.mark.parametrize("fault", ["audio-damaged", "tags-not-saved", "foreign-tag-changed"])
def test_verify_failure_leaves_original(make_audio, monkeypatch, fault):
    p = _make(make_audio, "flac")
    before = _snapshot(p)
    real_save = tagio.edit._save

    def faulty(obj, path):
        if fault == "tags-not-saved":
            return
        if fault == "foreign-tag-changed":
            obj.tags["ENCODER"] = "someone else"
        real_save(obj, path)
        if fault == "audio-damaged":  # a byte of the last audio frame flips in the copy
            with open(path, "r+b") as fh:
                fh.seek(-100, os.SEEK_END)
                b = fh.read(1)
                fh.seek(-100, os.SEEK_END)
                fh.write(bytes([b[0] ^ 0xFF]))

    monkeypatch.setattr(tagio.edit, "_save", faulty)
    with pytest.raises(TagError) as e:
        write_tags(p, SET_A)
    assert e.value.reason == "verify-failed"
    assert _snapshot(p) == before and _no_temps(p.parent)


# ---------------------------------------------------------------- what a replace must keep


def test_mode_owner_xattr_and_symlink_preserved(make_audio, tmp_path):
    p = _make(make_audio, "flac")
    p.chmod(0o640)
    xattr = False
    try:
        os.setxattr(p, "user.nomarr-test", b"keep")
        xattr = True
    except (OSError, AttributeError):
        pass
    owner = (p.stat().st_uid, p.stat().st_gid)
    try:  # as root: a file owned by someone else must stay theirs after the replace
        os.chown(p, 4321, 4322)
        owner = (4321, 4322)
    except PermissionError:
        pass
    link = tmp_path / "link.flac"
    link.symlink_to(p)
    r = write_tags(link, SET_A)
    assert r.method == "replace"
    assert link.is_symlink() and read_tags(p).nom == SET_A
    st = p.stat()
    assert stat.S_IMODE(st.st_mode) == 0o640 and (st.st_uid, st.st_gid) == owner
    if xattr:
        assert os.getxattr(p, "user.nomarr-test") == b"keep"


def test_hardlink_keeps_inode_and_both_names(make_audio, tmp_path):
    p = _make(make_audio, "mp3")
    other = tmp_path / "sub"
    other.mkdir()
    q = other / "same-track.mp3"
    os.link(p, q)
    audio = nom_audio_md5(p)
    ino = p.stat().st_ino
    before = _snapshot(p)
    with pytest.raises(TagError) as e:  # in-place needs a journal dir
        write_tags(p, SET_A)
    assert e.value.reason == "io" and _snapshot(p) == before
    jdir = tmp_path / "journal"
    r = write_tags(p, SET_A, mood="happy", journal_dir=jdir)
    assert r.method == "inplace-journal" and r.mood_written == "happy"
    assert p.stat().st_ino == q.stat().st_ino == ino and p.stat().st_nlink == 2
    assert read_tags(q).nom == SET_A and nom_audio_md5(q) == audio
    assert list(jdir.iterdir()) == []
    assert write_tags(q, SET_A, mood="happy", mood_owned="happy", journal_dir=jdir).method == (
        "unchanged"
    )


@pytest.mark.parametrize("why", ["cannot-chown-upfront", "fchown-refused"])
def test_foreign_owner_uses_inplace(make_audio, tmp_path, monkeypatch, why):
    # A replace creates a new inode owned by nomarr; when the original owner cannot be restored
    # the bytes go back into the original inode instead.
    p = _make(make_audio, "ogg")
    if why == "cannot-chown-upfront":
        monkeypatch.setattr(tagio.writer, "_can_chown", lambda st: False)
    else:
        try:
            os.chown(p, 4321, 4322)
        except PermissionError:
            pytest.skip("needs CAP_CHOWN to give the file a foreign owner")

        def refuse(*a, **kw):
            raise PermissionError(errno.EPERM, "Operation not permitted")

        monkeypatch.setattr(os, "fchown", refuse)
    st = p.stat()
    r = write_tags(p, SET_A, journal_dir=tmp_path / "j")
    assert r.method == "inplace-journal" and read_tags(p).nom == SET_A
    after = p.stat()
    assert (after.st_ino, after.st_uid, after.st_gid) == (st.st_ino, st.st_uid, st.st_gid)
    assert _no_temps(p.parent)


def test_inplace_open_refused_leaves_no_journal(make_audio, tmp_path, monkeypatch):
    # e.g. an immutable file (chattr +i) or a share remounted read-only after the checks.
    p = _make(make_audio, "flac")
    os.link(p, tmp_path / "alias.flac")
    before = _snapshot(p)
    real_open = os.open

    def refusing(path, flags, *a, **kw):
        if os.fspath(path) == str(p) and flags & os.O_WRONLY:
            raise PermissionError(errno.EPERM, "Operation not permitted")
        return real_open(path, flags, *a, **kw)

    monkeypatch.setattr(os, "open", refusing)
    with pytest.raises(TagError) as e:
        write_tags(p, SET_A, journal_dir=tmp_path / "j")
    assert e.value.reason == "read-only"
    assert _snapshot(p) == before and list((tmp_path / "j").iterdir()) == []


def test_replace_refused_falls_back_to_inplace(make_audio, tmp_path, monkeypatch):
    # A bind-mounted single file (Docker) cannot be renamed over: EBUSY.
    p = _make(make_audio, "wma")
    real_replace = os.replace

    def busy(src, dst, *a, **kw):
        if os.fspath(dst) == str(p):
            raise OSError(errno.EBUSY, "Device or resource busy")
        return real_replace(src, dst, *a, **kw)

    monkeypatch.setattr(os, "replace", busy)
    r = write_tags(p, SET_A, journal_dir=tmp_path / "j")
    assert r.method == "inplace-journal" and read_tags(p).nom == SET_A


# ---------------------------------------------------------------- format-specific care


def _set_info(p: Path, fields: dict[bytes, bytes]) -> None:
    """Replace the WAV's LIST/INFO chunk (FFmpeg writes one with ISFT) with ``fields``."""
    data = p.read_bytes()
    body, off = b"", 12
    while off + 8 <= len(data):
        (n,) = struct.unpack("<I", data[off + 4 : off + 8])
        end = off + 8 + n + (n & 1)
        if data[off : off + 4] != b"LIST":
            body += data[off:end]
        off = end
    sub = b""
    for cid, text in fields.items():
        v = text + b"\0"
        v += b"\0" * (len(v) & 1)
        sub += cid + struct.pack("<I", len(v)) + v
    body += b"LIST" + struct.pack("<I", 4 + len(sub)) + b"INFO" + sub
    p.write_bytes(b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body)


def test_wav_info_fields_stay_visible_to_taglib(make_audio):
    # TagLib shows only the ID3 chunk once one exists, so INFO fields are mirrored into it.
    p = _make(make_audio, "wav")
    _set_info(p, {b"INAM": b"Info Title", b"IART": b"Info Artist"})
    assert _taglib(p)[0]["TITLE"] == ["Info Title"]
    audio = nom_audio_md5(p)
    write_tags(p, SET_A)
    tl, _ = _taglib(p)
    assert tl["TITLE"] == ["Info Title"] and tl["ARTIST"] == ["Info Artist"]
    assert read_tags(p).ids == {"title": "Info Title", "artist": "Info Artist"}
    assert tl[(NS + "happy").upper()] == ["0.7340"]
    assert nom_audio_md5(p) == audio and b"INAM" in p.read_bytes()


def test_mp3_id3v1_only_is_kept_and_seeded(make_audio):
    p = _make(make_audio, "mp3")
    f = mutagen.File(p)
    f.tags.add(TIT2(encoding=Encoding.LATIN1, text=["V1 Title"]))
    f.tags.add(TPE1(encoding=Encoding.LATIN1, text=["V1 Artist"]))
    f.save(v1=2)
    ID3(p).delete(p, delete_v1=False, delete_v2=True)
    tail = p.read_bytes()[-128:]
    assert tail[:3] == b"TAG" and _taglib(p)[0]["TITLE"] == ["V1 Title"]
    write_tags(p, SET_A)
    assert p.read_bytes()[-128:] == tail
    tl, _ = _taglib(p)
    assert tl["TITLE"] == ["V1 Title"] and tl["ARTIST"] == ["V1 Artist"]
    # v2 present now: a second write must not regenerate (blank) the v1 tag.
    write_tags(p, SET_B)
    assert p.read_bytes()[-128:] == tail


def test_id3v23_file_is_upgraded_without_losing_fields(make_audio):
    p = _make(make_audio, "mp3")
    tags = ID3(p)
    tags.add(TIT2(encoding=Encoding.UTF16, text=["Vingt-trois"]))
    tags.add(TYER(encoding=Encoding.LATIN1, text=["1999"]))
    tags.update_to_v23()
    tags.save(p, v2_version=3)
    assert ID3(p).version[:2] == (2, 3)
    write_tags(p, SET_A)
    t = ID3(p)
    assert t.version[:2] == (2, 4) and str(t["TDRC"].text[0]) == "1999"
    tl, _ = _taglib(p)
    assert tl["TITLE"] == ["Vingt-trois"] and tl["DATE"] == ["1999"]


# ---------------------------------------------------------------- crash recovery


def _crash_copy_back(monkeypatch, how: str) -> None:
    """Replace the copy-back with one that dies part-way, leaving the original as ``how`` says."""

    def dying(tmp, real, dev, ino):
        new = Path(tmp).read_bytes()
        if how == "prefix-of-new":  # the copy-back wrote half the new bytes
            Path(real).write_bytes(new[: len(new) // 2])
        elif how == "truncated-original":
            old = Path(real).read_bytes()
            os.truncate(real, len(old) // 2)
        raise _Crash

    monkeypatch.setattr(tagio.inplace, "_copy_back", dying)


@pytest.mark.parametrize("how", ["not-started", "prefix-of-new", "truncated-original"])
def test_recover_finishes_interrupted_copy_back(make_audio, tmp_path, monkeypatch, how):
    p = _make(make_audio, "flac")
    os.link(p, tmp_path / "alias.flac")
    audio = nom_audio_md5(p)
    original = p.read_bytes()
    jdir = tmp_path / "journal"
    real_copy_back = tagio.inplace._copy_back
    _crash_copy_back(monkeypatch, how)
    with pytest.raises(_Crash):
        write_tags(p, SET_A, mood="happy", journal_dir=jdir)
    if how == "not-started":
        assert p.read_bytes() == original  # crash before copy-back: original intact
    recs = list(jdir.glob("*.json"))
    assert len(recs) == 1 and json.loads(recs[0].read_text())["path"] == str(p)
    monkeypatch.setattr(tagio.inplace, "_copy_back", real_copy_back)
    assert recover(jdir) == [str(p)]
    assert read_tags(p).nom == SET_A and read_tags(p).mood == "happy"
    assert nom_audio_md5(p) == audio and p.stat().st_nlink == 2
    assert list(jdir.iterdir()) == []
    assert recover(jdir) == []


def test_recover_abandons_when_copy_damaged_and_original_intact(make_audio, tmp_path, monkeypatch):
    p = _make(make_audio, "ogg")
    os.link(p, tmp_path / "alias.ogg")
    original = p.read_bytes()
    jdir = tmp_path / "journal"
    _crash_copy_back(monkeypatch, "not-started")
    with pytest.raises(_Crash):
        write_tags(p, SET_A, journal_dir=jdir)
    (tmp,) = jdir.glob("*" + tagio.TMP_SUFFIX)
    data = bytearray(tmp.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tmp.write_bytes(bytes(data))
    assert recover(jdir) == [str(p)]
    assert p.read_bytes() == original and list(jdir.iterdir()) == []


def test_recover_keeps_journal_when_nothing_is_safe(make_audio, tmp_path, monkeypatch):
    p = _make(make_audio, "ogg")
    os.link(p, tmp_path / "alias.ogg")
    jdir = tmp_path / "journal"
    _crash_copy_back(monkeypatch, "prefix-of-new")
    with pytest.raises(_Crash):
        write_tags(p, SET_A, journal_dir=jdir)
    (tmp,) = jdir.glob("*" + tagio.TMP_SUFFIX)
    tmp.unlink()  # the verified copy is lost too: nothing can be restored
    assert recover(jdir) == []
    assert len(list(jdir.glob("*.json"))) == 1  # kept for a human
    with pytest.raises(TagError) as e:  # and the file is not written over meanwhile
        write_tags(p, SET_A, journal_dir=jdir)
    assert e.value.reason == "io"


def test_recover_after_finished_copy_back(make_audio, tmp_path, monkeypatch):
    p = _make(make_audio, "m4a")
    os.link(p, tmp_path / "alias.m4a")
    jdir = tmp_path / "journal"

    def dying_cleanup(rec, tmp):
        raise _Crash

    monkeypatch.setattr(tagio.inplace, "_cleanup_journal", dying_cleanup)
    with pytest.raises(_Crash):
        write_tags(p, SET_A, journal_dir=jdir)
    monkeypatch.undo()
    assert read_tags(p).nom == SET_A and len(list(jdir.iterdir())) == 2
    assert recover(jdir) == [str(p)] and list(jdir.iterdir()) == []


def test_recover_removes_strays(tmp_path):
    jdir = tmp_path / "journal"
    jdir.mkdir()
    (jdir / ("abc" + tagio.TMP_SUFFIX)).write_bytes(b"half a copy")
    (jdir / "def.json.part").write_text("{")
    assert recover(jdir) == [] and list(jdir.iterdir()) == []
    assert recover(tmp_path / "missing") == []


def test_stray_temp_beside_file_is_cleaned(make_audio):
    p = _make(make_audio, "aiff")
    stray = p.parent / f".{p.name}{tagio.TMP_SUFFIX}"
    stray.write_bytes(b"left by a crash")
    write_tags(p, SET_A)
    assert not stray.exists() and read_tags(p).nom == SET_A


def test_real_process_crash_mid_copy_back(make_audio, tmp_path):
    """The process really dies (os._exit) half-way through overwriting the original."""
    p = _make(make_audio, "mp3")
    os.link(p, tmp_path / "alias.mp3")
    audio = nom_audio_md5(p)
    jdir = tmp_path / "journal"
    script = textwrap.dedent(
        f"""
        import os
        from nomarr import tagio
        real_copy = tagio.journal._copy_fd
        def crashing(src, fd, hash_src=False):
            if os.path.dirname(src) == {str(jdir)!r}:
                data = open(src, "rb").read()
                os.write(fd, data[: len(data) // 2])
                os._exit(9)
            return real_copy(src, fd, hash_src)
        tagio.journal._copy_fd = crashing
        tagio.write_tags({str(p)!r}, {SET_A!r}, journal_dir={str(jdir)!r})
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "agent")}
    original = p.read_bytes()
    proc = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO, timeout=60)
    assert proc.returncode == 9
    assert p.read_bytes() != original  # half-overwritten: damaged until recovered
    assert recover(jdir) == [str(p)]
    assert read_tags(p).nom == SET_A and nom_audio_md5(p) == audio
