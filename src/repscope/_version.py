"""The repscope version, recorded in every result, store manifest and database row."""

__version__ = "0.1.0"
