"""Bundle directories: atomic creation, integrity checks, finding the latest build."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgekit import manifest as mf
from edgekit.errors import BundleError, UsageError
from edgekit.hashing import sha256_file

DEFAULT_ROOT = "build"


def default_root() -> Path:
    return Path(os.environ.get("EDGEKIT_BUILD_DIR", DEFAULT_ROOT))


def default_dir(model: str, precision: str) -> Path:
    return default_root() / f"{model}-{precision}"


def sha256(path: Path) -> str:
    return sha256_file(path)


@contextlib.contextmanager
def staging(target: Path, force: bool) -> Iterator[Path]:
    """A temporary directory beside ``target`` that becomes ``target`` only on success.

    On any failure (or Ctrl-C) it is removed and ``target`` is left as it was.
    """
    target = Path(target)
    if target.exists() and not force:
        raise UsageError(f"{target} already exists; pass --force to replace it, or choose another -o")
    if target.exists() and not target.is_dir():
        raise UsageError(f"{target} exists and is not a directory; remove it or choose another -o")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        old = None
        if target.exists():
            old = target.parent / f".{target.name}.old-{os.getpid()}"
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_text_atomic(path: Path, text: str) -> None:
    """Write a file through a temporary name in the same directory, then rename."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write a file through a temporary name in the same directory, then rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def artifact_path(bundle: Path, art: mf.Artifact, verify: bool = True) -> Path:
    """The artifact's file, checked to be inside the bundle and to match its sha256."""
    root = bundle.resolve()
    path = (bundle / art.path).resolve()
    if root not in path.parents:
        raise BundleError(f"{bundle}: artifact {art.path!r} resolves outside the bundle; refusing it")
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


def engine_path(bundle: Path, entry: dict[str, Any]) -> Path | None:
    """An engine entry's plan file when it is there and unchanged since it was built, else None."""
    path = bundle / str(entry["path"])
    return path if path.is_file() and sha256(path) == entry.get("sha256") else None


def find_latest(root: Path | None = None) -> Path:
    """The most recently written bundle under the build root (for commands given none)."""
    base = root or default_root()
    found = sorted(
        (p.parent for p in base.glob(f"*/{mf.MANIFEST}")),
        key=lambda d: (d / mf.MANIFEST).stat().st_mtime,
    )
    if not found:
        raise UsageError(
            f"no bundle given and none found under {base}/; build one with "
            "edgekit export --model NAME (or name the bundle directory)"
        )
    return found[-1]
