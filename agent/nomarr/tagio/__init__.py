"""Reading and writing nomarr's ``nom:`` keys in audio files, without ever damaging a file.

The contract is DESIGN §2 (key grammar in :mod:`nomarr_client.tags`); the reasoning behind the write path,
its crash states and the per-format details are in docs/tags.md. In short:

- A write is *copy → tag the copy → verify the copy → atomically replace the original*
  (:mod:`.replace`). The copy is verified before anything touches the original (:mod:`.edit`,
  :mod:`.verify`): the audio packets hash the same (PyAV demux, no decode), the tags read back are
  exactly the intended ones, and every tag nomarr does not own is unchanged. A crash at any moment
  leaves either the old file or the new one, never a mix.
- Where an atomic replace would lose something (hardlinks, an owner we cannot restore, a directory
  we cannot create files in, a bind-mounted file) the verified copy is written back over the
  original inode under a journal record (:mod:`.inplace`), and :func:`recover` (:mod:`.journal`)
  finishes or abandons it after a crash.
- nomarr owns only ``nom:`` keys and, under the ownership rule, the standard MOOD field. How each
  format stores them is a codec's business (:mod:`.codecs`).

The modules:

========================  =====================================================================
``codecs/``               one codec per tag format (ID3, Vorbis, MP4, ASF) behind ``Codec``
``files``                 parse a file with mutagen (errors → :class:`TagError`), read, save
``edit``                  plan the edits for a request, apply them to a copy, verify the copy
``verify``                audio-packet md5, byte md5, "is it still the file we copied"
``replace`` ``inplace``   the two write paths
``journal``               journal records, the copy-back and :func:`recover`
``writer``                :func:`write_tags`: checks, per-file lock, choice of write path
``migrate``               :func:`migrate_legacy`: ``essentia:`` keys → ``nom:`` keys
========================  =====================================================================
"""

from __future__ import annotations

from nomarr.tagio.errors import TagError
from nomarr.tagio.files import SUPPORTED_SUFFIXES, FileTags, read_tags
from nomarr.tagio.fsio import TMP_SUFFIX
from nomarr.tagio.journal import recover
from nomarr.tagio.migrate import migrate_legacy
from nomarr.tagio.verify import nom_audio_md5
from nomarr.tagio.writer import WriteResult, write_tags

__all__ = [
    "SUPPORTED_SUFFIXES",
    "TMP_SUFFIX",
    "FileTags",
    "TagError",
    "WriteResult",
    "migrate_legacy",
    "nom_audio_md5",
    "read_tags",
    "recover",
    "write_tags",
]
