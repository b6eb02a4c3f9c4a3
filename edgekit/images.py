"""Reading images from disk as BGR uint8 arrays (OpenCV if present, else Pillow).

Every image file edgekit reads (classify, calibration and evaluation sets, image-folder
sources, the sample photographs) comes through :func:`read_image`. Its size is read from the
file's header before anything is decoded: a 1 MB PNG can claim 20000x20000 pixels and cost
gigabytes and seconds to decode, so images beyond ``EDGEKIT_MAX_IMAGE_MEGAPIXELS`` (50 by
default) are refused, and so are files whose size cannot be read from their header.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from edgekit.errors import UsageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
MAX_MEGAPIXELS_ENV = "EDGEKIT_MAX_IMAGE_MEGAPIXELS"
DEFAULT_MAX_MEGAPIXELS = 50.0
HEAD_BYTES = 1 << 20  # where image_size looks for the width and height
MAX_HEADERLESS_BYTES = 64 << 20  # a file whose size is not in its first MiB is read whole only below this
FORMATS = "jpg, png, bmp, webp, gif, tiff, pnm"  # those whose size is read before decoding


def max_megapixels() -> float:
    """The largest image read, in megapixels: $EDGEKIT_MAX_IMAGE_MEGAPIXELS, else 50."""
    text = os.environ.get(MAX_MEGAPIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_MEGAPIXELS
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise UsageError(f"{MAX_MEGAPIXELS_ENV}={text!r} is not a positive number of megapixels "
                         f"(e.g. 120; default {DEFAULT_MAX_MEGAPIXELS:g})")
    return value


def read_image(path: str | Path, max_mp: float | None = None) -> np.ndarray:
    """Decode an image file to BGR uint8 (H, W, 3); a clear UsageError if it cannot be read.

    ``max_mp``: the most megapixels accepted (default :func:`max_megapixels`), checked against
    the header before decoding.
    """
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"image {p} does not exist or is not a file")
    try:
        nbytes = p.stat().st_size
        with open(p, "rb") as f:  # the header first: a bomb or a misnamed huge file is refused unread
            head = f.read(HEAD_BYTES)
    except OSError as exc:
        raise UsageError(f"cannot read image {p}: {exc.strerror or exc}") from None
    if nbytes == 0 or not head:
        raise UsageError(f"image {p} is empty (0 bytes); replace or remove the file")
    data: np.ndarray | None = None
    size = image_size(head)
    if size is None and nbytes > len(head) and nbytes <= MAX_HEADERLESS_BYTES:
        data = np.fromfile(p, dtype=np.uint8)  # a header beyond the first MiB (large metadata)
        size = image_size(data.tobytes())
    if size is None:
        raise UsageError(f"cannot decode image {p}: not a readable {FORMATS} file "
                         "(its width and height cannot be read from its header)")
    w, h = size
    limit = max_mp if max_mp is not None else max_megapixels()
    if w * h > limit * 1e6:
        raise UsageError(
            f"image {p} is {w}x{h} ({w * h / 1e6:.0f} megapixels), beyond the {limit:g}-megapixel limit "
            f"on images edgekit decodes; shrink it, or raise the limit with {MAX_MEGAPIXELS_ENV}"
        )
    if w == 0 or h == 0:
        raise UsageError(f"image {p} is {w}x{h} pixels: it holds no image; replace or remove the file")
    cap = w * h * 8 + (16 << 20)  # 8 bytes a pixel (16-bit RGBA, uncompressed) plus metadata
    if nbytes > cap:
        raise UsageError(f"image {p} is {nbytes / 1e6:.0f} MB for {w}x{h} pixels, more than any image of that size "
                         "needs: not an image file edgekit reads (misnamed or padded); replace or remove it")
    if data is None:
        data = np.fromfile(p, dtype=np.uint8)
    img: np.ndarray | None = None
    try:
        import cv2
    except ImportError:
        img = _read_pillow(p)
    else:
        try:
            img = cv2.imdecode(data, cv2.IMREAD_COLOR)
        except cv2.error as exc:
            why = str(exc).strip().splitlines()[-1][:160]
            raise UsageError(f"cannot decode image {p}: OpenCV refuses it ({why})") from None
    if img is None or img.size == 0:
        raise UsageError(f"cannot decode image {p}: not a readable {FORMATS} file")
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
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return np.ascontiguousarray(rgb[..., ::-1])


# ---------------------------------------------------------------- header dimensions


def image_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) from the first bytes of an image file, without decoding; None if unknown."""
    try:
        if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
            w, h = struct.unpack(">II", head[16:24])
            return int(w), int(h)
        if head.startswith(b"\xff\xd8"):
            return _jpeg_size(head)
        if head.startswith(b"BM"):
            if struct.unpack("<I", head[14:18])[0] == 12:  # OS/2 BITMAPCOREHEADER
                w, h = struct.unpack("<HH", head[18:22])
            else:
                w, h = struct.unpack("<ii", head[18:26])
            return abs(int(w)), abs(int(h))
        if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            return _webp_size(head)
        if head[:6] in (b"GIF87a", b"GIF89a"):
            w, h = struct.unpack("<HH", head[6:10])
            return int(w), int(h)
        if head[:4] in (b"II*\x00", b"MM\x00*"):
            return _tiff_size(head)
        if head[:1] == b"P" and head[1:2] in (b"1", b"2", b"3", b"4", b"5", b"6"):
            return _pnm_size(head)
    except (struct.error, IndexError, ValueError):
        return None
    return None


_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(b: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 4 <= len(b):
        if b[i] != 0xFF:
            return None
        marker = b[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # no length
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no frame header before it
            return None
        seg = struct.unpack(">H", b[i + 2:i + 4])[0]
        if marker in _JPEG_SOF:
            h, w = struct.unpack(">HH", b[i + 5:i + 9])
            return (int(w), int(h)) if h else None  # height 0: given later (DNL), unknown here
        i += 2 + seg
    return None


def _webp_size(b: bytes) -> tuple[int, int] | None:
    kind = b[12:16]
    if kind == b"VP8 ":
        w, h = struct.unpack("<HH", b[26:30])
        return int(w & 0x3FFF), int(h & 0x3FFF)
    if kind == b"VP8L":
        bits = struct.unpack("<I", b[21:25])[0]
        return int((bits & 0x3FFF) + 1), int(((bits >> 14) & 0x3FFF) + 1)
    if kind == b"VP8X":
        w = int.from_bytes(b[24:27], "little") + 1
        h = int.from_bytes(b[27:30], "little") + 1
        return w, h
    return None


def _tiff_size(b: bytes) -> tuple[int, int] | None:
    end = "<" if b[:2] == b"II" else ">"
    ifd = struct.unpack(end + "I", b[4:8])[0]
    n = struct.unpack(end + "H", b[ifd:ifd + 2])[0]
    found: dict[int, int] = {}
    for k in range(n):
        e = ifd + 2 + 12 * k
        tag, typ = struct.unpack(end + "HH", b[e:e + 4])
        if tag in (256, 257):
            fmt = "H" if typ == 3 else "I"
            found[tag] = int(struct.unpack(end + fmt, b[e + 8:e + 8 + struct.calcsize(fmt)])[0])
    if 256 in found and 257 in found:
        return found[256], found[257]
    return None


def _pnm_size(b: bytes) -> tuple[int, int] | None:
    words: list[int] = []
    for line in b[2:4096].split(b"\n"):
        for tok in line.split(b"#")[0].split():
            words.append(int(tok))
            if len(words) == 2:
                return words[0], words[1]
    return None


SAMPLES = Path(__file__).resolve().parent / "data" / "samples"


def sample_images() -> list[Path]:
    """The real photographs that ship with edgekit (see data/samples/README.md)."""
    return sorted(p for p in SAMPLES.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
