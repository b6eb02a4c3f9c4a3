"""One exception family: the CLI turns these into a one-line message and an exit code.

The exit codes, the same for every command (README, "Exit codes"; tests/cli/test_first_contact.py):

====  ===================================================================================
0     done
1     the work failed: a check its result must pass (export parity), the device (GPU,
      TensorRT, a camera that will not open or is lost on the way), the disk, the network,
      a bundle busy in another process; running again may succeed once that is dealt with
2     what you gave is wrong: an option, a name (model, profile), a file or folder that is
      missing, unreadable or not what it should be (not a bundle, a damaged bundle, a bad
      checkpoint or image, a camera that does not exist); fix the command or the file
3     a part of edgekit is not installed here (the message names the pip extra)
4     the accuracy gate failed: INT8 (or FP16) is not as accurate as asked; the bundle is unchanged
130   interrupted (Ctrl-C, SIGTERM) before the work was done; nothing half-written (run takes a
      first signal as the end of its stream: outputs finished, exit 0)
====  ===================================================================================
"""

from __future__ import annotations

FAILED = 1
USAGE = 2
MISSING_DEPENDENCY = 3
GATE_FAILED = 4
INTERRUPTED = 130


class EdgekitError(Exception):
    """An error the user can fix; the message says what, why and what to do."""

    exit_code = FAILED


class UsageError(EdgekitError):
    """Bad arguments or input files."""

    exit_code = USAGE


class MissingDependencyError(EdgekitError):
    """An optional tier is not installed."""

    exit_code = MISSING_DEPENDENCY


class BundleError(EdgekitError):
    """A bundle is missing, malformed, or its files do not match the manifest: the input is wrong."""

    exit_code = USAGE


class BundleBusyError(BundleError):
    """Another process is changing the bundle: nothing is wrong with it, run again later."""

    exit_code = FAILED


class DeviceError(EdgekitError):
    """The GPU, TensorRT or a camera failed while doing the work."""

    exit_code = FAILED


class DiskFullError(EdgekitError):
    """A write failed for space (disk full, quota, file size limit): the environment, not the input."""


class WeightsError(EdgekitError):
    """A weights file does not exist, cannot be read, or does not fit the architecture."""

    exit_code = USAGE


class WeightsUnavailableError(WeightsError):
    """Weights could not be downloaded (offline, a proxy, the hub down): the environment, not the input."""

    exit_code = FAILED


class ExportError(EdgekitError):
    """Export to ONNX failed or did not pass its checks."""
