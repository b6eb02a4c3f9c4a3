"""Calibration and validation images: folders, videos and preprocessed .npy arrays.

Every image goes through :func:`edgekit.preprocess.fit_frame`, the very step the runtime
applies to camera frames, so calibration sees what the camera will give.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit.errors import UsageError
from edgekit.images import IMAGE_SUFFIXES, SAMPLES, read_image
from edgekit.preprocess import Preprocess, fit_frame

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v")
FRAMES_PER_VIDEO = 50

# package data (edgekit/data/calibration/README.md: sources and licences); `calibration/` in a checkout links here
GENERAL = Path(__file__).resolve().parents[1] / "data" / "calibration" / "general"


@dataclass(frozen=True)
class Item:
    """One calibration sample: an image file, a video frame, or a row of an .npy array."""

    path: Path
    index: int = -1  # frame or row; -1 for an image file

    @property
    def key(self) -> str:
        return f"{self.path.as_posix()}#{self.index}" if self.index >= 0 else self.path.as_posix()


@dataclass
class Collected:
    images: np.ndarray  # (N, H, W, 3) uint8 BGR at model size
    items: list[Item]
    skipped: list[tuple[Item, str]] = field(default_factory=list)

    def digest(self) -> str:
        """A hash of the image list, recorded in calibration.json."""
        h = hashlib.sha256()
        for it in self.items:
            h.update(it.key.encode() + b"\n")
        return h.hexdigest()


def default_set() -> Path:
    """The general-purpose set that ships with edgekit (see edgekit/data/calibration/README.md)."""
    if GENERAL.is_dir():
        return GENERAL
    return SAMPLES  # a package stripped of its data: the four sample photographs


def discover(source: Path, variants: int = 1) -> list[Item]:
    """All samples under ``source`` in a stable order.

    ``variants`` > 1 turns each image file into that many deterministic crops (for the
    small general-purpose set that ships with edgekit).
    """
    source = Path(source)
    if not source.exists():
        raise UsageError(f"calibration data {source} does not exist; give a folder of images, a video or an .npy file")
    files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    items: list[Item] = []
    for f in files:
        suffix = f.suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            items.extend([Item(f)] if variants <= 1 else [Item(f, k) for k in range(variants)])
        elif suffix in VIDEO_SUFFIXES:
            items.extend(_video_items(f))
        elif suffix == ".npy":
            n = _npy_rows(f)
            items.extend(Item(f, i) for i in range(n))
    if not items:
        raise UsageError(
            f"no images found in {source} (searched recursively for {', '.join(IMAGE_SUFFIXES + VIDEO_SUFFIXES)}, .npy)"
        )
    return items


def _video_items(path: Path) -> list[Item]:
    try:
        import cv2
    except ImportError as exc:
        raise UsageError(f'reading video {path} needs OpenCV: pip install "edgekit[video]"') from exc
    cap = cv2.VideoCapture(str(path))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
    cap.release()
    if n <= 0:
        return [Item(path, 0)]  # unreadable: reported as skipped when loaded
    picks = np.unique(np.linspace(0, n - 1, min(n, FRAMES_PER_VIDEO)).round().astype(int))
    return [Item(path, int(i)) for i in picks]


def _npy_rows(path: Path) -> int:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError):
        return 1  # reported as skipped when loaded
    return int(arr.shape[0]) if arr.ndim == 4 else 1


SEED = 0


def class_of(item: Item, root: Path | None) -> str:
    """The class folder of a sample: the first folder under ``root`` ('' for a flat folder)."""
    if root is None:
        return ""
    try:
        rel = item.path.relative_to(root)
    except ValueError:
        return ""
    return rel.parts[0] if len(rel.parts) > 1 else ""


def _group(it: Item, root: Path | None) -> str:
    """Samples that must stay together: the crops of one photograph (frames and rows stand alone)."""
    p = it.path
    if root is not None:
        try:
            p = p.relative_to(root)
        except ValueError:
            pass
    name = p.as_posix()
    return name if it.path.suffix.lower() in IMAGE_SUFFIXES else f"{name}#{it.index}"


def _bucket(name: str, seed: int) -> float:
    return int(hashlib.sha1(f"{seed}:{name}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def spread(items: list[Item], root: Path | None = None, seed: int = SEED) -> list[Item]:
    """The samples in a fair order: the first N of it are spread over the whole data.

    Class folders take turns (round robin, so the first N images cover every class evenly);
    within a class the order is a seeded shuffle of the photographs, not the file names' order.
    The order depends only on the names relative to ``root`` and the seed.
    """
    by_class: dict[str, dict[str, list[Item]]] = {}
    for it in items:
        by_class.setdefault(class_of(it, root), {}).setdefault(_group(it, root), []).append(it)
    queues = []
    for cls in sorted(by_class):
        groups = by_class[cls]
        order = sorted(groups, key=lambda g: (_bucket(g, seed), g))
        # crops of one photograph are spread out too: round robin over photographs, then crops
        depth = max(len(groups[g]) for g in order)
        queues.append([groups[g][k] for k in range(depth) for g in order if k < len(groups[g])])
    out: list[Item] = []
    for k in range(max((len(q) for q in queues), default=0)):
        out.extend(q[k] for q in queues if k < len(q))
    return out


def split(items: list[Item], holdout: float, root: Path | None = None,
          seed: int = SEED) -> tuple[list[Item], list[Item]]:
    """Deterministic calibration/validation split, the same share of every class folder.

    Photographs (with all their crops) are drawn by a seeded hash of their name relative to
    ``root``, so the split does not depend on where the data lives or how it is listed, and
    no photograph is in both sets. A non-empty holdout holds out at least one photograph.
    """
    by_class: dict[str, set[str]] = {}
    for it in items:
        by_class.setdefault(class_of(it, root), set()).add(_group(it, root))
    held: set[str] = set()
    for cls in sorted(by_class):
        groups = sorted(by_class[cls], key=lambda g: (_bucket(g, seed), g))
        n = round(holdout * len(groups)) if holdout > 0 and len(groups) > 1 else 0
        held.update(groups[:n])
    if not held and holdout > 0:
        every = sorted({_group(it, root) for it in items}, key=lambda g: (_bucket(g, seed), g))
        if len(every) > 1:
            held.add(every[0])
    calib = [it for it in items if _group(it, root) not in held]
    val = [it for it in items if _group(it, root) in held]
    return calib, val


def load_item(item: Item, pre: Preprocess) -> np.ndarray:
    """The model-size uint8 BGR image for one sample; UsageError if unreadable."""
    suffix = item.path.suffix.lower()
    if suffix == ".npy":
        arr = np.load(item.path, mmap_mode="r", allow_pickle=False)
        x = np.asarray(arr[item.index] if arr.ndim == 4 else arr)
        want = (pre.height, pre.width, 3)
        if x.shape != want or x.dtype != np.uint8:
            raise UsageError(f"{item.path} holds {x.dtype} {x.shape}; preprocessed arrays must be uint8 {want} (BGR)")
        return np.ascontiguousarray(x)
    if suffix in VIDEO_SUFFIXES:
        import cv2

        cap = cv2.VideoCapture(str(item.path))
        try:
            cap.set(cv2.CAP_PROP_POS_FRAMES, item.index)
            ok, frame = cap.read()
        finally:
            cap.release()
        if not ok or frame is None:
            raise UsageError(f"cannot read frame {item.index} of {item.path}")
        return fit_frame(frame, pre)
    img = read_image(item.path)
    if item.index >= 0:
        img = _variant(img, item.index)
    return fit_frame(img, pre)


def _variant(img: np.ndarray, k: int) -> np.ndarray:
    """Crop number ``k`` of a photograph: a deterministic scale, position and mirror."""
    rng = np.random.default_rng(k)
    h, w = img.shape[:2]
    scale = 1.0 if k == 0 else float(rng.uniform(0.45, 0.9))
    ch, cw = max(8, int(h * scale)), max(8, int(w * scale))
    y0 = int(rng.integers(0, h - ch + 1))
    x0 = int(rng.integers(0, w - cw + 1))
    out = img[y0:y0 + ch, x0:x0 + cw]
    return np.ascontiguousarray(out[:, ::-1] if k % 2 else out)


def iter_loaded(items: list[Item], pre: Preprocess) -> Iterator[tuple[Item, np.ndarray | None, str]]:
    """(item, image or None, why it was skipped) for each item, in order."""
    for it in items:
        try:
            img = load_item(it, pre)
        except (UsageError, ValueError, OSError) as exc:
            yield it, None, str(exc)
        except Exception as exc:  # OpenCV's cv2.error on files it cannot even start to decode
            if type(exc).__module__.split(".")[0] != "cv2":
                raise
            yield it, None, f"OpenCV cannot read {it.path}: {str(exc).strip().splitlines()[-1][:120]}"
        else:
            yield it, img, ""


def collect(items: list[Item], pre: Preprocess, limit: int | None = None) -> Collected:
    """Load up to ``limit`` usable images, skipping (and recording) unreadable ones."""
    images: list[np.ndarray] = []
    used: list[Item] = []
    skipped: list[tuple[Item, str]] = []
    for it, img, why in iter_loaded(items, pre):
        if img is None:
            skipped.append((it, why))
            continue
        images.append(img)
        used.append(it)
        if limit is not None and len(images) >= limit:
            break
    arr = np.stack(images) if images else np.zeros((0, pre.height, pre.width, 3), np.uint8)
    return Collected(arr, used, skipped)


def skipped_warning(skipped: list[tuple[Item, str]], shown: int = 3) -> str | None:
    if not skipped:
        return None
    names = ", ".join(it.key for it, _ in skipped[:shown])
    more = f" and {len(skipped) - shown} more" if len(skipped) > shown else ""
    return f"skipped {len(skipped)} unreadable file(s): {names}{more} (first: {skipped[0][1]})"
