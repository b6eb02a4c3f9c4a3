"""The EntropyCalibration2 threshold on distributions whose answer is known in shape."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.quant.entropy import divergences, entropy_amax


def _hist(x, bins=2048):
    x = np.abs(x)
    return np.histogram(x, bins=bins, range=(0, x.max()))


def test_gaussian_with_outliers_clips_the_outliers():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, 500_000), rng.normal(0, 1, 50) * 25])
    amax = entropy_amax(*_hist(x))
    assert 2.5 < amax < 8.0  # a few sigma, far below the outliers' max
    assert amax < 0.3 * np.abs(x).max()


def test_uniform_keeps_the_range():
    x = np.random.default_rng(1).uniform(-3, 3, 500_000)
    assert entropy_amax(*_hist(x)) == pytest.approx(3.0, rel=0.05)


def test_relu_zero_spike_does_not_collapse_the_threshold():
    rng = np.random.default_rng(2)
    x = np.maximum(rng.normal(0, 1, 500_000), 0)  # half exact zeros
    amax = entropy_amax(*_hist(x))
    assert amax > 2.5


def _direct_divergences(h):
    """pytorch-quantization's loop, candidate by candidate, as the reference."""
    h = np.asarray(h, np.float64)
    out = []
    for i in range(128, len(h) + 1):
        p = h[:i].copy()
        p[-1] += h[i:].sum()
        group = (np.arange(i) * 128) // i
        nz = h[:i] > 0
        sums = np.bincount(group, weights=h[:i], minlength=128)
        counts = np.bincount(group, weights=nz, minlength=128)
        q = np.where(nz, (sums / np.maximum(counts, 1))[group], 0.0)
        if q.sum() == 0:
            out.append(np.inf)
            continue
        p, q = p / p.sum(), q / q.sum()
        m = p > 0
        out.append(np.inf if np.any(q[m] == 0) else float(np.sum(p[m] * np.log(p[m] / q[m]))))
    return np.array(out)


@pytest.mark.parametrize("case", ["laplace", "gaps", "sparse", "clipped-empty-bin"])
def test_every_candidate_matches_the_candidate_by_candidate_loop(case):
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.laplace(0, 1, 200_000), rng.normal(0, 15, 30)])
    h, _ = _hist(x)
    h = h.astype(np.float64)
    if case == "gaps":
        h[1500:1600] = 0
    elif case == "sparse":
        h[::7] = 0
    elif case == "clipped-empty-bin":
        h[300] = 0  # candidate 301 clips mass into an empty last bin: infinite divergence
    cands, kl = divergences(h)
    ref = _direct_divergences(h)
    assert list(cands) == list(range(128, 2049))  # every bin count, none skipped
    assert np.array_equal(np.isfinite(kl), np.isfinite(ref))
    fin = np.isfinite(ref)
    np.testing.assert_allclose(kl[fin], ref[fin], rtol=1e-9, atol=1e-12)
    assert int(np.argmin(kl)) == int(np.argmin(ref))


def test_threshold_is_a_bin_edge_and_empty_histograms_keep_range():
    x = np.abs(np.random.default_rng(4).normal(0, 1, 100_000))
    h, e = _hist(x)
    assert entropy_amax(h, e) in set(e.tolist())
    assert entropy_amax(np.zeros(2048), np.linspace(0, 1, 2049)) == 1.0
    with pytest.raises(ValueError, match="edges"):
        entropy_amax(h, e[:-1])
