"""Held-out quality of a ranking model, estimated by stratified cross-validation."""

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
