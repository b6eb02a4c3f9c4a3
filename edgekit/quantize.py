"""INT8 and FP16 variants of a bundle's FP32 ONNX (cpu tier: ONNX Runtime does the work).

- calibration: ONNX Runtime's calibrators (entropy, percentile, minmax) over the images,
  in chunks, so memory stays bounded and progress can be shown;
- ``model.int8.onnx``: Q/DQ for TensorRT: symmetric int8 activations and weights,
  per-channel weights, float biases, Q/DQ on the inputs of Conv/Gemm/MatMul and residual
  Add (where TensorRT fuses them); preprocessing nodes stay float;
- ``model.int8-cpu.onnx``: uint8 activations, int8 per-channel weights, for ONNX Runtime on CPUs;
- ``model.fp16.onnx``: float16 weights and compute, input and output types unchanged.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.deps import require
from edgekit.errors import UsageError

METHODS = ("entropy", "percentile", "minmax")
# Ops whose inputs get Q/DQ for TensorRT: it fuses Q/DQ into these (and into residual Add).
TRT_OPS = ["Conv", "Gemm", "MatMul", "Add"]
CPU_OPS = ["Conv", "Gemm", "MatMul", "Add", "MaxPool", "AveragePool", "GlobalAveragePool", "Concat"]
CHUNK = 8  # images per calibration pass: bounds memory on a Jetson or a small CI box

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Calibration:
    method: str
    ranges: dict[str, tuple[float, float]]  # tensor -> (min, max) for INT8
    tensors_data: Any  # onnxruntime TensorsData, for quantize_static's cache
    images: int
    seconds: float
    percentile: float | None = None


def _ort_method(method: str) -> Any:
    q = require("onnxruntime.quantization", "INT8 calibration")
    if method not in METHODS:
        raise UsageError(f"unknown calibration method {method!r}; choose from {', '.join(METHODS)}")
    return {"entropy": q.CalibrationMethod.Entropy, "percentile": q.CalibrationMethod.Percentile,
            "minmax": q.CalibrationMethod.MinMax}[method]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """ONNX Runtime's quantizer prints and logs chatter; the library stays quiet."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def preprocessing_nodes(model: Any) -> list[str]:
    """Names of the in-graph preprocessing nodes (everything before the first Conv)."""
    names = []
    for node in model.graph.node:
        if node.op_type == "Conv":
            break
        names.append(node.name)
    return names


class _Chunk:
    """A CalibrationDataReader over a slice of images, in small batches."""

    def __init__(self, name: str, images: np.ndarray, batch: int) -> None:
        self.name = name
        self.images = images
        self.batch = batch
        self.i = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= len(self.images):
            return None
        x = self.images[self.i:self.i + self.batch]
        self.i += self.batch
        return {self.name: x}


def calibrate(onnx_path: Path, images: np.ndarray, method: str = "entropy", percentile: float = 99.99,
              progress: Progress | None = None, batch: int | None = None) -> Calibration:
    """Activation ranges of every quantizable tensor over ``images`` (uint8 NHWC)."""
    q = require("onnxruntime.quantization", "INT8 calibration")
    onnx = require("onnx", "INT8 calibration")
    if len(images) == 0:
        raise UsageError("no calibration images")
    if method == "percentile" and not 0 < percentile <= 100:
        raise UsageError(f"--percentile must be in (0, 100], got {percentile}")
    model = onnx.load(str(onnx_path))
    input_name = model.graph.input[0].name
    static = model.graph.input[0].type.tensor_type.shape.dim[0].dim_value
    step = static or batch or 1
    # Entropy: ONNX Runtime collects |x| histograms (its percentile collector); the
    # threshold search is TensorRT's (edgekit.entropy). Percentile, minmax: ONNX Runtime.
    collect_as = "percentile" if method == "entropy" else method
    # Ranges are kept one-sided where the data is (a ReLU's output is never negative): the
    # TensorRT model symmetrises them (ActivationSymmetric), the CPU model's uint8 uses them as they are.
    extra: dict[str, Any] = {"symmetric": collect_as != "minmax"}
    if collect_as == "percentile":
        extra.update(num_bins=2048, percentile=percentile)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgekit-calib-") as tmp, _quiet():
        calibrator = q.create_calibrator(
            Path(onnx_path), TRT_OPS + CPU_OPS, augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=_ort_method(collect_as), extra_options=extra,
        )
        per_pass = max(step, CHUNK - CHUNK % step)
        for start in range(0, len(images), per_pass):
            chunk = images[start:start + per_pass]
            if static and len(chunk) % static:
                pad = static - len(chunk) % static
                chunk = np.concatenate([chunk, chunk[:pad]])
            calibrator.collect_data(_Chunk(input_name, chunk, step))
            if progress:
                progress(min(len(images), start + per_pass), len(images))
        if method == "minmax":
            data = calibrator.compute_data()
        else:
            from onnxruntime.quantization.calibrate import TensorData, TensorsData

            hists = calibrator.collector.histogram_dict
            if method == "entropy":
                from edgekit.entropy import entropy_amax

                amax = {name: entropy_amax(h[0], h[1]) for name, h in hists.items()}
            else:
                amax = {name: float(np.asarray(td.range_value[1]).ravel()[0])
                        for name, td in calibrator.compute_data().data.items()}
            data = TensorsData(_ort_method(method), {
                k: TensorData(lowest=np.float32(max(float(hists[k][2]), -a)), highest=np.float32(a))
                for k, a in amax.items()})
    ranges = {}
    for name, td in data.data.items():
        lo, hi = (td.range_value if hasattr(td, "range_value") else td)[:2]
        ranges[name] = (float(np.asarray(lo).ravel()[0]), float(np.asarray(hi).ravel()[0]))
    return Calibration(method, ranges, data, len(images), time.perf_counter() - t0,
                       percentile if method == "percentile" else None)


def quantize(onnx_path: Path, calib: Calibration, out: Path, target: str = "trt",
             exclude: list[str] | None = None) -> None:
    """Write the Q/DQ model for ``target`` ("trt" or "cpu") using the calibrated ranges."""
    q = require("onnxruntime.quantization", "INT8 quantization")
    onnx = require("onnx", "INT8 quantization")
    from onnxruntime.quantization.calibrate import save_tensors_data

    model = onnx.load(str(onnx_path))
    nodes_to_exclude = preprocessing_nodes(model) + list(exclude or [])
    if target == "trt":
        kwargs: dict[str, Any] = dict(
            activation_type=q.QuantType.QInt8, weight_type=q.QuantType.QInt8, op_types_to_quantize=TRT_OPS,
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
        )
    elif target == "cpu":
        kwargs = dict(
            activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8, op_types_to_quantize=CPU_OPS,
            extra_options={"WeightSymmetric": True},
        )
    else:
        raise ValueError(target)
    with tempfile.TemporaryDirectory(prefix="edgekit-quant-") as tmp, _quiet():
        cache = Path(tmp) / "ranges.json"
        save_tensors_data(calib.tensors_data, cache)
        q.quantize_static(
            str(onnx_path), str(Path(tmp) / "q.onnx"), None, quant_format=q.QuantFormat.QDQ, per_channel=True,
            calibrate_method=_ort_method(calib.method), nodes_to_exclude=nodes_to_exclude,
            calibration_cache_path=str(cache), **kwargs,
        )
        qm = onnx.load(str(Path(tmp) / "q.onnx"))
    qm.doc_string = f"edgekit int8 ({target}), {calib.method} calibration on {calib.images} images"
    onnx.save(qm, str(out))


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
        "tensors": {k: {"min": lo, "max": hi, "amax": max(abs(lo), abs(hi))} for k, (lo, hi) in calib.ranges.items()},
    }, indent=1) + "\n"
