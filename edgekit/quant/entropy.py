"""TensorRT's EntropyCalibration2 threshold, from a histogram of |x| over a fixed range.

The histogram has 2048 bins over [0, max |x|], the range found in a first pass over all the
calibration images (so it never grows, and the order of the images does not matter). For
every candidate threshold ``i`` bins (128 <= i <= 2048) the kept bins are merged into 128
int8 levels and expanded back (each level's mass spread evenly over its non-empty bins);
the amax is the upper edge of the candidate whose expansion is closest in KL divergence to
the reference (the kept bins, with everything clipped added to the last one). This is the
method NVIDIA described (Migacz, "8-bit Inference with TensorRT", GTC 2017) and implemented
in pytorch-quantization's histogram calibrator.

All 1921 candidates are evaluated, none skipped: with prefix sums each costs O(128) in one
vectorised pass, so a tensor takes about a millisecond.
"""

from __future__ import annotations

import numpy as np

LEVELS = 128  # int8 levels per sign
BINS = 2048


def _xlogx(x: np.ndarray) -> np.ndarray:
    out = np.zeros_like(x, dtype=np.float64)
    pos = x > 0
    out[pos] = x[pos] * np.log(x[pos])
    return out


def divergences(hist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(candidate bin counts i, KL divergence of each); inf where the expansion loses mass.

    ``hist`` is used as given (see :func:`entropy_amax` for the zero-bin adjustment).
    """
    h = np.asarray(hist, np.float64)
    n = len(h)
    cands = np.arange(LEVELS, n + 1)
    total = h.sum()
    cum = np.concatenate([[0.0], np.cumsum(h)])  # cum[k] = sum(h[:k])
    cum_nz = np.concatenate([[0.0], np.cumsum(h > 0)])
    cum_hlogh = np.concatenate([[0.0], np.cumsum(_xlogx(h))])
    # group j of candidate i holds bins floor(b * 128 / i) == j, i.e. [ceil(j*i/128), ceil((j+1)*i/128))
    j = np.arange(LEVELS + 1)
    bounds = (j[None, :] * cands[:, None] + LEVELS - 1) // LEVELS  # (n_cands, 129); bounds[:, 128] == i
    sums = cum[bounds[:, 1:]] - cum[bounds[:, :-1]]
    counts = cum_nz[bounds[:, 1:]] - cum_nz[bounds[:, :-1]]
    level = np.where(counts > 0, sums / np.maximum(counts, 1), 1.0)  # q of a non-empty bin in each group
    clipped = total - cum[cands]  # mass beyond the threshold, added to the last kept bin
    last = h[cands - 1]
    p_last = last + clipped
    # sum over kept bins of p*log(p), with the last bin's p raised by the clipped mass
    plogp = cum_hlogh[cands] - _xlogx(last) + _xlogx(p_last)
    # sum over kept bins of p*log(q_unnormalised): group sums weigh their level, the clipped mass the last level
    plogq = np.sum(np.where(sums > 0, sums * np.log(level), 0.0), axis=1) + clipped * np.log(level[:, -1])
    kept = total - clipped
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = (plogp - plogq) / total - np.log(total) + np.log(kept)
    lost = (kept <= 0) | ((clipped > 0) & (last <= 0))  # reference mass where the expansion has none
    kl = np.where(lost, np.inf, kl)
    return cands, kl


def entropy_amax(hist: np.ndarray, edges: np.ndarray) -> float:
    """The amax TensorRT's EntropyCalibration2 would choose for this |x| histogram.

    ``edges`` are the histogram's bin edges (len(hist) + 1, from 0); the answer is one of them.
    """
    h = np.asarray(hist, np.float64).copy()
    edges = np.asarray(edges, np.float64)
    if len(edges) != len(h) + 1:
        raise ValueError(f"{len(h)} bins need {len(h) + 1} edges, got {len(edges)}")
    # The first bin holds every exact zero (half of a ReLU's output); left as is, that spike
    # dominates the divergence and drives thresholds far too low. NVIDIA's histogram
    # calibrator (pytorch-quantization) evens it with its neighbour; so do we.
    if len(h) > 1:
        h[0] = h[1]
    if len(h) <= LEVELS or h.sum() == 0:
        return float(edges[-1])
    cands, kl = divergences(h)
    # ties: the largest threshold (keep range rather than clip), as pytorch-quantization does
    k = len(kl) - 1 - int(np.argmin(kl[::-1]))
    return float(edges[cands[k]])
