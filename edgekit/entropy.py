"""TensorRT's EntropyCalibration2 threshold, from a histogram of |x|.

For each candidate threshold (a number of histogram bins ``i`` from 128 up), the kept bins
are merged into 128 int8 levels and expanded back (each level's mass spread evenly over its
non-empty bins); the amax is the threshold whose expansion is closest in KL divergence to
the reference (the kept bins, with everything clipped added to the last one). This is the
method NVIDIA described for TensorRT (Migacz, "8-bit Inference with TensorRT", GTC 2017).
ONNX Runtime's entropy calibrator works on a two-sided histogram instead; here the search
follows TensorRT, vectorised per candidate, coarse then fine, so it takes milliseconds.
"""

from __future__ import annotations

import numpy as np

LEVELS = 128  # int8 levels per sign
MAX_BINS = 2048


def _kl(hist: np.ndarray, clipped: float, i: int) -> float:
    h = hist[:i]
    idx = (np.arange(i) * LEVELS) // i
    nonzero = h > 0
    sums = np.bincount(idx, weights=h, minlength=LEVELS)
    counts = np.bincount(idx, weights=nonzero, minlength=LEVELS)
    cand = np.where(nonzero, (sums / np.maximum(counts, 1))[idx], 0.0)
    ref = h.copy()
    ref[-1] += clipped
    ref_sum = ref.sum()
    cand_sum = cand.sum()
    if ref_sum <= 0 or cand_sum <= 0:
        return float("inf")
    p = ref / ref_sum
    q = cand / cand_sum
    mask = p > 0
    if np.any(q[mask] == 0):
        return float("inf")
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))


def _rebin(hist: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge adjacent bins so that at most MAX_BINS remain (histograms grow as ranges grow)."""
    if len(hist) <= MAX_BINS:
        return hist, edges
    factor = int(np.ceil(len(hist) / MAX_BINS))
    n = int(np.ceil(len(hist) / factor)) * factor
    padded = np.concatenate([hist, np.zeros(n - len(hist), hist.dtype)])
    width = edges[1] - edges[0]
    merged = padded.reshape(-1, factor).sum(1)
    new_edges = edges[0] + np.arange(len(merged) + 1) * width * factor
    return merged, new_edges


def entropy_amax(hist: np.ndarray, edges: np.ndarray, stride: int = 8) -> float:
    """The amax TensorRT's EntropyCalibration2 would choose for this |x| histogram."""
    hist, edges = _rebin(np.asarray(hist, np.float64), np.asarray(edges, np.float64))
    hist = hist.copy()
    # The first bin holds every exact zero (half of a ReLU's output); left as is, that spike
    # dominates the divergence and drives thresholds far too low. NVIDIA's own histogram
    # calibrator (pytorch-quantization) evens it with its neighbour; so do we.
    if len(hist) > 1:
        hist[0] = hist[1]
    n = len(hist)
    if n <= LEVELS or hist.sum() == 0:
        return float(edges[-1])
    tail = np.concatenate([np.cumsum(hist[::-1])[::-1], [0.0]])  # tail[i] = sum(hist[i:])

    def best(candidates: range) -> int:
        kls = [_kl(hist, float(tail[i]), i) for i in candidates]
        # ties: the largest threshold (keep range rather than clip)
        k = len(kls) - 1 - int(np.argmin(kls[::-1]))
        return candidates[k]

    coarse = best(range(LEVELS, n + 1, stride))
    fine = best(range(max(LEVELS, coarse - stride + 1), min(n, coarse + stride - 1) + 1))
    return float(edges[fine])
