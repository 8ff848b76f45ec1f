"""Stand-ins for ``music_assistant.helpers`` (see the package docstring)."""
