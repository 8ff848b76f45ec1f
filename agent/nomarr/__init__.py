"""nomarr agent: local music analysis (models, tags, store, API)."""

__version__ = "0.1.0"
