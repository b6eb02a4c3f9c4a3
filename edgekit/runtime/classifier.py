"""Classify frames with a loaded bundle: Prediction, and Classifier around any runner (no torch).

loader.load picks the runner; this module only turns BGR frames into predictions."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import manifest as mf
from edgekit.errors import BundleError, UsageError
from edgekit.preprocess import check_frame, fit_frame, graph_input
from edgekit.runners.shapes import check_input_size, runner_input_shape


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
        try:
            check_input_size(path, manifest, runner_input_shape(runner))
        except BundleError:
            runner.close()
            raise

    @property
    def backend(self) -> str:
        return str(self.runner.backend)

    def prepare(self, frame_bgr: np.ndarray) -> np.ndarray:
        """The one CPU step per frame: centre crop + resize, to the graph's input layout."""
        img = fit_frame(frame_bgr, self.preprocess)
        out: np.ndarray = graph_input(img[None], self._float, self.manifest.input.color_order)[0]
        return out

    def classify(self, frame_bgr: np.ndarray, topk: int = 5) -> Prediction:
        """Top-k labels of one BGR uint8 image (H, W, 3) of any size; UsageError for anything else."""
        if isinstance(frame_bgr, (list, tuple)) and frame_bgr and all(isinstance(f, np.ndarray) for f in frame_bgr):
            raise UsageError("classify takes one image; pass a list of images to classify_batch")
        return self.classify_batch([frame_bgr], topk)[0]

    @property
    def max_batch(self) -> int | None:
        """The most images one call takes: a static batch, the TensorRT engine's profile maximum,
        or None (ONNX Runtime with a dynamic batch: any)."""
        first = self.manifest.input.shape[0]
        if isinstance(first, int):
            return first
        limit: int | None = getattr(self.runner, "max_batch", None)
        return limit

    @property
    def min_batch(self) -> int:
        """The fewest images one call takes (a TensorRT engine built with --batch 4:4:4 takes 4)."""
        first = self.manifest.input.shape[0]
        if isinstance(first, int):
            return first
        return int(getattr(self.runner, "min_batch", 1) or 1)

    def classify_batch(self, frames: list[np.ndarray], topk: int = 5) -> list[Prediction]:
        if isinstance(frames, np.ndarray) and frames.ndim == 3:
            raise UsageError("classify_batch takes a list of images; pass one image to classify")
        if len(frames) == 0:
            raise UsageError("classify_batch got no images; pass a list of one or more BGR uint8 images")
        for i, f in enumerate(frames):
            try:
                check_frame(f)
            except UsageError as exc:
                raise UsageError(f"image {i} of {len(frames)}: {exc}" if len(frames) > 1 else str(exc)) from None
        t0 = time.perf_counter()
        batch = np.stack([self.prepare(f) for f in frames])
        logits = self._infer(batch)
        ms = (time.perf_counter() - t0) * 1000.0
        probs = softmax(logits.astype(np.float32))
        k = max(1, min(topk, probs.shape[1]))
        out = []
        for row in probs:
            idx = np.argsort(-row)[:k]
            out.append(Prediction(tuple(self.labels[i] for i in idx), tuple(int(i) for i in idx),
                                  tuple(float(row[i]) for i in idx), ms / len(frames)))
        return out

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        """Any number of images on a model that takes between min_batch and max_batch at a time (a
        static --batch N export, an engine built with --batch 4:4:8): in chunks of at most max_batch,
        each padded with copies of its last image to at least min_batch."""
        lo, hi, n = self.min_batch, self.max_batch, len(batch)
        if n >= lo and (hi is None or n <= hi):
            out: np.ndarray = self.runner.infer(batch)
            return out
        size = hi or n
        parts = []
        for i in range(0, n, size):
            chunk = batch[i:i + size]
            k = len(chunk)
            if k < lo:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], lo - k, 0)])
            parts.append(self.runner.infer(chunk)[:k])
        return np.concatenate(parts)

    def close(self) -> None:
        self.runner.close()

    def __enter__(self) -> Classifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
