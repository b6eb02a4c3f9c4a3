"""The package version (one place: pyproject.toml says the same, and a test checks it)."""

__version__ = "0.2.0"
