"""Uncertainty of one probability row per item, each normalised to [0, 1].

Every score is 1 for a uniform row (the model knows nothing) and 0 for a one-hot row
(the model is sure), whatever the number of classes, so scores from projects with
different label sets can share weights. The public functions validate their input with
:func:`~taskrank.learning._checks.check_proba`; the ``_kernel`` versions assume a valid
float64 matrix and exist so :func:`~taskrank.learning.priority.score` validates once.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from taskrank.learning._checks import check_proba

ScoreFunction = Callable[[np.ndarray], np.ndarray]

_LOG_FLOOR = -800.0


def least_confidence(proba: object) -> np.ndarray:
    """Least confidence ``(1 - max p) / (1 - 1/k)`` per item.

    Parameters
    ----------
    proba : array-like of shape (n_items, n_classes)
        Probability rows.

    Returns
    -------
    scores : ndarray of shape (n_items,)
        In [0, 1]; 1 for a uniform row, 0 for a one-hot row.
    """
    return _least_confidence_kernel(check_proba(proba))


def margin(proba: object) -> np.ndarray:
    """Margin uncertainty ``1 - (p_top1 - p_top2)`` per item.

    Parameters
    ----------
    proba : array-like of shape (n_items, n_classes)
        Probability rows.

    Returns
    -------
    scores : ndarray of shape (n_items,)
        In [0, 1]; 1 when the two best classes tie, 0 for a one-hot row.
    """
    return _margin_kernel(check_proba(proba))


def entropy(proba: object) -> np.ndarray:
    """Shannon entropy ``H(p) / log k`` per item.

    Parameters
    ----------
    proba : array-like of shape (n_items, n_classes)
        Probability rows.

    Returns
    -------
    scores : ndarray of shape (n_items,)
        In [0, 1]; 1 for a uniform row, 0 for a one-hot row.
    """
    return _entropy_kernel(check_proba(proba))


def row_entropy(proba: np.ndarray) -> np.ndarray:
    """Unnormalised entropy in nats along the last axis, with ``0 log 0 = 0``.

    Parameters
    ----------
    proba : ndarray of shape (..., n_classes)
        Valid probability rows (not checked).

    Returns
    -------
    entropy : ndarray of shape (...)
        ``-sum(p log p)`` over the last axis.
    """
    with np.errstate(divide="ignore"):
        logs = np.log(proba)
    # log 0 = -inf would make 0 * log 0 NaN. Every positive float64 has log >= -744.4,
    # so flooring at -800 changes only the zeros, whose products then vanish: one
    # in-place pass instead of a masked np.log(..., where=proba > 0), several times slower.
    np.maximum(logs, _LOG_FLOOR, out=logs)
    return -np.einsum("...k,...k->...", proba, logs)


def _least_confidence_kernel(proba: np.ndarray) -> np.ndarray:
    k = proba.shape[1]
    scores = (1.0 - proba.max(axis=1)) * (k / (k - 1.0))
    return np.clip(scores, 0.0, 1.0, out=scores)


def _margin_kernel(proba: np.ndarray) -> np.ndarray:
    k = proba.shape[1]
    # After partitioning at k-2 the last two columns hold the runner-up and the top.
    top2 = np.partition(proba, k - 2, axis=1)[:, k - 2 :]
    scores = 1.0 - (top2[:, 1] - top2[:, 0])
    return np.clip(scores, 0.0, 1.0, out=scores)


def _entropy_kernel(proba: np.ndarray) -> np.ndarray:
    scores = row_entropy(proba) / np.log(proba.shape[1])
    return np.clip(scores, 0.0, 1.0, out=scores)


UNCERTAINTY: dict[str, ScoreFunction] = {
    "entropy": entropy,
    "least_confidence": least_confidence,
    "margin": margin,
}

# Same names, no validation: for callers that have already run check_proba.
UNCERTAINTY_KERNELS: dict[str, ScoreFunction] = {
    "entropy": _entropy_kernel,
    "least_confidence": _least_confidence_kernel,
    "margin": _margin_kernel,
}


def get_uncertainty(name: str) -> ScoreFunction:
    """Return the uncertainty function registered under ``name``.

    Raises
    ------
    ValueError
        When ``name`` is not a key of :data:`UNCERTAINTY`.
    """
    try:
        return UNCERTAINTY[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown uncertainty {name!r}; expected one of {sorted(UNCERTAINTY)}"
        ) from None
