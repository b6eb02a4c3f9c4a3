"""Class names: the ImageNet list that ships with edgekit, or a user's labels file."""

from __future__ import annotations

import re
from pathlib import Path

from edgekit.errors import UsageError

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_IMAGENET = Path(__file__).parent / "data" / "imagenet_classes.txt"


def imagenet() -> list[str]:
    return _IMAGENET.read_text(encoding="utf-8").splitlines()


def read(path: str | Path, expected: int | None = None) -> list[str]:
    """One class name per line, in class-index order; blank trailing lines ignored."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"labels file {p} does not exist")
    try:
        names = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError as exc:
        raise UsageError(f"labels file {p} is not UTF-8 text ({exc})") from exc
    while names and not names[-1]:
        names.pop()
    if not names:
        raise UsageError(f"labels file {p} is empty; write one class name per line")
    if any(not n for n in names):
        line = names.index("") + 1
        raise UsageError(f"labels file {p}: line {line} is blank; write one class name per line")
    for i, n in enumerate(names):
        if _CONTROL.search(n):
            raise UsageError(f"labels file {p}: line {i + 1} has control characters ({n[:40]!r}); class names are "
                             "printed, so write plain text")
    if expected is not None and len(names) != expected:
        raise UsageError(
            f"labels file {p} has {len(names)} names but the model has {expected} classes; "
            "give one name per class, in class-index order"
        )
    return names


def default_for(num_classes: int) -> list[str]:
    """ImageNet names for 1000 classes; otherwise numbered placeholders."""
    if num_classes == 1000:
        return imagenet()
    return [f"class_{i}" for i in range(num_classes)]
