"""Classification metrics of one test fold (scikit-learn does the counting).

- accuracy, the WA (weighted accuracy) of SER papers = (1/N) sum_i [y_i = yhat_i]
- UAR, the UA (unweighted accuracy) of SER papers = mean over classes c present in y of the recall
  R_c = |y = c, yhat = c| / |y = c|
- macro-F1 = mean over classes c of 2 P_c R_c / (P_c + R_c), over the classes present in y or yhat
- micro-F1 = F1 of the pooled counts; for single-label classification it equals the accuracy
- confusion[i, j] = number of rows with true class i predicted as j (rows: true, columns: predicted)

`from_confusion` computes all four from a confusion matrix (so from a stored cell record), and
`METRIC_ALIASES` maps the names tables take (``--metrics wa,ua,f1``) to the records' keys.
"""

from __future__ import annotations

from typing import Sequence

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


def micro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """F1 of the counts pooled over classes (equal to the accuracy for single-label classes)."""
    return float(f1_score(*_check(y_true, y_pred), average="micro", zero_division=0.0))


#: Metric names a table may show -> the key of the cell records' per-run lists.
METRIC_ALIASES: dict[str, str] = {
    "wa": "accuracy", "acc": "accuracy", "accuracy": "accuracy",
    "ua": "uar", "uar": "uar",
    "f1": "macro_f1", "macro_f1": "macro_f1",
    "micro_f1": "micro_f1",
}  # fmt: skip


def metric_keys(metrics: Sequence[str]) -> list[str]:
    """The record keys of metric names (``wa`` -> ``accuracy``); ValueError naming an unknown one."""
    unknown = [m for m in metrics if m not in METRIC_ALIASES]
    if unknown or not metrics:
        raise ValueError(f"metrics: unknown {unknown or 'empty list'}; known: {', '.join(METRIC_ALIASES)}")
    return [METRIC_ALIASES[m] for m in metrics]


def from_confusion(confusion_matrix_: np.ndarray) -> dict[str, float]:
    """accuracy (WA), uar (UA), macro_f1, micro_f1 of a confusion matrix [C, C] (rows true)."""
    m = np.asarray(confusion_matrix_, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.sum() <= 0 or (m < 0).any():
        raise ValueError(f"expected a non-empty square confusion matrix of counts, got shape {m.shape}")
    hits, true, predicted = np.diag(m), m.sum(axis=1), m.sum(axis=0)
    recall = hits[true > 0] / true[true > 0]
    present = (true + predicted) > 0
    f1 = 2 * hits[present] / (true[present] + predicted[present])  # 2PR / (P + R) = 2 TP / (|y=c| + |yhat=c|)
    accuracy_ = float(hits.sum() / m.sum())
    return {"accuracy": accuracy_, "uar": float(recall.mean()), "macro_f1": float(f1.mean()), "micro_f1": accuracy_}


def confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """int64 [num_classes, num_classes]; entry [i, j] counts true class i predicted as class j."""
    y_true, y_pred = _check(y_true, y_pred)
    bad = [int(v) for v in np.concatenate([y_true, y_pred]) if not 0 <= v < num_classes]
    if bad:
        raise ValueError(f"class ids must lie in [0, {num_classes}), got {sorted(set(bad))}")
    return confusion_matrix(y_true, y_pred, labels=np.arange(num_classes)).astype(np.int64)


def summarize(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict:
    """The metrics of one fold: accuracy, macro_f1, uar, micro_f1 (floats) and confusion (list of lists)."""
    return {
        "accuracy": accuracy(y_true, y_pred),
        "macro_f1": macro_f1(y_true, y_pred),
        "uar": uar(y_true, y_pred),
        "micro_f1": micro_f1(y_true, y_pred),
        "confusion": confusion(y_true, y_pred, num_classes).tolist(),
    }
