"""The EntropyCalibration2 threshold on distributions whose answer is known in shape."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.entropy import entropy_amax


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


def test_coarse_then_fine_matches_exhaustive_search():
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.laplace(0, 1, 200_000), rng.normal(0, 15, 30)])
    h, e = _hist(x)
    assert entropy_amax(h, e) == pytest.approx(entropy_amax(h, e, stride=1), rel=0.02)


def test_wide_histograms_are_merged_and_empty_ones_keep_range():
    h = np.ones(9000)
    e = np.linspace(0, 9.0, 9001)
    assert entropy_amax(h, e) == pytest.approx(9.0, rel=0.05)
    assert entropy_amax(np.zeros(2048), np.linspace(0, 1, 2049)) == 1.0
