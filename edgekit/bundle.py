"""Bundle directories: atomic creation and update, locking, integrity checks, finding the latest build.

A bundle is only ever changed as a whole: a new or updated bundle is staged in a hidden
directory beside it (``.NAME.tmp-PID-XXXX``, hard links to the files that stay) and swapped in
with one atomic exchange, so a kill -9 at any instant leaves the complete old or the complete
new bundle at its path. Where the filesystem cannot exchange, two renames are used and the old
bundle waits as ``.NAME.old-PID`` in between; the next edgekit that opens the bundle restores it
if that process died. A change holds ``.NAME.lock`` (flock) beside the bundle; a second change
of the same bundle fails at once, naming the process. Leftovers of dead processes are removed
by the next export, build or calibration in that directory.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import secrets
import shutil
import signal
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgekit import manifest as mf
from edgekit.errors import BundleBusyError, BundleError, DiskFullError, EdgekitError, UsageError
from edgekit.hashing import sha256_file

DEFAULT_ROOT = "build"
# test seam: stop (SIGSTOP) at a named step so a test can kill -9 the process exactly there
PAUSE_ENV = "EDGEKIT_TEST_PAUSE_AT"
DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
# edgekit's own: .NAME.tmp-PID-XXXXXXXX (staging, atomic writes), .NAME.old-PID[-XXXXXXXX] (a replaced bundle)
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)(?:-(?P<tag>[0-9a-f]{8}))?$")
_LEGACY_TMP = re.compile(r"^\.(?P<name>.+)\.tmp-[A-Za-z0-9_]{8}$")  # tempfile.mkdtemp's, before locking
_LOCK = re.compile(r"^\.(?P<name>.+)\.lock$")
_LEGACY_MKSTEMP = re.compile(r"^\.manifest\.json\.[A-Za-z0-9_]{8}$")


def default_root() -> Path:
    return Path(os.environ.get("EDGEKIT_BUILD_DIR") or DEFAULT_ROOT)  # set but empty: the default


def default_dir(model: str, precision: str) -> Path:
    return default_root() / f"{model}-{precision}"


def sha256(path: Path) -> str:
    return sha256_file(path)


def pause_point(step: str) -> None:
    """Stop here when ``EDGEKIT_TEST_PAUSE_AT`` names this step (tests kill -9 or resume the process)."""
    if os.environ.get(PAUSE_ENV) == step and hasattr(signal, "SIGSTOP"):
        sys.stderr.write(f"edgekit: paused at {step}\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGSTOP)


# ------------------------------------------------------------------ names and modes


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


def child(parent: Path, name: str, what: str = "name") -> Path:
    """``parent / name`` where ``name`` is one plain path component: outputs never leave ``parent``."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise UsageError(f"{what} {name!r} is not a plain file name; use letters, digits, '.', '_' or '-'")
    return parent / name


# ------------------------------------------------------------------ disk full


def disk_full(exc: OSError, target: Path, need: int | None = None) -> DiskFullError:
    """One line for ENOSPC, EDQUOT and EFBIG (a file size limit) alike: what, why, how much to free where."""
    where = os.path.abspath(Path(target).parent)
    try:
        have = f", {shutil.disk_usage(where).free / 1e6:.0f} MB free there"
    except OSError:
        have = ""
    todo = f"free at least {max(1, -(-need // 1_000_000))} MB at {where}" if need else f"free space at {where}"
    return DiskFullError(
        f"could not write {exc.filename or target}: {exc.strerror or exc} (disk full, over quota or over a file "
        f"size limit{have}); {todo} (or write elsewhere) and run again; nothing was changed"
    )


def _tree_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_size
    return total


# ------------------------------------------------------------------ locking


_held: dict[str, tuple[int, int]] = {}  # lock path -> (fd, depth): re-entrant within a process


def real(target: Path) -> Path:
    """A bundle path with the symlinks resolved (current -> v1: v1 is locked, changed in place,
    and the link stays a link)."""
    target = Path(target)
    return Path(os.path.realpath(target)) if target.is_symlink() else target


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


# ------------------------------------------------------------------ recovery


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


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def _is_bundle_dir(path: Path) -> bool:
    """A real directory (not a symlink) holding a manifest.json, or the run.json of an edgekit train run:
    something edgekit made."""
    for name in (mf.MANIFEST, "run.json"):
        try:
            st = os.lstat(path)
            mst = os.lstat(path / name)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode) and stat.S_ISREG(mst.st_mode):
            return True
    return False


def _is_plain_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


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
def staging(target: Path, force: bool, need: int | None = None, mark: str = mf.MANIFEST) -> Iterator[Path]:
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


def replaceable(target: Path, mark: str = mf.MANIFEST) -> bool:
    """Whether ``--force`` may replace ``target``: not there, empty, or holding ``mark``."""
    if not target.is_dir():
        return True
    try:
        return (target / mark).is_file() or next(os.scandir(target), None) is None
    except OSError:
        return False


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
            _link_tree(bundle, tmp, frozenset(fresh) | {mf.MANIFEST})
            pause_point("update.linked")
            yield tmp


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


# ------------------------------------------------------------------ reading


def confined(bundle: Path, rel: str) -> Path:
    """``bundle / rel`` resolved, refused when it (or a symlink on the way) leads outside the bundle."""
    try:
        root = Path(bundle).resolve()
        path = (Path(bundle) / rel).resolve()
    except (RuntimeError, OSError) as exc:  # a symlink loop (RuntimeError before Python 3.13)
        raise BundleError(f"{bundle}: {rel!r} cannot be resolved ({exc}); a symlink loop? rebuild the bundle"
                          ) from None
    if root not in path.parents:
        raise BundleError(f"{bundle}: {rel!r} resolves outside the bundle; refusing it (a symlink or '..'); "
                          "rebuild the bundle")
    return path


def artifact_path(bundle: Path, art: mf.Artifact, verify: bool = True) -> Path:
    """The artifact's file, checked to be inside the bundle and to match its sha256."""
    path = confined(bundle, art.path)
    if not path.is_file():
        raise BundleError(f"{bundle}: artifact {art.path} listed in the manifest is missing; rebuild the bundle")
    if verify:
        actual = sha256(path)
        if actual != art.sha256:
            raise BundleError(
                f"{bundle}: {art.path} does not match its sha256 in the manifest "
                f"(expected {art.sha256[:12]}…, found {actual[:12]}…): the file was changed or "
                "corrupted; rebuild the bundle, or restore the file"
            )
    return path


def artifact_text(bundle: Path, art: mf.Artifact) -> str:
    """A text artifact (labels, calibration cache), checked like any other, as UTF-8."""
    data = artifact_path(bundle, art).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BundleError(f"{bundle}: {art.path} is not UTF-8 text (byte {exc.start}: {exc.reason}); "
                          "rebuild the bundle, or save the file as UTF-8") from None


def labels_artifact(bundle: Path, man: mf.Manifest) -> mf.Artifact:
    for a in man.artifacts:
        if a.path == man.labels:
            return a
    raise BundleError(f"{bundle}: the labels file {man.labels} is not listed among the artifacts (no sha256 to "
                      "check it against); rebuild the bundle")


def read_labels(bundle: Path, man: mf.Manifest) -> list[str]:
    """The class names, read through the same checks as every artifact: inside, sha256, one per class."""
    art = labels_artifact(bundle, man)
    names = artifact_text(bundle, art).splitlines()
    while names and not names[-1].strip():
        names.pop()
    for i, name in enumerate(names):
        if mf.CONTROL.search(name):
            raise BundleError(f"{bundle}: {art.path} line {i + 1} has control characters ({name[:40]!r}); class "
                              "names are printed, so they must be plain text; fix the file or rebuild the bundle")
    n = man.model.num_classes
    if len(names) != n:
        raise BundleError(f"{bundle}: {art.path} has {len(names)} names but the model has {n} classes; "
                          "give one name per class in class-index order, or rebuild the bundle")
    return names


def engine_path(bundle: Path, entry: dict[str, Any]) -> Path | None:
    """An engine entry's plan file when it is there and unchanged since it was built, else None."""
    path = confined(bundle, str(entry["path"]))
    return path if path.is_file() and sha256(path) == entry.get("sha256") else None


def find_latest(root: Path | None = None) -> Path:
    """The most recently written bundle under the build root (for commands given none)."""
    base = root or default_root()
    recover(base, clean=False)  # a bundle killed mid-replacement comes back first
    found = sorted(
        (p.parent for p in base.glob(f"*/{mf.MANIFEST}") if not p.parent.name.startswith(".")),
        key=lambda d: (d / mf.MANIFEST).stat().st_mtime,
    )
    if not found:
        raise UsageError(
            f"no bundle given and none found under {base}/; build one with "
            "edgekit export --model NAME (or name the bundle directory)"
        )
    return found[-1]
