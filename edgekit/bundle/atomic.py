"""Atomic bundle changes: staging and swapping whole bundles, atomic file writes, and recovering what killed runs left.

A new or updated bundle is staged in a hidden directory beside it and swapped in with one atomic
exchange (or two renames, the old bundle waiting as ``.NAME.old-PID`` in between); leftovers of
dead processes are restored or removed by the next change in that directory.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import secrets
import shutil
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from edgekit.bundle.lock import _try_lock, alive, lock, pause_point
from edgekit.bundle.paths import (
    DISK_FULL,
    MANIFEST,
    _is_bundle_dir,
    _is_plain_file,
    default_root,
    disk_full,
    real,
    replaceable,
)
from edgekit.errors import UsageError

# edgekit's own: .NAME.tmp-PID-XXXXXXXX (staging, atomic writes), .NAME.old-PID[-XXXXXXXX] (a replaced bundle)
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)(?:-(?P<tag>[0-9a-f]{8}))?$")
_LEGACY_TMP = re.compile(r"^\.(?P<name>.+)\.tmp-[A-Za-z0-9_]{8}$")  # tempfile.mkdtemp's, before locking
_LOCK = re.compile(r"^\.(?P<name>.+)\.lock$")
_LEGACY_MKSTEMP = re.compile(r"^\.manifest\.json\.[A-Za-z0-9_]{8}$")


def _hidden(parent: Path, name: str, kind: str) -> Path:
    """A new, unused hidden name beside ``name``: ``.NAME.KIND-PID-XXXXXXXX``."""
    return parent / f".{name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"


def _mkdir_new(parent: Path, name: str, kind: str = "tmp") -> Path:
    """A new hidden directory with the umask's mode (tempfile.mkdtemp's is always 0700)."""
    while True:
        path = _hidden(parent, name, kind)
        try:
            os.mkdir(path, 0o777)
            return path
        except FileExistsError:
            continue


def _tree_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_size
    return total

# ------------------------------------------------------------------ recovery


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def recover(parent: Path, only: str | None = None, clean: bool = True, mine: str | None = None,
            inside: bool = False) -> None:
    """Finish what killed edgekit processes left in ``parent``; touch only what is provably edgekit's.

    ``.NAME.old-PID-*`` of a dead process holding a manifest.json, with nothing at NAME (killed between
    the two renames of a replacement), goes back to NAME; with ``clean``, stale ``.NAME.old-*`` and
    ``.NAME.tmp-*`` bundle directories (holding a manifest.json; any staging of ``mine``, the bundle
    whose lock the caller holds) and unheld ``.NAME.lock`` files of bundles are removed. ``inside``:
    ``parent`` is a bundle's own directory (lock held), where ``.FILE.tmp-PID-XXXXXXXX`` files of
    atomic writes go too. ``only`` limits it to one NAME.
    """
    try:
        entries = sorted(os.listdir(parent))
    except OSError:
        return
    for entry in entries:
        stale = _LOCK.match(entry)
        if stale:
            name = stale.group("name")
            if (clean and (only is None or name == only) and _is_plain_file(parent / entry)
                    and (name == mine or _is_bundle_dir(parent / name))):
                held = _try_lock(parent / name)  # a lock file nobody holds: its holder died
                if held is not None:
                    held.__exit__(None, None, None)
            continue
        m = _LEFTOVER.match(entry) or _LEGACY_TMP.match(entry)
        if m is None:
            continue
        name = m.group("name")
        if only is not None and name != only:
            continue
        pid = m.groupdict().get("pid")
        kind = m.groupdict().get("kind") or "tmp"
        if pid is not None and alive(int(pid)):
            continue
        if kind == "tmp" and not clean:
            continue
        leftover = parent / entry
        ours = _is_bundle_dir(leftover)
        if kind == "old":
            if not ours:
                continue
        elif m.re is _LEGACY_TMP:
            if not ours:
                continue
        elif not (ours or (m.group("tag") and name == mine and leftover.is_dir() and not leftover.is_symlink())
                  or (inside and m.group("tag") and _is_plain_file(leftover))):
            continue
        held = _try_lock(parent / name)  # nobody else is changing NAME (a legacy name's only check)
        if held is None:
            continue
        try:
            if kind == "old" and not os.path.lexists(parent / name):
                os.replace(leftover, parent / name)
            elif clean:
                _remove(leftover)
        except OSError:
            pass  # a read-only directory: leave it for a run that can write there
        finally:
            held.__exit__(None, None, None)


def remove_dead_temp_files(parent: Path, older_than_s: float = 600.0) -> None:
    """Remove the ``.FILE.tmp-PID-XXXXXXXX`` plain files of write_bytes_atomic whose process is gone
    (killed between writing and renaming) from ``parent``, a folder of edgekit's own files shared by
    processes. A PID says nothing across containers sharing the folder, so the file must also be
    older than ``older_than_s`` (a write takes milliseconds)."""
    now = time.time()
    with contextlib.suppress(OSError):
        for entry in os.listdir(parent):
            m = _LEFTOVER.match(entry)
            if not (m and m.group("kind") == "tmp" and m.group("tag") and not alive(int(m.group("pid")))):
                continue
            with contextlib.suppress(OSError):
                st = os.lstat(parent / entry)
                if stat.S_ISREG(st.st_mode) and now - st.st_mtime > older_than_s:
                    os.unlink(parent / entry)


def _tidy_inside(bundle: Path) -> None:
    """Inside a bundle being changed (lock held): the work of killed runs."""
    with contextlib.suppress(OSError):
        for p in bundle.iterdir():
            if p.name.startswith(".calibrate-") or _LEGACY_MKSTEMP.match(p.name):  # older edgekit's work
                _remove(p)
    recover(bundle, inside=True)  # .manifest.json.tmp-PID-* of write_bytes_atomic


def tidy(bundle: Path) -> None:
    """What killed runs left beside and inside ``bundle`` goes (call with its lock held)."""
    recover(Path(bundle).parent, mine=Path(bundle).name)
    if Path(bundle).is_dir():
        _tidy_inside(Path(bundle))


def restore_if_missing(bundle: Path) -> bool:
    """A bundle killed between the two renames of its replacement comes back. True if restored."""
    bundle = Path(bundle)
    if os.path.lexists(bundle):
        return False
    recover(bundle.parent, only=bundle.name, clean=False)
    return os.path.lexists(bundle)

# ------------------------------------------------------------------ swapping


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where it is not supported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _swap_in(new: Path, target: Path) -> None:
    """Make ``new`` (beside ``target``) be ``target``; the old one is removed."""
    if not os.path.lexists(target):
        os.replace(new, target)
        return
    if _exchange(new, target):
        pause_point("swap.exchanged")
        _remove(new)  # now the old bundle
        return
    old = _hidden(target.parent, target.name, "old")  # .NAME.old-PID-XXXX: restored if this process dies
    os.replace(target, old)
    pause_point("swap.between-renames")
    os.replace(new, target)
    _remove(old)


@contextlib.contextmanager
def _swapping(tmp: Path, target: Path, need: int | None) -> Iterator[Path]:
    try:
        yield tmp
        pause_point("swap.staged")
        _swap_in(tmp, target)
    except OSError as exc:
        if exc.errno in DISK_FULL:
            # what it takes: given, else at least what was written, or what it replaces
            if need is None:
                need = max(_tree_bytes(tmp), _tree_bytes(target) if target.is_dir() else 0)
            raise disk_full(exc, target, need) from exc
        raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def staging(target: Path, force: bool, need: int | None = None, mark: str = MANIFEST) -> Iterator[Path]:
    """A new directory beside ``target`` that becomes ``target`` only on success.

    On any failure (or Ctrl-C, or kill -9) ``target`` is left as it was; a full disk is one
    error saying how much to free. ``force`` replaces only what this writes: an empty folder or
    one holding ``mark`` (a bundle's manifest.json), never a folder of someone's files.
    """
    target = real(target)
    if target.exists() and not force:
        raise UsageError(f"{target} already exists; pass --force to replace it, or choose another -o")
    if target.exists() and not target.is_dir():
        raise UsageError(f"{target} exists and is not a directory; remove it or choose another -o")
    target.parent.mkdir(parents=True, exist_ok=True)
    with lock(target):
        recover(target.parent, mine=target.name)
        if target.exists() and not force:
            raise UsageError(f"{target} already exists; pass --force to replace it, or choose another -o")
        if not replaceable(target, mark):
            raise UsageError(f"{target} holds files and no {mark}: it is not edgekit's output, and --force replaces "
                             "only that; choose another -o, or move its files away yourself")
        with _swapping(_mkdir_new(target.parent, target.name), target, need) as tmp:
            yield tmp


def _link_tree(src: Path, dst: Path, fresh: frozenset[str], top: bool = True) -> None:
    """Hard links (copies where links fail) of ``src``'s files in ``dst``; symlinks stay symlinks."""
    for entry in os.scandir(src):
        if top and (entry.name.startswith(".") or entry.name in fresh):
            continue
        out = dst / entry.name
        if entry.is_symlink():
            os.symlink(os.readlink(entry.path), out)
        elif entry.is_dir():
            os.mkdir(out, 0o777)
            shutil.copymode(entry.path, out)
            _link_tree(Path(entry.path), out, fresh, top=False)
        else:
            try:
                os.link(entry.path, out, follow_symlinks=False)
            except OSError:
                shutil.copy2(entry.path, out, follow_symlinks=False)


@contextlib.contextmanager
def updating(bundle: Path, fresh: tuple[str, ...] = (), need: int | None = None) -> Iterator[Path]:
    """A copy of ``bundle`` (hard links) to change, swapped in whole only on success.

    Write new files only under the names in ``fresh`` (they are not linked, so the old
    bundle's files are never written through) and manifest.json, which is never linked.
    """
    bundle = real(bundle)
    with lock(bundle):
        tidy(bundle)
        with _swapping(_mkdir_new(bundle.parent, bundle.name), bundle, need) as tmp:
            shutil.copymode(bundle, tmp)
            _link_tree(bundle, tmp, frozenset(fresh) | {MANIFEST})
            pause_point("update.linked")
            yield tmp

# ------------------------------------------------------------------ atomic files


def write_text_atomic(path: Path, text: str) -> None:
    """Write a file through a temporary name in the same directory, then rename."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write a file through a temporary name in the same directory, then rename; the umask's mode."""
    path = Path(path)
    while True:
        tmp = _hidden(path.parent, path.name, "tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in DISK_FULL:
            raise disk_full(exc, path, len(data)) from exc
        raise

# ------------------------------------------------------------------ finding


def find_latest(root: Path | None = None) -> Path:
    """The most recently written bundle under the build root (for commands given none)."""
    base = root or default_root()
    recover(base, clean=False)  # a bundle killed mid-replacement comes back first
    found = sorted(
        (p.parent for p in base.glob(f"*/{MANIFEST}") if not p.parent.name.startswith(".")),
        key=lambda d: (d / MANIFEST).stat().st_mtime,
    )
    if not found:
        raise UsageError(
            f"no bundle given and none found under {base}/; build one with "
            "edgekit export --model NAME (or name the bundle directory)"
        )
    return found[-1]
