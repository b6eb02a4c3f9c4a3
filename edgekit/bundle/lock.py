"""Bundle locking: ``.NAME.lock`` (flock) beside a bundle while it changes, re-entrant within a process.

Also the liveness check of a PID and the test seam that pauses a process at a named step.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgekit.bundle.paths import DISK_FULL, disk_full, real
from edgekit.errors import BundleBusyError, BundleError, EdgekitError, UsageError

# test seam: stop (SIGSTOP) at a named step so a test can kill -9 the process exactly there
PAUSE_ENV = "EDGEKIT_TEST_PAUSE_AT"


def pause_point(step: str) -> None:
    """Stop here when ``EDGEKIT_TEST_PAUSE_AT`` names this step (tests kill -9 or resume the process)."""
    if os.environ.get(PAUSE_ENV) == step and hasattr(signal, "SIGSTOP"):
        sys.stderr.write(f"edgekit: paused at {step}\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGSTOP)


_held: dict[str, tuple[int, int]] = {}  # lock path -> (fd, depth): re-entrant within a process


def lock_path(target: Path) -> Path:
    target = real(target)
    return target.parent / f".{target.name}.lock"


def _open_lock(path: Path) -> int:
    """Open (or create) the lock file itself: never through a symlink, and only a plain file of one link."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as exc:
        if exc.errno in DISK_FULL:
            raise disk_full(exc, path) from exc
        if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO, errno.EMLINK) or os.path.islink(path):
            raise _odd_lock(path, "a symlink" if os.path.islink(path) else "not a plain file") from None
        raise UsageError(f"cannot write in {path.parent} ({exc.strerror}); fix its permissions or choose "
                         "another directory") from exc
    try:
        st = os.fstat(fd)
    except OSError:
        os.close(fd)
        raise
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        raise _odd_lock(path, "not a plain file" if not stat.S_ISREG(st.st_mode) else "a file with other hard links")
    with contextlib.suppress(OSError):
        os.set_blocking(fd, True)
    return fd


def _odd_lock(path: Path, what: str) -> BundleError:
    return BundleError(f"the lock file {path} is {what}, which edgekit never makes; remove it (rm -r {path}) "
                       "and run again")


@contextlib.contextmanager
def lock(target: Path) -> Iterator[None]:
    """Hold ``.NAME.lock`` beside ``target`` while it is changed; another holder makes this fail at once."""
    if sys.platform == "win32":  # no flock; Jetsons and servers are Linux
        yield
        return
    import fcntl

    path = lock_path(target)
    key = os.path.abspath(path)
    if key in _held:
        fd, depth = _held[key]
        _held[key] = (fd, depth + 1)
        try:
            yield
        finally:
            fd, depth = _held[key]
            _held[key] = (fd, depth - 1)
        return
    fd = _open_lock(path)
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
            holder = ""
            with contextlib.suppress(OSError):
                holder = os.read(fd, 64).decode("ascii", "replace").strip()
            os.close(fd)
            who = f"PID {holder}" if holder.isdigit() else "another process"
            raise BundleBusyError(
                f"{target} is being changed by {who} (edgekit export, build or calibrate); wait for it to "
                f"finish and run again, or stop that process (its lock is {path})"
            ) from None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder removed the file as we opened it: lock the new one
        fd = _open_lock(path)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode("ascii"))
    _held[key] = (fd, 1)
    try:
        yield
    finally:
        del _held[key]
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


def _try_lock(target: Path) -> contextlib.AbstractContextManager[Any] | None:
    """The lock on ``target`` when it can be taken now (entered), else None."""
    cm = lock(target)
    try:
        cm.__enter__()
    except (EdgekitError, OSError):
        return None
    return cm


def alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (this one counts as alive; unknown counts as alive)."""
    if pid == os.getpid() or sys.platform == "win32":  # os.kill(pid, 0) terminates on Windows
        return True
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # gone, or a crafted name's PID no process can have
        return False
    except OSError:
        return True
    return True
