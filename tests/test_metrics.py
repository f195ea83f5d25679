"""Metrics equal hand-computed values on small cases."""

from __future__ import annotations

import numpy as np
import pytest

from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

from parrot_jax.metrics import accuracy, confusion, from_confusion, macro_f1, micro_f1, summarize, uar

Y = np.array([0, 0, 0, 0, 1, 1, 2, 2])
P = np.array([0, 0, 1, 2, 1, 1, 2, 0])


def test_hand_computed_values():
    assert accuracy(Y, P) == pytest.approx(5 / 8)
    # recalls: class 0 2/4, class 1 2/2, class 2 1/2 -> UAR 2/3
    assert uar(Y, P) == pytest.approx((0.5 + 1.0 + 0.5) / 3)
    # precisions: class 0 2/3, class 1 2/3, class 2 1/2
    f1 = [2 * p * r / (p + r) for p, r in [(2 / 3, 0.5), (2 / 3, 1.0), (0.5, 0.5)]]
    assert macro_f1(Y, P) == pytest.approx(np.mean(f1))
    expected = np.array([[2, 1, 1], [0, 2, 0], [1, 0, 1]])
    assert np.array_equal(confusion(Y, P, 3), expected)
    # a class absent from both truth and prediction is a zero row and column
    assert np.array_equal(confusion(Y, P, 4)[:3, :3], expected) and confusion(Y, P, 4)[3].sum() == 0


def test_summary_and_errors():
    s = summarize(Y, P, 3)
    assert set(s) == {"accuracy", "macro_f1", "uar", "micro_f1", "confusion"} and s["confusion"][0] == [2, 1, 1]
    with pytest.raises(ValueError, match=r"class ids must lie in \[0, 2\), got \[2\]"):
        confusion(Y, P, 2)
    with pytest.raises(ValueError, match="expected two non-empty 1-D label arrays"):
        accuracy(Y, P[:3])


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@pytest.mark.parametrize("seed", range(5))
def test_from_confusion_equals_scikit_learn(seed):
    """UA = scikit-learn's balanced accuracy, WA = accuracy, F1 = macro-F1, micro-F1 = accuracy; also with a
    class that is never predicted and one that never occurs."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 5, 60)
    p = np.where(rng.random(60) < 0.5, y, rng.integers(0, 6, 60))
    p[p == 3] = 4  # class 3 never predicted
    y[y == 2] = 1  # class 2 never true
    scores = from_confusion(confusion(y, p, 6))
    assert scores["uar"] == pytest.approx(balanced_accuracy_score(y, p), abs=1e-12)
    assert scores["accuracy"] == pytest.approx(accuracy_score(y, p), abs=1e-12)
    assert scores["macro_f1"] == pytest.approx(f1_score(y, p, average="macro", zero_division=0.0), abs=1e-12)
    assert scores["micro_f1"] == pytest.approx(f1_score(y, p, average="micro"), abs=1e-12) == micro_f1(y, p)
    with pytest.raises(ValueError, match=r"expected a non-empty square confusion matrix of counts, got shape \(2, 3\)"):
        from_confusion(np.ones((2, 3)))
