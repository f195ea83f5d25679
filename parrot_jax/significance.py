"""Paired significance tests of two methods scored on the same (seed, fold) runs.

Cross-validation scores are not independent samples: the training sets of k folds overlap, so the
plain paired t-test underestimates the variance of the mean difference and finds too many
differences (Dietterich 1998; Nadeau and Bengio 2003). Our primary test corrects for that:

- **corrected resampled t-test** (Nadeau and Bengio 2003, "Inference for the generalization error";
  for repeated k-fold CV as in Bouckaert and Frank 2004). With d_j the differences of the n matched runs,
      t = mean(d) / sqrt((1/n + n_test/n_train) * s^2),   s^2 = sum_j (d_j - mean(d))^2 / (n - 1),
  two-sided p from Student's t with n - 1 degrees of freedom; n_test/n_train is the ratio of test to
  training rows (1/(k-1) for k equal folds). Needs n >= 2 (a variance estimate).
- **Wilcoxon signed-rank**, beside it: no normality assumed, but no correction for overlapping training
  sets either. Zero differences are dropped (Wilcoxon's own rule, not Pratt's); the n non-zero |d_j| are
  ranked with midranks for ties (which are the rule here: accuracies are multiples of 1/n_test), and
  W+ = sum of the ranks of the positive d_j. The p-value is exact *conditional on the ties*: under the
  null every one of the 2^n sign patterns of the given midranks is equally likely, and the distribution
  of W+ over them is counted exactly (`signed_rank_distribution`, a convolution over the ranks), two-sided
  p = P(|W+ - T/2| >= |w+ - T/2|), T the sum of the ranks. (scipy's "exact" table assumes ranks 1..n
  without ties.) Its smallest two-sided p is 2^(1-n), so it can reach alpha = 0.05 only with n >= 6
  non-zero differences; with fewer, it says "n/a" (5 folds x 1 seed is below its minimum).

Below a test's minimum the result has no p-value (`p_value is None`) and a note says why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np
from scipy import stats

ALPHA = 0.05
#: Fewest runs (non-zero differences for Wilcoxon) at which each test gives a p-value.
MIN_RUNS: dict[str, int] = {"corrected_t": 2, "wilcoxon": 6}


@dataclass(frozen=True)
class PairedTest:
    """One test's outcome; ``p_value`` is None ("n/a") below the test's minimum, with ``note`` saying why."""

    test: str
    n: int
    mean_difference: float
    statistic: float | None
    p_value: float | None
    note: str = ""

    @property
    def significant(self) -> bool:
        return self.p_value is not None and self.p_value < ALPHA

    def p_text(self) -> str:
        return "n/a" if self.p_value is None else f"{self.p_value:.4g}"


def _differences(differences) -> np.ndarray:
    d = np.asarray(differences, dtype=np.float64)
    if d.ndim != 1 or not np.isfinite(d).all():
        raise ValueError(f"differences: expected a 1-D array of finite values, got {d.tolist()}")
    return d


def corrected_resampled_t(differences, test_train_ratio: float) -> PairedTest:
    """Nadeau and Bengio's corrected resampled t-test of the mean of ``differences`` (see module doc)."""
    d = _differences(differences)
    if not test_train_ratio > 0:
        raise ValueError(f"test_train_ratio: expected a positive ratio of test to training rows, got {test_train_ratio!r}")
    n = len(d)
    mean = float(d.mean()) if n else float("nan")
    if n < MIN_RUNS["corrected_t"]:
        return PairedTest("corrected_t", n, mean, None, None, f"needs at least {MIN_RUNS['corrected_t']} runs, got {n}")
    variance = float(d.var(ddof=1))
    if variance == 0.0:
        if mean == 0.0:
            return PairedTest("corrected_t", n, mean, 0.0, 1.0, "all differences are zero")
        return PairedTest("corrected_t", n, mean, None, None, "all differences are equal: no variance to test against")
    t = mean / math.sqrt((1.0 / n + test_train_ratio) * variance)
    return PairedTest("corrected_t", n, mean, t, float(2.0 * stats.t.sf(abs(t), df=n - 1)))


def wilcoxon_signed_rank(differences) -> PairedTest:
    """Wilcoxon's signed-rank test: zero differences dropped, midranks for ties, two-sided p exact
    conditional on the ties (module doc); the statistic is min(W+, W-)."""
    d = _differences(differences)
    nonzero = d[d != 0.0]
    mean = float(d.mean()) if len(d) else float("nan")
    if len(nonzero) < MIN_RUNS["wilcoxon"]:
        return PairedTest("wilcoxon", len(d), mean, None, None,
                          f"needs at least {MIN_RUNS['wilcoxon']} non-zero differences to reach p < {ALPHA}, "
                          f"got {len(nonzero)}")
    ranks = stats.rankdata(np.abs(nonzero).round(12))  # midranks (multiples of 1/2); rounding: equal |d| tie
    doubled = np.rint(2 * ranks).astype(np.int64)
    w, total = int(doubled[nonzero > 0].sum()), int(doubled.sum())
    probability = signed_rank_distribution(doubled)
    k = np.arange(total + 1)
    p = float(probability[np.abs(2 * k - total) >= abs(2 * w - total)].sum())
    return PairedTest("wilcoxon", len(d), mean, min(w, total - w) / 2, min(1.0, p))


def signed_rank_distribution(doubled_ranks: np.ndarray) -> np.ndarray:
    """P(2 W+ = k), k = 0 .. sum(doubled_ranks), when each rank's sign is + or - with probability 1/2
    independently: the convolution over ranks r of (delta_0 + delta_2r) / 2, exact in float64 (every
    probability is a multiple of 2^-n) for the n <= 50 runs of a grid."""
    probability = np.zeros(int(np.sum(doubled_ranks)) + 1)
    probability[0] = 1.0
    for r in doubled_ranks:
        shifted = np.zeros_like(probability)
        shifted[r:] = probability[:len(probability) - r]
        probability = (probability + shifted) / 2
    return probability


def paired_tests(a: Mapping[tuple[int, int], float], b: Mapping[tuple[int, int], float],
                 test_train_ratio: float) -> list[PairedTest]:
    """Both tests of a - b over the (seed, fold) runs the two share; refuses runs that do not match."""
    if set(a) != set(b):
        raise ValueError(f"paired test: the runs differ; only in the first: {sorted(set(a) - set(b))}, "
                         f"only in the second: {sorted(set(b) - set(a))}")
    keys = sorted(a)
    d = np.array([a[k] - b[k] for k in keys], dtype=np.float64)
    return [corrected_resampled_t(d, test_train_ratio), wilcoxon_signed_rank(d)]
