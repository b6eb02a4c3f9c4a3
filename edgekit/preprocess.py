"""Preprocessing shared by export, calibration and the runtime.

The CPU does one thing per frame: crop the centre region and resize it to the model's
input size (one resize, no colour conversion). Everything else, colour order, layout,
scaling and normalisation, is a graph node (see :func:`graph_constants`), so the GPU does it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgekit.errors import UsageError

INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "area")


@dataclass(frozen=True)
class Preprocess:
    """What a model expects of its input, as trained."""

    height: int
    width: int
    crop_fraction: float = 0.875
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    color_order: str = "RGB"  # the channel order the model was trained on
    input_range: float = 1.0  # 1.0: pixels scaled to [0, 1] before mean/std; 255.0: raw

    def __post_init__(self) -> None:
        if self.height < 1 or self.width < 1:
            raise UsageError(f"input size must be positive, got {self.height}x{self.width}")
        if not 0.0 < self.crop_fraction <= 1.0:
            raise UsageError(f"crop fraction must be in (0, 1], got {self.crop_fraction}")
        if self.interpolation not in INTERPOLATIONS:
            raise UsageError(
                f"unknown interpolation {self.interpolation!r}; choose from {', '.join(INTERPOLATIONS)}"
            )
        if self.color_order not in ("RGB", "BGR"):
            raise UsageError(f"colour order must be RGB or BGR, got {self.color_order!r}")
        if any(s <= 0 for s in self.std):
            raise UsageError(f"std must be positive, got {self.std}")

    def to_dict(self) -> dict[str, object]:
        return {
            "height": self.height,
            "width": self.width,
            "crop_fraction": self.crop_fraction,
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
            "color_order": self.color_order,
            "input_range": self.input_range,
        }

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> Preprocess:
        mean = d["mean"]
        std = d["std"]
        assert isinstance(mean, list) and isinstance(std, list)
        return cls(
            height=int(d["height"]),  # type: ignore[call-overload]
            width=int(d["width"]),  # type: ignore[call-overload]
            crop_fraction=float(d["crop_fraction"]),  # type: ignore[arg-type]
            interpolation=str(d["interpolation"]),
            mean=(float(mean[0]), float(mean[1]), float(mean[2])),
            std=(float(std[0]), float(std[1]), float(std[2])),
            color_order=str(d["color_order"]),
            input_range=float(d["input_range"]),  # type: ignore[arg-type]
        )


def graph_constants(pre: Preprocess) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (scale, offset) so that ``model_input = pixel * scale + offset``.

    ``pixel`` is in 0..255 and already in the model's colour order.
    """
    std = np.asarray(pre.std, dtype=np.float64)
    mean = np.asarray(pre.mean, dtype=np.float64)
    scale = pre.input_range / 255.0 / std
    offset = -mean / std
    return scale.astype(np.float32), offset.astype(np.float32)


def crop_box(frame_h: int, frame_w: int, pre: Preprocess) -> tuple[int, int, int, int]:
    """Centre region (y0, y1, x0, x1) of the frame that maps onto the model input.

    Same geometry as "resize the short side to size / crop_fraction, then centre-crop",
    computed in frame coordinates so that a single resize does both.
    """
    scale = min(frame_h / pre.height, frame_w / pre.width) * pre.crop_fraction
    ch = min(frame_h, max(1, round(pre.height * scale)))
    cw = min(frame_w, max(1, round(pre.width * scale)))
    y0 = (frame_h - ch) // 2
    x0 = (frame_w - cw) // 2
    return y0, y0 + ch, x0, x0 + cw


def fit_frame(frame: np.ndarray, pre: Preprocess) -> np.ndarray:
    """Centre-crop and resize a BGR uint8 frame (H, W, 3) to the model size, BGR uint8."""
    check_frame(frame)
    y0, y1, x0, x1 = crop_box(frame.shape[0], frame.shape[1], pre)
    region = frame[y0:y1, x0:x1]
    if region.shape[0] == pre.height and region.shape[1] == pre.width:
        return np.ascontiguousarray(region)
    return _resize(region, pre.width, pre.height, pre.interpolation)


def size_mismatch(pre: Preprocess, layout: str, shape: Sequence[object] | None) -> tuple[int, int] | None:
    """The (height, width) of a 4-D model input ``shape`` (NHWC, or NCHW by ``layout``) when it
    disagrees with the preprocessing's size; None when it agrees or is not fixed."""
    if shape is None or len(shape) != 4:
        return None
    h, w = (shape[2], shape[3]) if layout == "NCHW" else (shape[1], shape[2])
    if isinstance(h, int) and isinstance(w, int) and (h, w) != (pre.height, pre.width):
        return h, w
    return None


def check_frame(frame: object) -> None:
    """A clear UsageError for anything but a non-empty uint8 BGR image (H, W, 3), saying how to
    get one; the library's callers pass camera frames and cv2.imread results, which can be None."""
    want = "a BGR uint8 image of shape (H, W, 3)"
    if frame is None:
        raise UsageError(f"expected {want}, got None (cv2.imread and VideoCapture.read return None "
                         "for a file or frame they cannot read)")
    if isinstance(frame, (str, os.PathLike)):
        raise UsageError(f"expected {want}, got the path {str(frame)!r}; read it first with "
                         "edgekit.images.read_image(path)")
    if not isinstance(frame, np.ndarray):
        raise UsageError(f"expected {want} as a numpy array, got {type(frame).__name__}; "
                         "convert it with numpy.asarray(...) (PIL images: numpy.asarray(img)[..., ::-1])")
    if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] in (1, 4)):
        fix = "cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)" if frame.ndim == 2 or frame.shape[2] == 1 \
            else "cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)"
        raise UsageError(f"expected {want}, got shape {frame.shape}; convert it with {fix}")
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise UsageError(f"expected {want}, got shape {frame.shape}"
                         + ("; pass one image at a time, or a list of them to classify_batch"
                            if frame.ndim == 4 else ""))
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise UsageError(f"expected {want}, got an empty {frame.shape[0]}x{frame.shape[1]} image")
    if frame.dtype != np.uint8:
        hint = ("; scale floats in 0..1 with (frame * 255).clip(0, 255).astype(numpy.uint8)"
                if frame.dtype.kind == "f" else "; convert it with frame.astype(numpy.uint8) after scaling to 0..255")
        raise UsageError(f"expected a uint8 image, got dtype {frame.dtype}{hint}")


def _resize(img: np.ndarray, width: int, height: int, interpolation: str) -> np.ndarray:
    try:
        import cv2
    except ImportError:
        return _resize_numpy(img, width, height)
    codes = {
        "nearest": cv2.INTER_NEAREST,
        "bilinear": cv2.INTER_LINEAR,
        "bicubic": cv2.INTER_CUBIC,
        "area": cv2.INTER_AREA,
    }
    # Shrinking a lot with bilinear/bicubic aliases; area averaging is what a camera needs.
    shrink = img.shape[0] > 2 * height or img.shape[1] > 2 * width
    code = cv2.INTER_AREA if shrink else codes[interpolation]
    return np.ascontiguousarray(cv2.resize(img, (width, height), interpolation=code))


def _resize_numpy(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear resize without OpenCV (half-pixel centres, as cv2.INTER_LINEAR)."""
    h, w = img.shape[:2]
    ys = np.clip((np.arange(height) + 0.5) * h / height - 0.5, 0, h - 1)
    xs = np.clip((np.arange(width) + 0.5) * w / width - 0.5, 0, w - 1)
    y0 = np.floor(ys).astype(np.int64)
    x0 = np.floor(xs).astype(np.int64)
    y1 = np.minimum(y0 + 1, h - 1)
    x1 = np.minimum(x0 + 1, w - 1)
    wy = (ys - y0)[:, None, None]
    wx = (xs - x0)[None, :, None]
    f = img.astype(np.float32)
    top = f[y0][:, x0] * (1 - wx) + f[y0][:, x1] * wx
    bottom = f[y1][:, x0] * (1 - wx) + f[y1][:, x1] * wx
    out = top * (1 - wy) + bottom * wy
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def to_model_input(batch_bgr: np.ndarray, pre: Preprocess) -> np.ndarray:
    """The float NCHW tensor the original model takes, from uint8 BGR NHWC (reference path).

    Used to check that the in-graph preprocessing does exactly this.
    """
    x = batch_bgr.astype(np.float64)
    if pre.color_order == "RGB":
        x = x[..., ::-1]
    scale, offset = graph_constants(pre)
    x = x * scale.astype(np.float64) + offset.astype(np.float64)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)).astype(np.float32)


def graph_input(images_bgr: np.ndarray, float_input: bool, color_order: str | None) -> np.ndarray:
    """What an exported graph takes, from model-size uint8 BGR NHWC images: the images as they
    are (uint8 input), or float NCHW pixels 0-255 in the model's colour order (``--float-input``)."""
    if not float_input:
        return images_bgr
    x = images_bgr[..., ::-1] if color_order == "RGB" else images_bgr
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)).astype(np.float32)
