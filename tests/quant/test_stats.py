"""The gate's statistics against scipy (an independent implementation) and on the cases the
issue names: one flipped image of 60 must not fail a 0.99 gate; 14 of 497 must."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.quant import gate, stats

scipy_stats = pytest.importorskip("scipy.stats")


@pytest.mark.parametrize("k,n,p", [(0, 10, 0.5), (59, 60, 0.99), (483, 497, 0.99), (4990, 5000, 0.999),
                                   (3, 3, 0.2), (250, 300, 0.9)])
def test_binomial_cdf_matches_scipy(k, n, p):
    assert stats.binom_cdf(k, n, p) == pytest.approx(scipy_stats.binom.cdf(k, n, p), rel=1e-9, abs=1e-300)


@pytest.mark.parametrize("k,n", [(0, 20), (1, 60), (59, 60), (497, 497), (483, 497), (150, 300)])
def test_clopper_pearson_bounds_match_the_beta_quantiles(k, n):
    lo = scipy_stats.beta.ppf(0.025, k, n - k + 1) if k > 0 else 0.0
    hi = scipy_stats.beta.ppf(0.975, k + 1, n - k) if k < n else 1.0
    t = stats.proportion_test(k, n, 0.5)
    assert t.low == pytest.approx(lo, abs=1e-9) and t.high == pytest.approx(hi, abs=1e-9)


def test_one_flip_in_sixty_is_undecided_and_says_how_many_images_would_tell():
    t = stats.proportion_test(59, 60, 0.99)
    assert t.status == "undecided" and not t.failed
    assert t.needed is not None and 300 < t.needed < 3000
    # at the rate seen, that many images (normal approximation) would about show it below 0.99
    m = int(t.needed * 1.3)
    assert stats.proportion_test(round(59 / 60 * m), m, 0.99).failed
    # and what 60 images can show at all: the gate fails at 57 or fewer agreeing
    assert stats.fails_below(60, 0.99) == 57


def test_a_real_loss_fails_and_a_clean_large_set_passes():
    assert stats.proportion_test(483, 497, 0.99).failed  # the AVX2 figure: 0.972
    assert stats.proportion_test(497, 497, 0.99).status == "pass"
    assert stats.proportion_test(60, 60, 0.99).status == "undecided"  # 60 of 60 cannot show >= 0.99
    assert stats.proportion_test(60, 60, 0.99).needed == 299  # 0.99**299 < 0.05 <= 0.99**298


def test_paired_drop_counts_only_discordant_images():
    ref = [True] * 90 + [False] * 10
    same = list(ref)
    assert stats.paired_drop(ref, same, 0.01).status == "undecided"  # 100 images cannot show <= 1 point
    assert stats.paired_drop(ref * 5, same * 5, 0.01).status == "pass"  # 500 can
    lost6 = [True] * 84 + [False] * 16  # 6 images lost, none gained
    d = stats.paired_drop(ref, lost6, 0.01)
    assert d.lost == 6 and d.gained == 0 and d.drop == pytest.approx(0.06) and d.failed
    swapped = [False] * 3 + [True] * 87 + [True] * 3 + [False] * 7  # 3 lost, 3 gained: no drop
    d = stats.paired_drop(ref, swapped, 0.01)
    assert d.drop == 0 and not d.failed


def test_judge_gives_one_verdict_and_a_line_that_says_why():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(60, 10))
    got = ref.copy()
    got[0] = ref[0][::-1]  # one image changes its top-1
    labels = ref.argmax(1)
    j = gate.judge("int8", ref, got, 0.99, labels, 0.01)
    assert not j.failed and j.undecided
    assert "59/60" in j.summary() and "not shown either way" in j.summary()
    assert "validation images would tell" in j.advice()
    d = j.to_dict()
    assert d["status"] == "undecided" and d["agreement_test"]["agreeing"] == 59
    assert d["accuracy"]["lost"] == 1 and d["accuracy"]["status"] == "undecided"
    bad = ref.copy()
    bad[:20] = ref[:20][:, ::-1]
    assert gate.judge("int8", ref, bad, 0.99).failed


def test_overflowed_logits_count_as_disagreeing_and_stay_json_safe():
    import json

    rng = np.random.default_rng(1)
    ref = rng.normal(size=(10, 5))
    got = ref.copy()
    got[0, 1] = np.inf  # an FP16 overflow
    got[1, :] = np.nan
    j = gate.judge("fp16", ref, got, 0.99, ref.argmax(1))
    assert j.agreement.k == 8 and j.figures.nonfinite == 2 and "inf/NaN" in j.summary()
    assert j.accuracy is not None and j.accuracy.lost == 2
    text = json.dumps(j.to_dict(), allow_nan=False)  # no Infinity/NaN in a manifest
    assert '"max_abs_error": null' in text
