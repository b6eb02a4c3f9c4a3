"""INT8 and FP16 variants of a bundle's FP32 ONNX (cpu tier: ONNX Runtime runs the calibration).

- calibration: TensorRT's way (:mod:`edgekit.quant.activations`): ranges first, then |x|
  histograms over the fixed range; thresholds by entropy (EntropyCalibration2), percentile
  or min/max;
- ``model.int8.onnx``: explicit quantization for TensorRT (:func:`edgekit.quant.qdq.tensorrt_qdq`):
  symmetric int8, per-channel weights, float biases, Q/DQ on the inputs of weighted layers
  and on residual skips only;
- ``model.int8-cpu.onnx``: ONNX Runtime's QLinear placement (:func:`edgekit.quant.cpu_qdq.cpu_qdq`):
  uint8 activations, 7-bit per-channel weights (no int16 saturation on x86 CPUs without VNNI);
- ``model.fp16.onnx``: float16 weights and compute, input and output types unchanged.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.callbacks import Progress
from edgekit.deps import require
from edgekit.errors import UsageError
from edgekit.quant import activations, cpu_qdq, qdq
from edgekit.quant.entropy import entropy_amax

METHODS = ("entropy", "percentile", "minmax")
TARGETS = ("trt", "cpu")



@dataclass(frozen=True)
class Calibration:
    method: str
    amax: dict[str, float]  # tensor -> symmetric threshold (TensorRT's scale * 127)
    ranges: dict[str, tuple[float, float]]  # tensor -> (min, max) within the threshold: the CPU form's uint8
    images: int
    seconds: float
    percentile: float | None = None
    observed: dict[str, float] = field(default_factory=dict)  # tensor -> max |x| seen

    def with_amax(self, tensor: str, amax: float) -> Calibration:
        """A copy with one tensor's threshold replaced (what-if tests, manual overrides)."""
        lo, hi = self.ranges[tensor]
        ranges = dict(self.ranges)
        ranges[tensor] = (max(lo, -amax), min(hi, amax))
        return Calibration(self.method, {**self.amax, tensor: amax}, ranges, self.images, self.seconds,
                           self.percentile, self.observed)


def _percentile_amax(hist: np.ndarray, edges: np.ndarray, percentile: float) -> float:
    total = hist.sum()
    if total == 0:
        return float(edges[-1])
    k = int(np.searchsorted(np.cumsum(hist), percentile / 100.0 * total))
    return float(edges[min(k + 1, len(edges) - 1)])


def calibrate(onnx_path: Path, images: np.ndarray, method: str = "entropy", percentile: float = 99.99,
              progress: Progress | None = None, threads: int | None = None) -> Calibration:
    """Activation thresholds of every float tensor over ``images`` (uint8 NHWC)."""
    if method not in METHODS:
        raise UsageError(f"unknown calibration method {method!r}; choose from {', '.join(METHODS)}")
    if method == "percentile" and not 0 < percentile <= 100:
        raise UsageError(f"--percentile must be in (0, 100], got {percentile}")
    t0 = time.perf_counter()
    stats = activations.collect(Path(onnx_path), images, progress, threads)
    amax: dict[str, float] = {}
    ranges: dict[str, tuple[float, float]] = {}
    observed: dict[str, float] = {}
    for t in stats.hist:
        top = stats.absmax(t)
        observed[t] = top
        if method == "minmax" or top == 0 or t in stats.bounded:
            a = top  # a known, bounded range (the normalised image) is kept whole
        elif method == "entropy":
            a = entropy_amax(stats.hist[t], stats.edges(t))
        else:
            a = _percentile_amax(stats.hist[t], stats.edges(t), percentile)
        amax[t] = a
        ranges[t] = (max(stats.lo[t], -a), min(stats.hi[t], a))
    return Calibration(method, amax, ranges, stats.images, time.perf_counter() - t0,
                       percentile if method == "percentile" else None, observed)


def build(onnx_path: Path | Any, calib: Calibration, target: str = "trt",
          exclude: list[str] | None = None) -> tuple[Any, list[str]]:
    """The Q/DQ model for ``target`` ("trt" or "cpu") in memory, and its quantized layers."""
    onnx = require("onnx", "INT8 quantization")
    model = onnx.load(str(onnx_path)) if isinstance(onnx_path, (str, Path)) else onnx_path
    pre = activations.preprocessing_nodes(model)
    doc = f"edgekit int8 ({target}), {calib.method} calibration on {calib.images} images"
    if target == "trt":
        return qdq.tensorrt_qdq(model, calib.amax, exclude or [], pre, doc)
    if target == "cpu":
        return cpu_qdq.cpu_qdq(model, calib.ranges, exclude or [], pre, doc)
    raise ValueError(f"target must be one of {TARGETS}, got {target!r}")


def quantize(onnx_path: Path, calib: Calibration, out: Path, target: str = "trt",
             exclude: list[str] | None = None) -> list[str]:
    """Write the Q/DQ model for ``target``; returns the quantized layers."""
    onnx = require("onnx", "INT8 quantization")
    model, layers = build(onnx_path, calib, target, exclude)
    onnx.save(model, str(out))
    return layers


def implicit_model(onnx_path: Path, calib: Calibration) -> Any:
    """What TensorRT < 11 runs from ``calibration.cache`` (implicit INT8, e.g. on DLA), as Q/DQ."""
    onnx = require("onnx", "INT8 simulation")
    model = onnx.load(str(onnx_path))
    return qdq.implicit_int8(model, calib.amax, activations.preprocessing_nodes(model))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """ONNX Runtime's converters print and log chatter; the library stays quiet."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def to_fp16(onnx_path: Path, out: Path) -> None:
    """FP16 weights and compute; the uint8 image input and float32 logits stay as they are."""
    onnx = require("onnx", "FP16 conversion")
    f16 = require("onnxruntime.transformers.float16", "FP16 conversion")
    model = onnx.load(str(onnx_path))
    with _quiet():
        half = f16.convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    half.doc_string = "edgekit fp16"
    onnx.save(half, str(out))


def ranges_json(calib: Calibration, digest: str, items: int, skipped: int, source: str) -> str:
    return json.dumps({
        "method": calib.method,
        "percentile": calib.percentile,
        "images": items,
        "skipped": skipped,
        "source": source,
        "image_list_sha256": digest,
        "seconds": round(calib.seconds, 2),
        "tensors": {k: {"min": lo, "max": hi, "amax": calib.amax[k], "observed_absmax": calib.observed.get(k)}
                    for k, (lo, hi) in calib.ranges.items()},
    }, indent=1) + "\n"
