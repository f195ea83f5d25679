"""Metrics equal hand-computed values on small cases."""

from __future__ import annotations

import numpy as np
import pytest

from parrot_jax.metrics import accuracy, confusion, macro_f1, summarize, uar

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
    assert set(s) == {"accuracy", "macro_f1", "uar", "confusion"} and s["confusion"][0] == [2, 1, 1]
    with pytest.raises(ValueError, match=r"class ids must lie in \[0, 2\), got \[2\]"):
        confusion(Y, P, 2)
    with pytest.raises(ValueError, match="expected two non-empty 1-D label arrays"):
        accuracy(Y, P[:3])
