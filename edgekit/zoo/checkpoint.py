"""Reading a user's checkpoint file (PyTorch or safetensors, told apart by content) into a
flat name -> tensor dict without running code; whatever the file is instead is said in one line,
in user terms."""

from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path
from typing import Any

from edgekit.deps import require
from edgekit.errors import WeightsError

_SAVE = "save the weights with torch.save(model.state_dict(), PATH) (or as .safetensors)"
_AGAIN = f"copy or download the file again, or {_SAVE}"


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A flat name -> tensor dict from a safetensors or torch file (told apart by their content),
    without running code. Whatever the file is instead is said in one line, in user terms."""
    torch = require("torch", "reading checkpoints")
    kind = _identify(path)
    if kind == "safetensors":
        st = require("safetensors.torch", "reading .safetensors checkpoints")
        try:
            return _unwrap(dict(st.load_file(str(path), device="cpu")), path)
        except Exception as exc:  # safetensors raises its own SafetensorError
            what = _diagnose(path) or "its header does not match its data"
            raise WeightsError(f"cannot read {path}: it is a damaged safetensors file: {what}; {_AGAIN}") from exc
    try:
        with open(path, "rb") as f:  # a file object: torch.load reads a .safetensors name as safetensors
            obj = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as exc:
        msg = str(exc)
        if "Unsupported global" in msg or "GLOBAL " in msg:
            m = re.search(r"GLOBAL ([\w.]+)", msg)
            name = f" ({m.group(1)})" if m else ""
            raise WeightsError(
                f"refusing to load {path}: it holds a pickled Python object{name} that would run code "
                "when loaded; re-save only the weights, e.g. torch.save(model.state_dict(), 'weights.pth'), "
                "or use .safetensors"
            ) from exc
        what = _diagnose(path) or "its data cannot be decoded"
        raise WeightsError(f"cannot read {path}: it is a damaged PyTorch checkpoint: {what}; {_AGAIN}") from exc
    return _unwrap(obj, path)


def _head(path: Path, n: int = 4096) -> tuple[bytes, int]:
    try:
        with open(path, "rb") as f:
            return f.read(n), os.fstat(f.fileno()).st_size
    except OSError as exc:
        raise WeightsError(f"cannot read {path}: {exc.strerror or exc}; check that the file is readable") from exc


def _identify(path: Path) -> str:
    """"torch" or "safetensors" by the file's content; anything else is a WeightsError saying
    what the file is instead."""
    head, size = _head(path)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        problem = _zip_problem(path)
        if problem:
            raise WeightsError(f"cannot read {path}: it is {problem[0]}, not a PyTorch checkpoint; {problem[1]}")
        return "torch"
    if _safetensors_like(head):
        return "safetensors"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "torch"  # a pickle: PyTorch's format before 1.6
    what, todo = _not_weights(head, size)
    raise WeightsError(f"cannot read {path}: {what}; {todo}")


def _safetensors_like(head: bytes) -> bool:
    """An 8-byte little-endian header length, then the JSON header: '{"' (or '{}' if no tensors)."""
    return len(head) >= 10 and head[8:9] == b"{" and head[9:10] in (b'"', b"}", b" ", b"\n")


def _not_weights(head: bytes, size: int) -> tuple[str, str]:
    """What a file that is neither a PyTorch nor a safetensors file is, and what to do."""
    nor = "not a PyTorch checkpoint or safetensors file"
    if size == 0:
        return f"it is empty (0 bytes), {nor}", _AGAIN
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<?xml")) or b"<html" in text[:512]:
        return (f"it is an HTML page, {nor} (a failed download, e.g. an error or login page saved under "
                "this name?)", f"download the file again (from a browser, the page's own link), or {_SAVE}")
    if text.startswith(b"version https://git-lfs"):
        return "it is a Git LFS pointer, not the weights it stands for", "fetch them with git lfs pull"
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return (f"it is an HDF5 file (Keras weights?), {nor}",
                "for a Keras model, export it to ONNX and use edgekit import")
    if head.startswith(b"\x1f\x8b"):
        return "it is gzip-compressed", "decompress it (gunzip) and pass the result"
    if b"\0" not in head:
        try:
            head.decode("utf-8")
            is_text = True
        except UnicodeDecodeError as exc:
            is_text = exc.start >= len(head) - 3  # a character cut at the end of what was read
        if is_text:
            return f"it is a text file, {nor}", _AGAIN
    return f"its content is {nor} (an unknown format)", _AGAIN


def _zip_problem(path: Path) -> tuple[str, str] | None:
    """None for a zip archive laid out as PyTorch writes them, else (what it is, what to do)."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return ("a truncated or damaged zip archive (its end is missing or corrupt: an interrupted download "
                "or copy?)", _AGAIN)
    if any(n.endswith("data.pkl") for n in names):
        return None
    if "config.json" in names and any(n.endswith(".weights.h5") for n in names):
        return "a Keras .keras archive", "for a Keras model, export it to ONNX and use edgekit import"
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return f"a zip archive without data.pkl ({f'it holds {shown}' if names else 'empty'})", _SAVE


def _diagnose(path: Path) -> str | None:
    """Why a file that looks like a checkpoint does not load, where its layout tells; None if not."""
    try:
        head, size = _head(path)
    except WeightsError:
        return None
    if head.startswith(b"PK"):
        problem = _zip_problem(path)
        return f"it is {problem[0]}" if problem else None
    if not _safetensors_like(head):
        return None if head[:1] == b"\x80" else _not_weights(head, size)[0]  # a pickle tells nothing more
    n = int.from_bytes(head[:8], "little")
    if 8 + n > size:
        return f"its header claims {n} bytes but the file has {size} (truncated?)"
    try:
        with open(path, "rb") as f:
            f.seek(8)
            header = json.loads(f.read(n))
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        return "its header is not valid (damaged)"
    need, have = max(ends, default=0), size - 8 - n
    if need > have:
        return f"its header lists {need} bytes of tensors but only {have} follow (truncated?)"
    if need < have:
        return f"its header lists {need} bytes of tensors but {have} follow (damaged?)"
    return "a tensor's offsets or shape in its header do not match its data"


def _describe(obj: Any) -> str:
    if isinstance(obj, dict):
        if not obj:
            return "an empty dict"
        keys = ", ".join(repr(k)[:40] for k in list(obj)[:4]) + (", ..." if len(obj) > 4 else "")
        return f"a dict with keys {keys}"
    return f"a {type(obj).__name__}"


def _unwrap(obj: Any, path: Path) -> dict[str, Any]:
    torch = require("torch", "reading checkpoints")
    for _ in range(3):
        if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
        if isinstance(obj, dict):
            for key in ("state_dict", "model", "model_state_dict", "state_dict_ema", "model_ema"):
                if key in obj and isinstance(obj[key], dict):
                    obj = obj[key]
                    break
            else:
                break
        else:
            break
    raise WeightsError(
        f"{path} holds no state_dict: it holds {_describe(obj)}, where a dict of tensors (or one under "
        "'state_dict' or 'model') was expected; save it with torch.save(model.state_dict(), PATH)"
    )
