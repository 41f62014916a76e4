"""The judge and the baselines of ``taskrank simulate --http --cold`` (issue 12, DESIGN §8).

The judge is a plain ``LogisticRegression(max_iter=1000)`` (no scaler) fitted on exactly
the items an arm got labelled, scored on a held-out split: it judges the selection, not the
server's model. The baselines are orders in which an arm labels pool rows:
:func:`random_order` and :func:`margin_order` (modAL-style margin sampling from random
initial labels). Pure: arrays in, arrays out.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.utils import check_random_state
from threadpoolctl import threadpool_limits

from taskrank.learning.uncertainty import margin

__all__ = ["checkpoints", "judge_accuracy", "judge_curve", "margin_order", "random_order"]

JUDGE_MAX_ITER = 1000


def _check_count(name: str, number: object, low: int = 1) -> None:
    if isinstance(number, bool) or not isinstance(number, int | np.integer) or number < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {number!r}")


def checkpoints(batch: int, budget: int) -> np.ndarray:
    """Labelled-set sizes at which the judge scores an arm: batch, 2 batch, ..., budget.

    Returns
    -------
    counts : ndarray of shape (ceil(budget / batch),), int, ending at ``budget``
    """
    _check_count("batch", batch)
    _check_count("budget", budget)
    return np.append(np.arange(batch, budget, batch), budget)


def _judge() -> LogisticRegression:
    return LogisticRegression(max_iter=JUDGE_MAX_ITER)


def judge_accuracy(X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray,
                   y_test: np.ndarray) -> float:
    """Held-out accuracy of a plain logistic regression fitted on the labelled items.

    With one class among the labels nothing can be fitted; the accuracy is then that of
    predicting that class for every test item.

    Parameters
    ----------
    X_train : ndarray of shape (n_labelled, n_features)
    y_train : ndarray of shape (n_labelled,), n_labelled >= 1
    X_test : ndarray of shape (n_test, n_features)
    y_test : ndarray of shape (n_test,)
    """
    y_train = np.asarray(y_train)
    if y_train.size == 0:
        raise ValueError("y_train must hold at least one label")
    if np.unique(y_train).size < 2:
        return float(np.mean(np.asarray(y_test) == y_train[0]))
    with threadpool_limits(limits=1, user_api="blas"):  # tiny fits: threads only hand off
        return float(_judge().fit(X_train, y_train).score(X_test, y_test))


def judge_curve(X_pool: np.ndarray, y_pool: np.ndarray, X_test: np.ndarray,
                y_test: np.ndarray, order: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The judge's accuracy when the first ``n`` rows of ``order`` are labelled, per ``n``.

    Parameters
    ----------
    X_pool : ndarray of shape (n_pool, n_features)
    y_pool : ndarray of shape (n_pool,)
        The labels the arm got for each pool row.
    X_test, y_test : ndarrays of shape (n_test, n_features) and (n_test,)
    order : ndarray of shape (n_order,), int
        Pool rows in the order they were labelled.
    counts : ndarray of shape (n_checkpoints,), int, each in [1, n_order]

    Returns
    -------
    curve : ndarray of shape (n_checkpoints,), float
    """
    order, counts = np.asarray(order, dtype=np.intp), np.asarray(counts)
    if counts.size and not 1 <= counts.min() <= counts.max() <= order.size:
        raise ValueError(f"counts must lie in [1, {order.size}] (the labelled rows), "
                         f"got {counts.min()}..{counts.max()}")
    return np.array([judge_accuracy(X_pool[order[:n]], y_pool[order[:n]], X_test, y_test)
                     for n in counts])  # loop over checkpoints


def random_order(n_pool: int, budget: int,
                 random_state: int | np.random.RandomState | None = None) -> np.ndarray:
    """The random arm: ``budget`` distinct pool rows in a seeded random order.

    Returns
    -------
    order : ndarray of shape (budget,), int
    """
    _check_count("budget", budget)
    if budget > n_pool:
        raise ValueError(f"budget ({budget}) exceeds the pool ({n_pool} items)")
    return check_random_state(random_state).permutation(n_pool)[:budget]


def margin_order(X_pool: np.ndarray, y_pool: np.ndarray, initial: int, batch: int,
                 budget: int,
                 random_state: int | np.random.RandomState | None = None) -> np.ndarray:
    """The margin arm: modAL-style margin sampling with the judge's model.

    ``initial`` random rows (``check_random_state(random_state).choice``), then batches of
    ``batch`` rows with the smallest p1 - p2 under a logistic regression fitted on the
    labels so far (ties to the lower row). While the labels hold one class no model can
    rank, so that batch is drawn at random too.

    Parameters
    ----------
    X_pool : ndarray of shape (n_pool, n_features)
    y_pool : ndarray of shape (n_pool,)
    initial, batch, budget : int

    Returns
    -------
    order : ndarray of shape (budget,), int, distinct pool rows in labelling order
    """
    for name, number in (("initial", initial), ("batch", batch), ("budget", budget)):
        _check_count(name, number)
    n_pool = len(y_pool)
    if not initial <= budget <= n_pool:
        raise ValueError(f"need initial ({initial}) <= budget ({budget}) <= the pool "
                         f"({n_pool} items)")
    rng = check_random_state(random_state)
    order = list(rng.choice(n_pool, initial, replace=False))
    labelled = np.zeros(n_pool, dtype=bool)
    labelled[order] = True
    with threadpool_limits(limits=1, user_api="blas"):
        while len(order) < budget:  # loop over batches
            rest, take = np.flatnonzero(~labelled), min(batch, budget - len(order))
            if np.unique(y_pool[labelled]).size < 2:
                picked = rng.choice(rest, take, replace=False)
            else:
                model = _judge().fit(X_pool[labelled], y_pool[labelled])
                uncertainty = margin(model.predict_proba(X_pool[rest]))
                picked = rest[np.argsort(-uncertainty, kind="stable")[:take]]
            order.extend(picked)
            labelled[picked] = True
    return np.array(order, dtype=np.intp)
