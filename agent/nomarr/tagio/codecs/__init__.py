"""Tag codecs: one per tag format, all behind the :class:`~nomarr.tagio.codecs.base.Codec` interface.

The rest of tagio never looks at a format's frames, fields or atoms itself; it asks the codec of the
parsed file (:func:`codec_for`). Adding a format is a codec module plus its entries in ``_CODECS``.
"""

from __future__ import annotations

import mutagen
from mutagen.aiff import AIFF
from mutagen.asf import ASF
from mutagen.flac import FLAC
from mutagen.mp3 import MP3
from mutagen.mp4 import MP4
from mutagen.oggflac import OggFLAC
from mutagen.oggopus import OggOpus
from mutagen.oggvorbis import OggVorbis
from mutagen.wave import WAVE

from nomarr.tagio.codecs.asf import ASFCodec
from nomarr.tagio.codecs.base import Codec, Item
from nomarr.tagio.codecs.id3 import ID3Codec
from nomarr.tagio.codecs.mp4 import MP4Codec
from nomarr.tagio.codecs.vorbis import VorbisCodec

__all__ = ["Codec", "Item", "codec_for"]

_ID3, _VORBIS, _MP4, _ASF = ID3Codec(), VorbisCodec(), MP4Codec(), ASFCodec()
_CODECS: dict[type, Codec] = {
    MP3: _ID3,
    WAVE: _ID3,
    AIFF: _ID3,
    FLAC: _VORBIS,
    OggVorbis: _VORBIS,
    OggOpus: _VORBIS,
    OggFLAC: _VORBIS,
    MP4: _MP4,
    ASF: _ASF,
}


def codec_for(obj: mutagen.FileType) -> Codec:
    """The codec for a file parsed by mutagen (only the classes ``files`` loads ever reach here)."""
    return _CODECS[type(obj)]
