"""Reading images from disk as BGR uint8 arrays (OpenCV if present, else Pillow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.errors import UsageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file to BGR uint8 (H, W, 3); a clear error if it cannot be read."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"image {p} does not exist or is not a file")
    data = np.fromfile(p, dtype=np.uint8)
    img: np.ndarray | None = None
    try:
        import cv2

        img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except ImportError:
        img = _read_pillow(p)
    if img is None or img.size == 0:
        raise UsageError(f"cannot decode image {p}: not a readable jpg/png/bmp/webp file")
    return img


def _read_pillow(p: Path) -> np.ndarray | None:
    try:
        from PIL import Image
    except ImportError as exc:
        raise UsageError(
            f"reading {p} needs OpenCV or Pillow; install one: pip install \"edgekit[video]\""
        ) from exc
    try:
        with Image.open(p) as im:
            rgb = np.asarray(im.convert("RGB"))
    except OSError:
        return None
    return np.ascontiguousarray(rgb[..., ::-1])


def sample_images() -> list[Path]:
    """The real photographs that ship with edgekit (see data/samples/README.md)."""
    root = Path(__file__).parent / "data" / "samples"
    return sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
