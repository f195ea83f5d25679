"""Classification metrics of one test fold (scikit-learn does the counting).

- accuracy = (1/N) sum_i [y_i = yhat_i]
- macro-F1 = mean over classes c of 2 P_c R_c / (P_c + R_c), over the classes present in y or yhat
- UAR (unweighted average recall) = mean over classes c present in y of R_c = |y = c, yhat = c| / |y = c|
- confusion[i, j] = number of rows with true class i predicted as j (rows: true, columns: predicted)
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score


def _check(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.ndim != 1 or y_true.shape != y_pred.shape or len(y_true) == 0:
        raise ValueError(f"expected two non-empty 1-D label arrays of one length, got {y_true.shape} and {y_pred.shape}")
    return y_true, y_pred


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Share of rows predicted right."""
    return float(accuracy_score(*_check(y_true, y_pred)))


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Unweighted mean of per-class F1 over the classes that occur in ``y_true`` or ``y_pred``."""
    return float(f1_score(*_check(y_true, y_pred), average="macro", zero_division=0.0))


def uar(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Unweighted average recall: mean per-class recall over the classes present in ``y_true``."""
    return float(balanced_accuracy_score(*_check(y_true, y_pred)))


def confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """int64 [num_classes, num_classes]; entry [i, j] counts true class i predicted as class j."""
    y_true, y_pred = _check(y_true, y_pred)
    bad = [int(v) for v in np.concatenate([y_true, y_pred]) if not 0 <= v < num_classes]
    if bad:
        raise ValueError(f"class ids must lie in [0, {num_classes}), got {sorted(set(bad))}")
    return confusion_matrix(y_true, y_pred, labels=np.arange(num_classes)).astype(np.int64)


def summarize(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict:
    """All four metrics of one fold: accuracy, macro_f1, uar (floats) and confusion (list of lists)."""
    return {
        "accuracy": accuracy(y_true, y_pred),
        "macro_f1": macro_f1(y_true, y_pred),
        "uar": uar(y_true, y_pred),
        "confusion": confusion(y_true, y_pred, num_classes).tolist(),
    }
