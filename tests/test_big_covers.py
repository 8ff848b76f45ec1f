"""Files with huge embedded pictures (docs/reliability.md): tag writes, reads, decoding and
fingerprinting never hold the picture in memory, and the picture survives byte for byte.

Unit-sized pictures (a few MB, over the 1 MB line where the frame-level path takes over) keep
these fast; ``bench/bench_picture.py`` measures a whole scan with a 40 MB one.
"""

from __future__ import annotations

import hashlib
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import taglib
from mutagen.id3 import APIC, COMM, ID3, TIT2, TPE1, TXXX, Encoding
from nomarr.audio.decode import load_mono, probe
from nomarr.audio.id3skip import ffmpeg_source
from nomarr.fingerprint import fingerprint, fingerprint_fpcalc, fpcalc_path
from nomarr.tagio import bigid3, nom_audio_md5, read_tags, write_tags

from .conftest import encode, music_like

PREFIX = "nom:onnx_musicnn_msd-1_msd50_1_"
NOM = {PREFIX + "provenance": "0123456789ab", PREFIX + "happy": "0.5000"}


def picture(mb: float, seed: int = 0) -> bytes:
    return b"\xff\xd8\xff\xe0" + np.random.default_rng(seed).bytes(int(mb * 1_000_000))


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("covers")
    return encode(d / "plain.mp3", music_like(20.0, seed=31), 44100)


def with_cover(plain: Path, dst: Path, mb: float, version: int = 4, **frames: object) -> Path:
    shutil.copy(plain, dst)
    tags = ID3()
    tags.add(TIT2(encoding=Encoding.UTF8, text=["Title é"]))
    tags.add(TPE1(encoding=Encoding.UTF16, text=["Artist"]))
    tags.add(APIC(encoding=0, mime="image/jpeg", type=3, desc="front", data=picture(mb)))
    tags.add(APIC(encoding=3, mime="image/png", type=4, desc="back", data=picture(0.2, 1)))
    tags.add(COMM(encoding=3, lang="eng", desc="", text=["kept"]))
    tags.add(TXXX(encoding=3, desc="mine", text=["user value"]))
    tags.add(TXXX(encoding=3, desc=PREFIX + "sad", text=["0.1000"]))  # stale: to be removed
    tags.save(dst, v2_version=version)
    return dst


def frames(path: Path) -> dict[str, str]:
    """Every frame but nomarr's own, as a digest (mutagen's full parse: the oracle)."""
    return {
        k: hashlib.md5(repr(f).encode() + (getattr(f, "data", b"") or b"")).hexdigest()
        for k, f in ID3(path).items()
        if not (k.startswith("TXXX:nom:"))
    }


@pytest.mark.parametrize("version", [3, 4])
def test_write_keeps_the_picture_and_everything_else(
    plain: Path, tmp_path: Path, version: int
) -> None:
    f = with_cover(plain, tmp_path / f"v{version}.mp3", 3.0, version)
    assert bigid3.layout(f) is not None  # the frame-level path is the one exercised
    before, audio = frames(f), nom_audio_md5(f)
    assert ID3(f)["APIC:front"].data == picture(3.0)
    r = write_tags(f, NOM)
    assert r.changed and r.removed == [PREFIX + "sad"]
    assert read_tags(f).nom == NOM
    tags = ID3(f)
    assert tags.version == (2, 4, 0)
    assert tags["APIC:front"].data == picture(3.0) and tags["APIC:back"].data == picture(0.2, 1)
    assert str(tags["TIT2"]) == "Title é" and str(tags["TXXX:mine"]) == "user value"
    if version == 4:  # a v2.3 file is upgraded as every nomarr write does; its frames move
        assert frames(f) == before
    assert nom_audio_md5(f) == audio
    tf = taglib.File(str(f))
    try:
        assert tf.tags[(PREFIX + "happy").upper()] == ["0.5000"]
    finally:
        tf.close()
    assert not write_tags(f, NOM).changed  # converges


def test_write_and_read_never_hold_the_picture(plain: Path, tmp_path: Path) -> None:
    f = with_cover(plain, tmp_path / "big.mp3", 40.0)
    tracemalloc.start()
    try:
        write_tags(f, NOM)
        read_tags(f)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8_000_000, f"{peak / 1e6:.1f} MB of Python memory for a 40 MB picture"
    assert ID3(f)["APIC:front"].data == picture(40.0)


def test_decoder_and_fingerprint_skip_the_picture(plain: Path, tmp_path: Path) -> None:
    f = with_cover(plain, tmp_path / "big.mp3", 3.0)
    src = ffmpeg_source(f)
    assert not isinstance(src, str)
    src.close()
    assert isinstance(ffmpeg_source(plain), str)  # small tags: the path, as before
    assert np.array_equal(load_mono(f), load_mono(plain))
    assert np.array_equal(
        load_mono(f, start=5.0, duration=3.0), load_mono(plain, start=5.0, duration=3.0)
    )
    assert probe(f).duration == probe(plain).duration
    assert nom_audio_md5(f) == nom_audio_md5(plain)
    if fpcalc_path():
        ref = fingerprint_fpcalc(str(plain))
        got = fingerprint(f)
        assert np.array_equal(ref.values, got.values)


def test_layouts_it_does_not_handle_go_through_mutagen(plain: Path, tmp_path: Path) -> None:
    """Small tags, and a tag with tag-level unsynchronisation, are left to mutagen entirely."""
    small = with_cover(plain, tmp_path / "small.mp3", 0.5)
    assert bigid3.layout(small) is None
    write_tags(small, NOM)
    assert read_tags(small).nom == NOM and ID3(small)["APIC:front"].data == picture(0.5)
    unsync = with_cover(plain, tmp_path / "unsync.mp3", 2.0, 3)
    raw = bytearray(unsync.read_bytes())
    raw[5] |= 0x80  # claims unsynchronisation: no frame can be copied verbatim any more
    unsync.write_bytes(bytes(raw))
    assert bigid3.layout(unsync) is None
