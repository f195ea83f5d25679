"""Paired tests reproduce hand-computed examples and say "n/a" below their minimum number of runs."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from parrot_jax.significance import corrected_resampled_t, paired_tests, wilcoxon_signed_rank


def _t4_cdf(x: float) -> float:
    """Student's t CDF with 4 degrees of freedom in closed form: with u = x / sqrt(1 + x^2/4),
    F(x) = 1/2 + (3/8) u (1 - x^2 / (12 (1 + x^2/4)))."""
    return 0.5 + 0.375 * x / math.sqrt(1 + x * x / 4) * (1 - x * x / (12 * (1 + x * x / 4)))


def test_corrected_t_by_hand():
    # 5 folds of 5-fold CV: n = 5, n_test / n_train = 1/4.
    # mean d = 0.13 / 5 = 0.026; deviations -0.006, 0.024, -0.036, 0.014, 0.004; sum of squares 0.00212;
    # s^2 = 0.00212 / 4 = 0.00053; corrected variance (1/5 + 1/4) s^2 = 0.45 * 0.00053 = 0.0002385;
    # t = 0.026 / sqrt(0.0002385) = 1.683562...; p = 2 (1 - F_4(t)).
    result = corrected_resampled_t([0.02, 0.05, -0.01, 0.04, 0.03], test_train_ratio=0.25)
    t = 0.026 / math.sqrt(0.45 * 0.00053)
    assert result.statistic == pytest.approx(t, rel=1e-12) and t == pytest.approx(1.683562, abs=1e-6)
    assert result.p_value == pytest.approx(2 * (1 - _t4_cdf(t)), rel=1e-9)
    assert result.p_value == pytest.approx(0.167553, abs=1e-6) and not result.significant
    # the uncorrected paired t (1/n only) would give a larger t: the correction is what makes it honest
    assert t < 0.026 / math.sqrt(0.00053 / 5)


def test_wilcoxon_by_hand():
    # |d| ranks 1..6, the largest negative: W- = 6. Subsets of {1..6} with sum <= 6: 14 of 64, so the exact
    # two-sided p = 2 * 14 / 64 = 0.4375. All positive: W- = 0, p = 2 / 64.
    result = wilcoxon_signed_rank([0.01, 0.02, 0.03, 0.04, 0.05, -0.06])
    assert result.statistic == 6.0 and result.p_value == pytest.approx(28 / 64, rel=1e-12)
    positive = wilcoxon_signed_rank([0.01, 0.02, 0.03, 0.04, 0.05, 0.06])
    assert positive.p_value == pytest.approx(2 / 64, rel=1e-12) and positive.significant


def _enumerated_p(d: np.ndarray) -> float:
    """Two-sided p of W+ by listing all 2^n sign patterns of the midranks of the non-zero |d|."""
    d = d[d != 0]
    ranks = stats.rankdata(np.abs(d))
    observed, centre = ranks[d > 0].sum(), ranks.sum() / 2
    hits = sum(abs(np.dot(signs, ranks) - centre) >= abs(observed - centre) - 1e-9
               for signs in itertools.product((0, 1), repeat=len(d)))
    return hits / 2 ** len(d)


def test_wilcoxon_with_tied_differences_is_exact_conditional_on_the_midranks():
    # RAVDESS PARROT vs Concatenation: test rows gained of 240; |11| ties. Midranks 2->1, 6->2, 11->3.5,
    # 3.5, 14->5, 24->6; W+ = 1 + 3.5 = 4.5; 16 of the 64 sign patterns are as far from T/2 = 10.5: p = 0.25
    # (scipy's tie-free table says 0.3125).
    ravdess = np.array([-6, -24, -11, -14, 2, 11]) / 240
    result = wilcoxon_signed_rank(ravdess)
    assert result.p_value == pytest.approx(0.25, abs=1e-15) == _enumerated_p(ravdess * 240)
    assert result.statistic == 4.5
    assert stats.wilcoxon(ravdess, method="exact").pvalue == pytest.approx(0.3125)  # what we no longer print
    rng = np.random.default_rng(0)
    for _ in range(20):  # heavy ties and zeros (dropped), as accuracies on a few test rows give
        d = rng.integers(-4, 5, size=int(rng.integers(6, 13))).astype(float)
        if np.count_nonzero(d) >= 6:
            assert wilcoxon_signed_rank(d / 107).p_value == pytest.approx(_enumerated_p(d), abs=1e-12)


def test_below_minimum_is_na_never_a_p_value():
    five = wilcoxon_signed_rank([0.01, 0.02, 0.03, 0.04, 0.05])
    assert five.p_value is None and five.p_text() == "n/a"
    assert five.note == "needs at least 6 non-zero differences to reach p < 0.05, got 5"
    one = corrected_resampled_t([0.1], 0.25)
    assert one.p_value is None and one.note == "needs at least 2 runs, got 1"
    flat = corrected_resampled_t([0.02, 0.02, 0.02], 0.25)
    assert flat.p_value is None and "no variance" in flat.note
    assert corrected_resampled_t([0.0, 0.0], 0.25).p_value == 1.0


def test_paired_tests_match_runs_by_seed_and_fold():
    a = {(0, f): 0.5 + 0.01 * f for f in range(5)}
    b = {(0, f): 0.5 for f in range(5)}
    t, w = paired_tests(a, b, 0.25)
    assert t.test == "corrected_t" and t.n == 5 and t.p_value is not None and w.p_value is None
    with pytest.raises(ValueError, match=r"only in the first: \[\(0, 4\)\], only in the second: \[\]"):
        paired_tests(a, {k: v for k, v in b.items() if k != (0, 4)}, 0.25)
    with pytest.raises(ValueError, match="test_train_ratio: expected a positive ratio"):
        corrected_resampled_t([0.1, 0.2], 0.0)
