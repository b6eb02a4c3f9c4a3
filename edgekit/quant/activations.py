"""Activation statistics over the calibration images, collected as TensorRT's calibrator does.

Two passes over the images with the FP32 model (ONNX Runtime, every float tensor exposed):

1. the range of each tensor: its min and max over all images;
2. a histogram of |x| with 2048 bins over [0, max |x|], the range from pass 1.

The range is fixed before any value is binned, so the histogram never grows or gets merged,
and both passes are sums and extremes: the order of the images changes nothing.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.callbacks import Progress
from edgekit.deps import require
from edgekit.errors import UsageError
from edgekit.quant.entropy import BINS

CHUNK_BYTES = 256 * 1024 * 1024  # exposed activations per pass over a chunk: bounds memory on a Jetson


@dataclass(frozen=True)
class Statistics:
    lo: dict[str, float]  # tensor -> min over all images
    hi: dict[str, float]  # tensor -> max
    hist: dict[str, np.ndarray]  # tensor -> BINS counts of |x| over [0, amax]
    images: int
    bounded: frozenset[str] = frozenset()  # tensors whose whole range is known (the normalised image)

    def absmax(self, name: str) -> float:
        return max(abs(self.lo[name]), abs(self.hi[name]))

    def edges(self, name: str) -> np.ndarray:
        return np.linspace(0.0, self.absmax(name), BINS + 1)


WEIGHTED = ("Conv", "Gemm", "MatMul")


def preprocessing_nodes(model: Any) -> list[str]:
    """Names of the in-graph preprocessing nodes (everything before the first weighted layer)."""
    names: list[str] = []
    for node in model.graph.node:
        if node.op_type in WEIGHTED:
            return names
        names.append(node.name)
    return []  # no weighted layer at all: nothing is preprocessing, and nothing to quantize


def float_tensors(model: Any) -> list[str]:
    """Every float32 activation a quantizer may need, in graph order: float graph inputs and node
    outputs after the preprocessing (its last output, the first Conv's input, included)."""
    onnx = require("onnx", "INT8 calibration")
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type
             for v in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input)}
    pre = preprocessing_nodes(model)
    inside = set(pre[:-1])  # the preprocessing's own intermediate tensors stay float
    out: list[str] = [i.name for i in model.graph.input if types.get(i.name) == onnx.TensorProto.FLOAT]
    for node in model.graph.node:
        if node.name not in inside:
            out.extend(t for t in node.output if t and types.get(t) == onnx.TensorProto.FLOAT)
    return out


class _Exposed:
    """An ONNX Runtime session of the FP32 model with ``tensors`` as extra outputs."""

    def __init__(self, model: Any, tensors: list[str], threads: int | None) -> None:
        onnx = require("onnx", "INT8 calibration")
        from edgekit.runners.ort import OrtRunner

        m = onnx.ModelProto()
        m.CopyFrom(model)
        have = {o.name for o in m.graph.output}
        m.graph.output.extend(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None)
                              for t in tensors if t not in have)
        if m.ByteSize() < 2**31 - 2**20:  # in memory: nothing left behind if the process is killed
            self.runner = OrtRunner(m.SerializeToString(), threads=threads)
        else:  # protobuf cannot serialise 2 GB: a file that lives only while ONNX Runtime reads it
            with tempfile.TemporaryDirectory(prefix="edgekit-calib-") as tmp:
                onnx.save(m, str(Path(tmp) / "exposed.onnx"), save_as_external_data=True)
                self.runner = OrtRunner(Path(tmp) / "exposed.onnx", threads=threads)
        self.tensors = tensors
        self.static = model.graph.input[0].type.tensor_type.shape.dim[0].dim_value

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        n = len(images)
        step = self.static or n
        parts: dict[str, list[np.ndarray]] = {t: [] for t in self.tensors}
        for i in range(0, n, step):
            x = images[i:i + step]
            if len(x) < step:  # a static batch: pad with copies of the first images
                x = np.concatenate([x, np.resize(x, (step - len(x),) + x.shape[1:])])
            outs = self.runner._session.run(self.tensors, {self.runner.input_name: x})
            for t, o in zip(self.tensors, outs):
                parts[t].append(o)
        return {t: np.concatenate(o)[:n] for t, o in parts.items()}


def collect(model_path: Path, images: np.ndarray, progress: Progress | None = None,
            threads: int | None = None) -> Statistics:
    """Ranges and |x| histograms of every float tensor of the FP32 model over ``images``."""
    onnx = require("onnx", "INT8 calibration")
    if len(images) == 0:
        raise UsageError("no calibration images")
    model = onnx.load(str(model_path))
    tensors = float_tensors(model)
    session = _Exposed(model, tensors, threads)
    total = 2 * len(images)
    lo = {t: np.inf for t in tensors}
    hi = {t: -np.inf for t in tensors}
    # pass 1: ranges; the first image also sizes the chunks
    first = session.run(images[:1])
    per_image = sum(a.nbytes for a in first.values())
    step = max(1, min(len(images), CHUNK_BYTES // max(per_image, 1)))
    if session.static:
        step = max(session.static, step - step % session.static)
    for start in range(0, len(images), step):
        outs = session.run(images[start:start + step])
        for t, a in outs.items():
            if a.size:
                lo[t] = min(lo[t], float(a.min()))
                hi[t] = max(hi[t], float(a.max()))
        if progress:
            progress(min(len(images), start + step), total)
    # The preprocessed image's range is known: black and white frames reach both ends of every
    # channel (each is affine in its own pixel). Its threshold must never clip highlights or
    # shadows that the calibration images happen to lack.
    bounded = set()
    pre = preprocessing_nodes(model)
    if pre:  # pixels 0-255, as uint8 or (--float-input) float
        ends = np.stack([np.zeros(images.shape[1:], images.dtype), np.full(images.shape[1:], 255, images.dtype)])
        by_name = {n.name: n for n in model.graph.node}
        image = by_name[pre[-1]].output[0]
        if image in tensors:
            a = session.run(ends)[image]
            lo[image], hi[image] = min(lo[image], float(a.min())), max(hi[image], float(a.max()))
            bounded.add(image)
    lo = {t: (v if np.isfinite(v) else 0.0) for t, v in lo.items()}
    hi = {t: (v if np.isfinite(v) else 0.0) for t, v in hi.items()}
    # pass 2: |x| histograms over the fixed range [0, max |x|]
    hist = {t: np.zeros(BINS, np.int64) for t in tensors}
    for start in range(0, len(images), step):
        outs = session.run(images[start:start + step])
        for t, a in outs.items():
            amax = max(abs(lo[t]), abs(hi[t]))
            if amax <= 0 or not a.size:
                hist[t][0] += a.size
                continue
            idx = (np.abs(a.ravel()) * np.float32(BINS / amax)).astype(np.int64)
            np.minimum(idx, BINS - 1, out=idx)
            hist[t] += np.bincount(idx, minlength=BINS)
        if progress:
            progress(len(images) + min(len(images), start + step), total)
    session.runner.close()
    return Statistics(lo, hi, hist, len(images), frozenset(bounded))
