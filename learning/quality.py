"""Quality of a ranking model: stratified cross-validation on the labels it was trained on
(biased: the model picked those items), and accuracy pooled over exploration labels it
never trained on (unbiased: those items were drawn at random from the pool)."""

from __future__ import annotations

import numpy as np
from sklearn.base import clone
from sklearn.metrics import accuracy_score, log_loss
from sklearn.model_selection import StratifiedKFold


def cross_validated_metrics(estimator: object, X: np.ndarray, y: np.ndarray,
                            sample_weight: np.ndarray | None = None, max_folds: int = 5,
                            random_state: int = 0) -> dict:
    """Accuracy and log loss of ``estimator`` over stratified folds.

    Parameters
    ----------
    estimator : scikit-learn classifier (cloned, not modified)
    X : ndarray of shape (n, d)
    y : ndarray of int, shape (n,)
    sample_weight : ndarray of shape (n,), optional

    Returns
    -------
    dict with ``accuracy``, ``log_loss`` (None when a fold lacks classes), ``folds`` and
    ``n``; folds is 0 (no estimate) when the smallest class has fewer than 2 labels.
    """
    y = np.asarray(y)
    counts = np.bincount(y)
    folds = int(min(max_folds, counts[counts > 0].min()))
    if folds < 2:
        return {"accuracy": None, "log_loss": None, "folds": 0, "n": int(len(y))}
    split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=random_state)
    predicted = np.zeros(len(y), dtype=int)
    proba = np.zeros((len(y), int(y.max()) + 1))
    for train, test in split.split(X, y):
        weight = None if sample_weight is None else sample_weight[train]
        model = clone(estimator).fit(X[train], y[train], sample_weight=weight)
        fold_proba = model.predict_proba(X[test])[:, : proba.shape[1]]
        proba[test] = fold_proba
        predicted[test] = fold_proba.argmax(axis=1)
    proba = np.clip(proba, 1e-12, 1.0)
    proba /= proba.sum(axis=1, keepdims=True)
    return {"accuracy": round(float(accuracy_score(y, predicted)), 4),
            "log_loss": round(float(log_loss(y, proba, labels=np.arange(proba.shape[1]))), 4),
            "folds": folds, "n": int(len(y))}


def pooled_accuracy(correct: np.ndarray, n: np.ndarray, window: int = 100) -> dict:
    """Accuracy pooled over the newest evaluation batches until they hold ``window`` labels.

    Each batch is one model version scored on exploration labels it never trained on.  A
    batch that crosses the window is counted whole, so the estimate uses at least
    ``window`` labels when that many exist.

    Parameters
    ----------
    correct : ndarray of int, shape (m,)
        Labels each batch predicted right, newest batch first.
    n : ndarray of int, shape (m,)
        Labels in each batch, newest batch first.
    window : int
        Labels to pool, at least 1.

    Returns
    -------
    dict with ``accuracy`` and its ``std_error`` (:func:`standard_error`; both None when there is
    no label), ``n`` (labels pooled) and ``batches`` (batches pooled).
    """
    correct, n = _batches(correct, n)
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    batches = int(np.searchsorted(np.cumsum(n), window) + 1) if len(n) else 0
    batches = min(batches, len(n))
    total, right = int(n[:batches].sum()), int(correct[:batches].sum())
    if total == 0:
        return {"accuracy": None, "std_error": None, "n": 0, "batches": 0}
    return {"accuracy": round(right / total, 4),
            "std_error": round(float(standard_error(np.array(right), np.array(total))), 4),
            "n": total, "batches": batches}


def standard_error(correct: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Agresti-Coull standard error of accuracies ``correct / n`` (arrays of one shape).

    ``sqrt(p (1 - p) / n)`` is 0 for 3 right of 3, claiming a certainty that 3 labels do
    not give; adding two right and two wrong pseudo-labels keeps it honest at small n.
    """
    adjusted = (correct + 2.0) / (n + 4.0)
    return np.sqrt(adjusted * (1.0 - adjusted) / (n + 4.0))


def binned_accuracy(n_labels: np.ndarray, correct: np.ndarray, n: np.ndarray,
                    min_n: int = 20) -> dict:
    """Points of a learning curve from evaluation batches, each pooling ``min_n`` labels.

    Consecutive batches (oldest first) are pooled until a point holds ``min_n`` labels, so
    no point rests on one or two labels; a last point short of ``min_n`` joins the one
    before it.

    Parameters
    ----------
    n_labels : ndarray of shape (m,)
        Labels the evaluated model version was trained on, per batch, oldest first.
    correct, n : ndarray of int, shape (m,)
        Labels predicted right and labels per batch, oldest first.
    min_n : int

    Returns
    -------
    dict of ndarrays of shape (points,): ``n_labels`` (mean over the point's labels),
    ``accuracy``, ``std_error`` and ``n``.
    """
    correct, n = _batches(correct, n)
    n_labels = np.asarray(n_labels, dtype=float)
    if n_labels.shape != n.shape:
        raise ValueError(f"n_labels must have shape {n.shape}, got {n_labels.shape}")
    starts = _point_starts(n, min_n)
    if not starts:
        empty = np.zeros(0)
        return {"n_labels": empty, "accuracy": empty, "std_error": empty,
                "n": empty.astype(int)}
    sizes = np.add.reduceat(n, starts)
    p = np.add.reduceat(correct, starts) / sizes
    return {"n_labels": np.add.reduceat(n * n_labels, starts) / sizes, "accuracy": p,
            "std_error": standard_error(p * sizes, sizes), "n": sizes}


def _point_starts(n: np.ndarray, min_n: int) -> list[int]:
    """First batch of each point; a short last point joins the one before it."""
    starts, held = [], min_n  # a point is due before the first batch
    for index, size in enumerate(n):
        if held >= min_n and size > 0:
            starts.append(index)
            held = 0
        held += size
    if len(starts) > 1 and held < min_n:
        starts.pop()
    return starts


def _batches(correct: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    correct, n = np.asarray(correct, dtype=int), np.asarray(n, dtype=int)
    if correct.ndim != 1 or correct.shape != n.shape:
        raise ValueError(f"correct and n must be 1-d of one length, got shapes "
                         f"{correct.shape} and {n.shape}")
    if np.any(n < 0) or np.any(correct < 0) or np.any(correct > n):
        raise ValueError("every batch needs 0 <= correct <= n")
    return correct, n
