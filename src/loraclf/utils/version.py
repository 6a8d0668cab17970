"""The package version (one place; run folders and caches record it)."""

__version__ = "0.1.0"
