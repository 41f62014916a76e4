"""Disagreement between committee members about each item, normalised to [0, 1].

A committee holds one probability row per member and item, shape
(n_members, n_items, n_classes). Both scores are 0 when the members agree (in particular
with a single member) and 1 at the most disagreement m members can express about k
classes, so they combine with the [0, 1] uncertainty scores under plain weights.

Both divide by ``log(min(m, k))`` because it is the tight upper bound of each: a vote
distribution over m voters and k classes has at most that entropy, and the mean KL to the
consensus (the Jensen-Shannon divergence with equal weights, i.e. the mutual information
between "which member" and "which class") is bounded by both ``H(member) = log m`` and
``H(consensus) <= log k``. One-hot members on distinct classes reach 1. Dividing by
``log k`` instead would cap a 2-member committee at ``log 2 / log k``, and a
``1 - exp(-x)`` squash never reaches 1 and compresses the top of the range.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from taskrank.learning._checks import check_committee
from taskrank.learning.uncertainty import row_entropy

DisagreementFunction = Callable[[np.ndarray], np.ndarray]


def vote_entropy(committee: object) -> np.ndarray:
    """Entropy of the members' argmax votes per item, over ``log(min(m, k))``.

    Parameters
    ----------
    committee : array-like of shape (n_members, n_items, n_classes)
        Probability rows of every member for every item.

    Returns
    -------
    scores : ndarray of shape (n_items,)
        In [0, 1]; 0 when every member votes the same class (always for one member).
    """
    return _vote_entropy_kernel(check_committee(committee))


def consensus_kl(committee: object) -> np.ndarray:
    """Mean ``KL(p_i || p_mean)`` over members per item, over ``log(min(m, k))``.

    Computed as ``H(p_mean) - mean_i H(p_i)``, which equals the mean KL divergence
    and needs no division by the consensus (no trouble where it is 0).

    Parameters
    ----------
    committee : array-like of shape (n_members, n_items, n_classes)
        Probability rows of every member for every item.

    Returns
    -------
    scores : ndarray of shape (n_items,)
        In [0, 1]; 0 when all members give identical rows (always for one member).
    """
    return _consensus_kl_kernel(check_committee(committee))


def consensus(committee: np.ndarray) -> np.ndarray:
    """Mean probability row over members.

    Parameters
    ----------
    committee : ndarray of shape (n_members, n_items, n_classes)
        Valid committee (not checked), ``n_members >= 1``.

    Returns
    -------
    consensus : ndarray of shape (n_items, n_classes)
    """
    # In-place adds member by member beat np.mean's strided reduction over axis 0.
    mean = committee[0].copy()
    for member in committee[1:]:  # loop over members
        mean += member
    mean /= committee.shape[0]
    return mean


def _normaliser(m: int, k: int) -> float | None:
    """Upper bound ``log(min(m, k))`` of both scores, or None when it is 0 (m == 1)."""
    bound = np.log(min(m, k))
    return float(bound) if bound > 0 else None


def _vote_entropy_kernel(committee: np.ndarray, mean: np.ndarray | None = None) -> np.ndarray:
    m, n, k = committee.shape
    bound = _normaliser(m, k)
    if bound is None or n == 0:
        return np.zeros(n)
    votes = committee.argmax(axis=2)
    counts = np.zeros((n, k))
    rows = np.arange(n)
    for member_votes in votes:  # loop over members, never over items
        counts[rows, member_votes] += 1.0
    # H(counts / m) = log m - (1/m) sum_c n_c log n_c, and sum_c n_c log n_c is the sum
    # over members of log(how many members share their vote): no zero counts to log.
    shared = counts[rows, votes]
    scores = (np.log(m) - np.log(shared).mean(axis=0)) / bound
    return np.clip(scores, 0.0, 1.0, out=scores)


def _consensus_kl_kernel(committee: np.ndarray, mean: np.ndarray | None = None) -> np.ndarray:
    m, n, k = committee.shape
    bound = _normaliser(m, k)
    if bound is None or n == 0:
        return np.zeros(n)
    if mean is None:
        mean = consensus(committee)
    member_entropy = np.add.reduce(row_entropy(committee), axis=0) / m
    scores = (row_entropy(mean) - member_entropy) / bound
    # Rounding can leave identical members a hair below 0.
    return np.clip(scores, 0.0, 1.0, out=scores)


DISAGREEMENT: dict[str, DisagreementFunction] = {
    "consensus_kl": consensus_kl,
    "vote_entropy": vote_entropy,
}

# Same names, no validation; they take the consensus as an optional second argument so
# a caller that already computed it does not pay for it twice.
DISAGREEMENT_KERNELS: dict[str, Callable[..., np.ndarray]] = {
    "consensus_kl": _consensus_kl_kernel,
    "vote_entropy": _vote_entropy_kernel,
}


def get_disagreement(name: str) -> DisagreementFunction:
    """Return the disagreement function registered under ``name``.

    Raises
    ------
    ValueError
        When ``name`` is not a key of :data:`DISAGREEMENT`.
    """
    try:
        return DISAGREEMENT[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown disagreement {name!r}; expected one of {sorted(DISAGREEMENT)}"
        ) from None
