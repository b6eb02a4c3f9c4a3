"""Bundle directories: atomic creation and update, locking, integrity checks, finding the latest build.

A bundle is only ever changed as a whole: a new or updated bundle is staged in a hidden
directory beside it (``.NAME.tmp-PID-XXXX``, hard links to the files that stay) and swapped in
with one atomic exchange, so a kill -9 at any instant leaves the complete old or the complete
new bundle at its path. Where the filesystem cannot exchange, two renames are used and the old
bundle waits as ``.NAME.old-PID`` in between; the next edgekit that opens the bundle restores it
if that process died. A change holds ``.NAME.lock`` (flock) beside the bundle; a second change
of the same bundle fails at once, naming the process. Leftovers of dead processes are removed
by the next export, build or calibration in that directory.

This package is the façade: callers use ``edgekit.bundle.X``. The code lives in
:mod:`edgekit.bundle.paths` (names, reads, the disk-full error), :mod:`edgekit.bundle.lock`
(locking) and :mod:`edgekit.bundle.atomic` (staging, swapping, atomic writes, recovery). To
replace a function in a test, patch the submodule that calls it (``atomic.write_bytes_atomic``).
"""

from __future__ import annotations

from pathlib import Path

from edgekit.bundle.atomic import (
    find_latest,
    recover,
    remove_dead_temp_files,
    restore_if_missing,
    staging,
    tidy,
    updating,
    write_bytes_atomic,
    write_text_atomic,
)
from edgekit.bundle.lock import PAUSE_ENV, alive, lock, lock_path, pause_point
from edgekit.bundle.paths import (
    DEFAULT_ROOT,
    DISK_FULL,
    artifact_path,
    artifact_text,
    child,
    confined,
    default_dir,
    default_root,
    disk_full,
    engine_path,
    labels_artifact,
    read_labels,
    real,
    replaceable,
    sha256,
)
from edgekit.errors import BundleBusyError, BundleError, DiskFullError, UsageError

__all__ = [
    "DEFAULT_ROOT", "DISK_FULL", "PAUSE_ENV", "BundleBusyError", "BundleError", "DiskFullError", "Path", "UsageError",
    "alive", "artifact_path", "artifact_text", "child", "confined", "default_dir", "default_root", "disk_full",
    "engine_path", "find_latest", "labels_artifact", "lock", "lock_path", "pause_point", "read_labels", "real",
    "recover", "remove_dead_temp_files", "replaceable", "restore_if_missing", "sha256", "staging", "tidy", "updating",
    "write_bytes_atomic", "write_text_atomic",
]
