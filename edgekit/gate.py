"""How far a reduced-precision model strays from FP32: the figures behind the accuracy gate."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Agreement:
    images: int
    top1_agreement: float  # share of images whose top-1 class equals FP32's
    top5_overlap: float  # mean share of FP32's top-5 classes also in this model's top-5
    cosine: float  # mean cosine similarity of the logits
    max_abs_error: float

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def agreement(ref: np.ndarray, got: np.ndarray) -> Agreement:
    ref = ref.astype(np.float64)
    got = got.astype(np.float64)
    k = min(5, ref.shape[1])
    top1 = float(np.mean(ref.argmax(1) == got.argmax(1)))
    rk = np.argsort(-ref, axis=1)[:, :k]
    gk = np.argsort(-got, axis=1)[:, :k]
    overlap = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(rk, gk, strict=True)]))
    num = np.sum(ref * got, axis=1)
    den = np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1)
    cos = float(np.mean(num / np.maximum(den, 1e-12)))
    return Agreement(len(ref), top1, overlap, cos, float(np.abs(ref - got).max()))


def batching(man: Any) -> tuple[int, bool]:
    """(batch size, static?) for running a bundle's model: its static batch, else 8."""
    first = man.input.shape[0]
    return (first, True) if isinstance(first, int) else (8, False)


def run_all(runner: Any, images: np.ndarray, batch: int = 8, static: bool = False) -> np.ndarray:
    """Logits for all images, in batches (the last one padded for static-batch models)."""
    out = []
    for i in range(0, len(images), batch):
        chunk = images[i:i + batch]
        n = len(chunk)
        if static and n < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - n, 0)])
        out.append(runner.infer(chunk)[:n])
    return np.concatenate(out)
