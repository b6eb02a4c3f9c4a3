"""Load a bundle and classify frames: the runtime's entry point (no torch)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import bundle as bundle_mod
from edgekit import manifest as mf
from edgekit.errors import UsageError
from edgekit.preprocess import fit_frame

BACKENDS = ("auto", "onnxruntime")


@dataclass(frozen=True)
class Prediction:
    labels: tuple[str, ...]
    indices: tuple[int, ...]
    scores: tuple[float, ...]  # softmax probabilities
    latency_ms: float  # preprocessing + inference

    @property
    def label(self) -> str:
        return self.labels[0]

    @property
    def score(self) -> float:
        return self.scores[0]


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=-1, keepdims=True)
    return out


class Classifier:
    def __init__(self, path: Path, manifest: mf.Manifest, runner: Any, precision: str, why: str) -> None:
        self.path = path
        self.manifest = manifest
        self.runner = runner
        self.precision = precision
        self.why = why
        self.labels = (path / manifest.labels).read_text(encoding="utf-8").splitlines()
        self.preprocess = manifest.preprocess
        self._float = manifest.input.dtype != "uint8"

    @property
    def backend(self) -> str:
        return str(self.runner.backend)

    def prepare(self, frame_bgr: np.ndarray) -> np.ndarray:
        """The one CPU step per frame: centre crop + resize, to the graph's input layout."""
        img = fit_frame(frame_bgr, self.preprocess)
        if not self._float:
            return img
        if self.manifest.input.color_order == "RGB":
            img = img[..., ::-1]
        return np.ascontiguousarray(img.transpose(2, 0, 1)).astype(np.float32)

    def classify(self, frame_bgr: np.ndarray, topk: int = 5) -> Prediction:
        return self.classify_batch([frame_bgr], topk)[0]

    def classify_batch(self, frames: list[np.ndarray], topk: int = 5) -> list[Prediction]:
        t0 = time.perf_counter()
        batch = np.stack([self.prepare(f) for f in frames])
        logits = self.runner.infer(batch)
        ms = (time.perf_counter() - t0) * 1000.0
        probs = softmax(logits.astype(np.float32))
        k = max(1, min(topk, probs.shape[1]))
        out = []
        for row in probs:
            idx = np.argsort(-row)[:k]
            out.append(Prediction(tuple(self.labels[i] for i in idx), tuple(int(i) for i in idx),
                                  tuple(float(row[i]) for i in idx), ms / len(frames)))
        return out

    def close(self) -> None:
        self.runner.close()

    def __enter__(self) -> Classifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load(bundle: str | Path | None = None, backend: str = "auto", precision: str = "auto",
         threads: int | None = None) -> Classifier:
    """Load a bundle. ``precision="auto"`` takes the fastest model this backend runs well."""
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    path = Path(bundle) if bundle is not None else bundle_mod.find_latest()
    man = mf.read(path)
    chosen_why = ""
    if precision == "auto":
        # ONNX Runtime on a CPU: the uint8/int8 model is the fast one; FP32 where it is absent
        precision = "int8-cpu" if man.artifact("onnx", "int8-cpu") is not None else "fp32"
        chosen_why = "; the fastest model in the bundle for a CPU"
    art = man.artifact("onnx", precision)
    if art is None:
        have = sorted({a.precision for a in man.artifacts if a.kind == "onnx" and a.precision})
        raise UsageError(f"{path} has no {precision} model; it has: {', '.join(have)}")
    onnx_file = bundle_mod.artifact_path(path, art)
    bundle_mod.artifact_path(path, _labels_artifact(man, path))
    from edgekit.runners.ort import OrtRunner

    runner = OrtRunner(onnx_file, threads=threads)
    why = ("no TensorRT runner for this device yet" if backend == "auto" else "requested") + chosen_why
    return Classifier(path, man, runner, precision, why)


def _labels_artifact(man: mf.Manifest, path: Path) -> mf.Artifact:
    for a in man.artifacts:
        if a.path == man.labels:
            return a
    raise UsageError(f"{path}: the labels file {man.labels} is not listed among the artifacts")
