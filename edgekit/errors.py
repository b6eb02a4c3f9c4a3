"""One exception family: the CLI turns these into a one-line message and an exit code."""

from __future__ import annotations


class EdgekitError(Exception):
    """An error the user can fix; the message says what, why and what to do."""

    exit_code = 1


class UsageError(EdgekitError):
    """Bad arguments or input files."""

    exit_code = 2


class MissingDependencyError(EdgekitError):
    """An optional tier is not installed."""

    exit_code = 3


class BundleError(EdgekitError):
    """A bundle is missing, malformed, or its files do not match the manifest."""


class WeightsError(EdgekitError):
    """Weights cannot be obtained or do not fit the architecture."""


class ExportError(EdgekitError):
    """Export to ONNX failed or did not pass its checks."""
