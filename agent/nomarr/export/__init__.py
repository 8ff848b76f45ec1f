"""Exports of the library to other tools' formats (Rekordbox XML)."""
