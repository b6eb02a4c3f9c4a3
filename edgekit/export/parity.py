"""Parity of a bundle's graph with its reference: the measure and limit every bundle shares
(export's and import's), and import's check of the wrapped model on uint8 frames against the
imported one on preprocessing computed in numpy, both with ONNX Runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekit.images import read_image, sample_images
from edgekit.preprocess import Preprocess, fit_frame
from edgekit.quant.gate import run_all

PARITY_TOLERANCE = 1e-4


def parity_figures(got: np.ndarray, ref: np.ndarray, n_random: int) -> dict[str, Any]:
    """How far a graph's outputs are from the reference's on the same images (export and import)."""
    rel = np.linalg.norm(got - ref, axis=1) / np.maximum(np.linalg.norm(ref, axis=1), 1e-12)
    top1 = int((got.argmax(1) == ref.argmax(1)).sum())
    max_rel = float(rel.max())
    return {
        "inputs": int(len(got)),
        "random_inputs": n_random,
        "photographs": int(len(got) - n_random),
        "max_rel_error": max_rel,
        "mean_rel_error": float(rel.mean()),
        "max_abs_error": float(np.abs(got - ref).max()),
        "top1_equal": top1,
        "tolerance": PARITY_TOLERANCE,
        "passed": bool(max_rel <= PARITY_TOLERANCE and top1 == len(got)),
    }



def reference_input(images_bgr: np.ndarray, pre: Preprocess, layout: str) -> np.ndarray:
    """What the imported model was trained on, computed in numpy from model-size uint8 BGR frames:
    colour order, pixels to the range mean/std apply to, (x - mean) / std, layout."""
    x = images_bgr.astype(np.float64)
    if pre.color_order == "RGB":
        x = x[..., ::-1]
    x = x * (pre.input_range / 255.0)
    x = (x - np.asarray(pre.mean, np.float64)) / np.asarray(pre.std, np.float64)
    if layout == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x, dtype=np.float32)


def parity_frames(pre: Preprocess, n_random: int, seed: int = 0) -> np.ndarray:
    """Random uint8 BGR frames plus the real sample photographs fitted as the runtime fits them."""
    rng = np.random.default_rng(seed)
    rand = rng.integers(0, 256, size=(n_random, pre.height, pre.width, 3), dtype=np.uint8)
    photos = [fit_frame(read_image(p), pre) for p in sample_images()]
    return np.concatenate([rand, np.stack(photos)], axis=0)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def check_parity(original: Path, wrapped: Path, layout: str, pre: Preprocess, batch: int | None,
                 softmax_removed: bool, n_random: int = 8) -> dict[str, Any]:
    from edgekit.runners.ort import OrtRunner

    frames = parity_frames(pre, n_random)
    step, static = (batch, True) if batch else (4, False)
    with OrtRunner(original) as r:
        ref = run_all(r, reference_input(frames, pre, layout), step, static).astype(np.float64)
    with OrtRunner(wrapped) as r:
        got = run_all(r, frames, step, static).astype(np.float64)
    if softmax_removed:
        got = softmax(got)
    return {
        **parity_figures(got, ref, n_random),
        "reference": "the imported model on preprocessing computed in numpy (ONNX Runtime)",
        "compared": "probabilities (softmax of the logits; the model's Softmax removed)" if softmax_removed
        else "logits",
    }
