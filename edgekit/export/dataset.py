"""A user's labelled images (ImageFolder: one folder per class) and the training/validation split.

Base tier: no torch. The split is written into a training run (split.json) so that `edgekit
build RUN --int8` calibrates on the training images and gates on the validation images, with
their labels, and no image is in both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.errors import UsageError
from edgekit.images import IMAGE_SUFFIXES
from edgekit.quant import calibdata

SPLIT_FILE = "split.json"
SPLIT_SCHEMA = "edgekit-split"


@dataclass(frozen=True)
class ImageFolder:
    root: Path
    classes: tuple[str, ...]  # folder names, sorted: class index = position
    files: tuple[tuple[Path, int], ...]  # (image, class index), in a stable order

    def counts(self) -> list[int]:
        n = [0] * len(self.classes)
        for _, c in self.files:
            n[c] += 1
        return n


def scan(root: Path, classes: tuple[str, ...] | None = None, what: str = "--data") -> ImageFolder:
    """The class folders under ``root`` and their images (searched recursively within each).

    ``classes`` given (a validation folder): its folders must be among them, indexed the same.
    """
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"{what} {root} is not a folder; give a folder with one sub-folder of images per class "
                         f"({root}/<class name>/<images>)")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = [p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    per: dict[str, list[Path]] = {}
    for d in folders:
        imgs = sorted(p for p in d.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                      and not any(part.startswith(".") for part in p.relative_to(d).parts))
        if imgs:
            per[d.name] = imgs
    if not per:
        hint = (f" ({len(loose)} images lie directly in it: move each into a folder named for its class)"
                if loose else "")
        raise UsageError(f"{what} {root} has no class folders with images{hint}; expected "
                         f"{root}/<class name>/<images> ({', '.join(IMAGE_SUFFIXES)})")
    if loose:
        raise UsageError(f"{len(loose)} images lie directly in {root} (e.g. {loose[0].name}), outside any class "
                         "folder; move each into the folder of its class, or out of the data folder")
    odd = [n for n in per if any(ord(ch) < 32 or ord(ch) == 127 for ch in n)]
    if odd:
        raise UsageError(f"class folder {odd[0]!r} in {root} has a control character (a newline, a tab) in its "
                         "name, which a labels file cannot hold; rename it")
    if classes is None:
        names = tuple(sorted(per))
        if len(names) < 2:
            raise UsageError(f"{what} {root} has one class folder ({names[0]}); a classifier needs at least two "
                             "(add a folder of images for each other class, e.g. 'background')")
    else:
        names = classes
        extra = sorted(set(per) - set(classes))
        if extra:
            raise UsageError(f"{what} {root} has class folder(s) {', '.join(extra[:5])} that the training data "
                             f"lacks ({', '.join(classes[:8])}{', ...' if len(classes) > 8 else ''}); "
                             "validation folders must be named as the training folders")
    index = {n: i for i, n in enumerate(names)}
    files = tuple((p, index[name]) for name in sorted(per) for p in per[name])
    return ImageFolder(root, names, files)


@dataclass(frozen=True)
class Split:
    """Which images train and which validate; paths relative to their roots."""

    classes: tuple[str, ...]
    train_root: Path
    train: tuple[tuple[str, int], ...]
    val_root: Path
    val: tuple[tuple[str, int], ...]
    holdout: float | None  # None: validation images from their own folder (--val)
    seed: int

    def train_items(self) -> list[calibdata.Item]:
        return [calibdata.Item(self.train_root / rel) for rel, _ in self.train]

    def val_items(self) -> list[calibdata.Item]:
        return [calibdata.Item(self.val_root / rel) for rel, _ in self.val]

    def missing(self) -> list[Path]:
        """Images of the split that are not (or no longer) there."""
        return [self.train_root / r for r, _ in self.train if not (self.train_root / r).is_file()] + \
               [self.val_root / r for r, _ in self.val if not (self.val_root / r).is_file()]

    def to_json(self) -> str:
        return json.dumps({
            "schema": SPLIT_SCHEMA, "schema_version": 1, "classes": list(self.classes),
            "seed": self.seed, "holdout": self.holdout,
            "train_root": str(self.train_root), "val_root": str(self.val_root),
            "train": [[r, c] for r, c in self.train], "val": [[r, c] for r, c in self.val],
        }, indent=1) + "\n"

    @classmethod
    def read(cls, path: Path) -> Split:
        try:
            d: dict[str, Any] = json.loads(Path(path).read_text(encoding="utf-8"))
            if d.get("schema") != SPLIT_SCHEMA:
                raise ValueError(f"schema {d.get('schema')!r}, not {SPLIT_SCHEMA!r}")
            classes = tuple(str(c) for c in d["classes"])

            def rows(key: str) -> tuple[tuple[str, int], ...]:
                out = []
                for rel, c in d[key]:
                    if not 0 <= int(c) < len(classes) or Path(rel).is_absolute() or ".." in Path(rel).parts:
                        raise ValueError(f"bad {key} entry {rel!r}")
                    out.append((str(rel), int(c)))
                return tuple(out)

            return cls(classes, Path(d["train_root"]), rows("train"), Path(d["val_root"]), rows("val"),
                       None if d["holdout"] is None else float(d["holdout"]), int(d["seed"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"{path} is not a readable training split ({exc}); train again with --force") from exc


def make_split(data: ImageFolder, holdout: float, seed: int = 0, val: ImageFolder | None = None) -> Split:
    """A seeded split that holds out the same share of every class (or ``val``'s own images).

    Which image validates depends only on the names within its class folder and the seed: the same
    data gives the same split wherever it lives (adding images may move a few between the sets).
    """
    rel = {p: p.relative_to(data.root).as_posix() for p, _ in data.files}
    if val is not None:
        train = tuple((rel[p], c) for p, c in data.files)
        vrows = tuple((p.relative_to(val.root).as_posix(), c) for p, c in val.files)
        return Split(data.classes, data.root.resolve(), train, val.root.resolve(), vrows, None, seed)
    if not 0 < holdout < 1:
        raise UsageError(f"--holdout must be between 0 and 1, got {holdout}")
    small = [f"{data.classes[c]} ({n})" for c, n in enumerate(data.counts()) if n < 2]
    if small:
        raise UsageError(f"class folder(s) {', '.join(small[:5])} in {data.root} hold fewer than 2 images, too few to "
                         "both train and validate; add images (a few dozen per class is a start) or pass --val DIR")
    items = [calibdata.Item(p) for p, _ in data.files]
    cls = dict(data.files)
    train_items, val_items = calibdata.split(items, holdout, data.root, seed)
    held_classes = {cls[it.path] for it in val_items}
    for c in range(len(data.classes)):  # every class validates: the rounding may hold out none of a small one
        if c not in held_classes:
            pick = next(it for it in train_items if cls[it.path] == c)
            train_items.remove(pick)
            val_items.append(pick)
    return Split(data.classes, data.root.resolve(), tuple((rel[it.path], cls[it.path]) for it in train_items),
                 data.root.resolve(), tuple((rel[it.path], cls[it.path]) for it in val_items), holdout, seed)
