"""Representativeness of items from their feature vectors.

An item in a dense region of feature space teaches about many others once labeled, an
outlier about few; ``density`` favours the former (information density, Settles & Craven
2008). It is the mean RBF similarity ``exp(-gamma ||x - r||^2)`` of each item to a seeded
random sample of reference rows: a kernel density estimate in [0, 1].

RBF rather than cosine: the mean cosine to a sample equals the dot product of the unit
row with the mean unit reference vector, so it only measures alignment with one
direction (and is about 0 for everything once features are centred). ``gamma`` comes from
the median heuristic on the sample alone, so scores depend on the reference and the seed,
never on which other items share the batch: items scored in different batches against the
same reference compare.
"""

from __future__ import annotations

import numpy as np
from sklearn.utils import check_random_state

from taskrank.learning._checks import check_matrix

# Rows per block of the (block, sample_size) distance matrix: 2 MB for the default
# sample, small enough to stay in cache and to avoid fresh-page faults on every block,
# large enough that per-call overhead is noise.
_BLOCK_ROWS = 1024
_MIN_MEDIAN = 1e-300


def density(
    features: object,
    reference: object | None = None,
    sample_size: int = 256,
    random_state: int | np.random.RandomState | None = 0,
) -> np.ndarray:
    """Mean RBF similarity of each item to a random sample of reference rows.

    Parameters
    ----------
    features : array-like of shape (n_items, n_features)
        Items to score.
    reference : array-like of shape (n_reference, n_features), optional
        Rows that stand for the pool; defaults to ``features``.
    sample_size : int
        Reference rows sampled without replacement (all of them when fewer).
    random_state : int, RandomState or None
        Seed of the sample.

    Returns
    -------
    scores : ndarray of shape (n_items,)
        In [0, 1]; higher means more representative.
    """
    features = check_matrix(features, "features")
    sample_size = _check_sample_size(sample_size)
    if features.shape[0] == 0:
        return np.zeros(0)
    reference = features if reference is None else check_matrix(reference, "reference")
    if reference.shape[1] != features.shape[1]:
        raise ValueError(
            f"reference has {reference.shape[1]} features per row, features has {features.shape[1]}"
        )
    if reference.shape[0] == 0:
        raise ValueError("reference must have at least one row, got 0")
    rng = check_random_state(random_state)
    picked = rng.choice(reference.shape[0], min(sample_size, reference.shape[0]), replace=False)
    sample = reference[np.sort(picked)]
    center, scale = _frame(features, sample)
    sample = (sample - center) / scale
    return _mean_rbf(features, sample, _median_gamma(sample), center, scale)


def _frame(features: np.ndarray, sample: np.ndarray) -> tuple[np.ndarray, float]:
    """Center and scale that map features and sample into [-1, 1].

    The kernel with the median heuristic does not change under a shift and a common
    scale, so this costs nothing in meaning; it keeps the ``|x|^2 + |s|^2 - 2 x.s``
    expansion precise (no large offsets cancelling) and free of overflow.
    """
    center = sample.mean(axis=0)
    spread = max(
        float(np.max(np.abs(bound - center)))
        for bound in (
            features.min(axis=0),
            features.max(axis=0),
            sample.min(axis=0),
            sample.max(axis=0),
        )
    )
    return center, spread if spread > 0 else 1.0


def _mean_rbf(
    features: np.ndarray, sample: np.ndarray, gamma: float, center: np.ndarray, scale: float
) -> np.ndarray:
    """Mean of ``exp(-gamma ||z - s||^2)`` over sample rows, ``z = (x - center) / scale``."""
    scores = np.empty(features.shape[0])
    sample_t = np.ascontiguousarray(sample.T)
    sample_sq = np.einsum("ij,ij->i", sample, sample)
    for start in range(0, features.shape[0], _BLOCK_ROWS):  # blocks of rows, not items
        block = (features[start : start + _BLOCK_ROWS] - center) / scale
        sq = _sq_dists(block, sample_t, sample_sq)
        sq *= -gamma
        np.exp(sq, out=sq)
        scores[start : start + _BLOCK_ROWS] = np.einsum("ij->i", sq)
    scores /= sample.shape[0]
    return np.clip(scores, 0.0, 1.0, out=scores)


def _check_sample_size(sample_size: object) -> int:
    if isinstance(sample_size, bool) or not isinstance(sample_size, int | np.integer):
        raise ValueError(f"sample_size must be a positive integer, got {sample_size!r}")
    if sample_size < 1:
        raise ValueError(f"sample_size must be a positive integer, got {sample_size}")
    return int(sample_size)


def _sq_dists(rows: np.ndarray, sample_t: np.ndarray, sample_sq: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances, shape (len(rows), n_sample), computed in place.

    ``sample_t`` is the transposed sample (n_features, n_sample), ``sample_sq`` its
    squared row norms (n_sample,).
    """
    sq = rows @ sample_t
    sq *= -2.0
    sq += np.einsum("ij,ij->i", rows, rows)[:, None]
    sq += sample_sq
    # The expansion can go slightly negative through cancellation.
    return np.maximum(sq, 0.0, out=sq)


def _median_gamma(sample: np.ndarray) -> float:
    """``1 / median`` of the non-zero squared distances within the sample.

    ``sample`` is already centred and scaled into [-1, 1]. Duplicates are left out so a
    sample of mostly repeated rows still gets a usable length scale; with no two
    distinct rows, fall back to ``1 / n_features``.
    """
    sample_sq = np.einsum("ij,ij->i", sample, sample)
    dists = _sq_dists(sample, np.ascontiguousarray(sample.T), sample_sq)
    dists = dists[np.triu_indices(sample.shape[0], k=1)]
    dists = dists[dists > 0]
    if not dists.size:
        return 1.0 / sample.shape[1]
    # Rows that differ only in the last bits can leave a subnormal median whose inverse
    # overflows; capping gamma keeps 0 * gamma = 0 (an infinite gamma would give NaN).
    return 1.0 / max(float(np.median(dists)), _MIN_MEDIAN)
