"""Bundle paths: where bundles live, safe names inside them, checked reads of their files, and the disk-full error.

Nothing here changes a bundle; edgekit.bundle.lock and edgekit.bundle.atomic build on it.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.errors import BundleError, DiskFullError, UsageError
from edgekit.hashing import sha256_file

if TYPE_CHECKING:
    from edgekit import manifest as mf

MANIFEST = "manifest.json"  # the file that makes a folder a bundle (manifest.py reads it from here)
# control characters: never in a label or a file name edgekit writes (manifest.py checks names with it too)
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

DEFAULT_ROOT = "build"
DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def default_root() -> Path:
    return Path(os.environ.get("EDGEKIT_BUILD_DIR") or DEFAULT_ROOT)  # set but empty: the default


def default_dir(model: str, precision: str) -> Path:
    return default_root() / f"{model}-{precision}"


def sha256(path: Path) -> str:
    return sha256_file(path)


def child(parent: Path, name: str, what: str = "name") -> Path:
    """``parent / name`` where ``name`` is one plain path component: outputs never leave ``parent``."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise UsageError(f"{what} {name!r} is not a plain file name; use letters, digits, '.', '_' or '-'")
    return parent / name


def real(target: Path) -> Path:
    """A bundle path with the symlinks resolved (current -> v1: v1 is locked, changed in place,
    and the link stays a link)."""
    target = Path(target)
    return Path(os.path.realpath(target)) if target.is_symlink() else target


def _is_bundle_dir(path: Path) -> bool:
    """A real directory (not a symlink) holding a manifest.json, or the run.json of an edgekit train run:
    something edgekit made."""
    for name in (MANIFEST, "run.json"):
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


def replaceable(target: Path, mark: str = MANIFEST) -> bool:
    """Whether ``--force`` may replace ``target``: not there, empty, or holding ``mark``."""
    if not target.is_dir():
        return True
    try:
        return (target / mark).is_file() or next(os.scandir(target), None) is None
    except OSError:
        return False


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
        if CONTROL.search(name):
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
