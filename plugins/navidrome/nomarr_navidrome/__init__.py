"""nomarr for Navidrome: ``[Tags]`` config for the ``nom:*`` keys, a ``.nsp`` smart-playlist
catalogue over them, and static playlists pushed over the Subsonic API (``nomarr-navidrome``)."""

__version__ = "0.1.0"
