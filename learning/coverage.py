"""Coverage of the pending pool: the order to label in before a model can score.

Before a project has a model, nothing says which items are informative, so the first
labels should cover the pool: a few typical items of every region rather than many items
of the densest one (TypiClust, Hacohen et al. 2022: in the low-budget regime, label the
most typical item of each k-means cluster first).  A :class:`PoolMap` holds k-means
centres fitted on a reference sample of the whole pool (never on one ingest batch), and
:func:`coverage` turns it into a priority that interleaves the clusters:

    position(x) = rank of x within its cluster (by distance to the centre) + order(c) / K

where ``order(c)`` ranks the clusters by size, so the most typical item of every cluster
comes before the second most typical of any.  The rank is estimated from the reference
rows of the cluster, so an item ingested after the map was fitted gets its place without
reading the pool.  The cluster id also serves the claim: items whose cluster was just
leased lose value until the next re-rank (diversity between re-ranks).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans
from sklearn.utils import check_random_state

from taskrank.learning._checks import check_matrix

# Rows of the fixed reference sample kept in the map for the density term.
DENSITY_REFERENCE_ROWS = 256


@dataclass(frozen=True, eq=False)
class PoolMap:
    """What :func:`fit_pool_map` learned about the pool.

    Attributes
    ----------
    center, scale : ndarray of shape (n_features,)
        Standardisation fitted on the reference sample (the pool, not the labeled items).
    centers : ndarray of shape (n_clusters, n_features)
        k-means centres, in standardised units.
    order : ndarray of int, shape (n_clusters,)
        Rank of each cluster by size in the sample, 0 for the largest.
    distances : list of ndarray
        Per cluster, the sorted distances of its reference rows to its centre.
    reference : ndarray of shape (n_reference, n_features)
        A fixed sample of raw rows, for density measured against the project.
    """

    center: np.ndarray
    scale: np.ndarray
    centers: np.ndarray
    order: np.ndarray
    distances: list[np.ndarray]
    reference: np.ndarray

    @property
    def n_clusters(self) -> int:
        return int(self.centers.shape[0])


def fit_pool_map(
    X: object, n_clusters: int = 32, random_state: int | np.random.RandomState | None = 0
) -> PoolMap:
    """Cluster a reference sample of the pool.

    Parameters
    ----------
    X : array-like of shape (n_reference, n_features)
        Rows standing for the whole pending pool (features, or supplied probabilities).
    n_clusters : int
        Clusters wanted; fewer when the sample has fewer distinct rows.
    random_state : int, RandomState or None
        Seeds k-means and the density reference sample.

    Returns
    -------
    pool_map : PoolMap
    """
    X = check_matrix(X, "X")
    if X.shape[0] == 0:
        raise ValueError("X must have at least one row, got 0")
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, int | np.integer) or (
            n_clusters < 1):
        raise ValueError(f"n_clusters must be an integer >= 1, got {n_clusters!r}")
    rng = check_random_state(random_state)
    center = X.mean(axis=0)
    scale = X.std(axis=0)
    scale[scale <= 1e-12] = 1.0
    Z = (X - center) / scale
    k = int(min(n_clusters, np.unique(Z, axis=0).shape[0]))
    km = KMeans(n_clusters=k, n_init=1, random_state=rng.randint(np.iinfo(np.int32).max))
    labels = km.fit_predict(Z)
    dist = np.linalg.norm(Z - km.cluster_centers_[labels], axis=1)
    sizes = np.bincount(labels, minlength=k)
    order = np.empty(k, dtype=int)
    order[np.argsort(-sizes, kind="stable")] = np.arange(k)
    picked = rng.choice(X.shape[0], min(DENSITY_REFERENCE_ROWS, X.shape[0]), replace=False)
    return PoolMap(center, scale, km.cluster_centers_, order,
                   [np.sort(dist[labels == c]) for c in range(k)], X[np.sort(picked)])


def assign(pool_map: PoolMap, X: object) -> tuple[np.ndarray, np.ndarray]:
    """Nearest cluster and distance to its centre, per row.

    Parameters
    ----------
    pool_map : PoolMap
    X : array-like of shape (n_items, n_features)

    Returns
    -------
    clusters : ndarray of int, shape (n_items,)
    distances : ndarray of shape (n_items,)
    """
    X = check_matrix(X, "X")
    if X.shape[1] != pool_map.center.shape[0]:
        raise ValueError(f"X has {X.shape[1]} columns, the pool map {pool_map.center.shape[0]}")
    Z = (X - pool_map.center) / pool_map.scale
    centers = pool_map.centers
    sq = (np.einsum("ij,ij->i", Z, Z)[:, None] - 2.0 * Z @ centers.T
          + np.einsum("ij,ij->i", centers, centers))
    clusters = sq.argmin(axis=1)
    return clusters, np.sqrt(np.maximum(sq[np.arange(len(Z)), clusters], 0.0))


def coverage(pool_map: PoolMap, X: object) -> tuple[np.ndarray, np.ndarray]:
    """Cold-start priority of each row, and its cluster.

    The priority is ``1 / (1 + position)`` with ``position`` = the row's estimated rank
    among its cluster's reference rows (interpolated, so ties are rare) + the cluster's
    size rank / K: the most typical row of every cluster comes before the second of any.

    Parameters
    ----------
    pool_map : PoolMap
    X : array-like of shape (n_items, n_features)

    Returns
    -------
    priority : ndarray of shape (n_items,)
        In (0, 1]; higher is labeled first.
    clusters : ndarray of int, shape (n_items,)
    """
    clusters, dist = assign(pool_map, X)
    rank = np.zeros(len(dist))
    for c in np.unique(clusters):  # loop over clusters, not items
        rows = clusters == c
        ref = pool_map.distances[c]
        if ref.size:
            rank[rows] = np.interp(dist[rows], ref, np.arange(ref.size),
                                   left=0.0, right=float(ref.size))
    position = rank + pool_map.order[clusters] / pool_map.n_clusters
    return 1.0 / (1.0 + position), clusters
