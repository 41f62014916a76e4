"""learning.coverage: the pool map and the cold-start order it gives."""

from __future__ import annotations

import numpy as np
import pytest

from taskrank.learning.coverage import assign, coverage, fit_pool_map


def _blobs(sizes, seed=0):
    """Well-separated blobs of the given sizes, and the blob of each row."""
    rng = np.random.default_rng(seed)
    centers = np.array([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0], [20.0, 20.0]])[: len(sizes)]
    X = np.vstack([c + rng.normal(size=(n, 2)) for c, n in zip(centers, sizes, strict=True)])
    return X, np.repeat(np.arange(len(sizes)), sizes)


def test_first_picks_cover_every_cluster_even_a_small_one():
    """The top K of the order hold one item of each cluster, however unequal the sizes."""
    X, blob = _blobs([300, 100, 30, 10])
    pool_map = fit_pool_map(X, n_clusters=4, random_state=0)
    priority, _ = coverage(pool_map, X)
    first = np.argsort(-priority, kind="stable")[:4]
    assert sorted(blob[first]) == [0, 1, 2, 3]
    # Batch density would have spent the first picks on the 300-item blob.


def test_each_clusters_first_pick_is_its_most_typical_item():
    """Within a cluster, the item nearest the centre (in pool-standardised units) comes
    first."""
    X, _ = _blobs([50, 50])
    pool_map = fit_pool_map(X, n_clusters=2, random_state=0)
    priority, clusters = coverage(pool_map, X)
    Z = (X - X.mean(axis=0)) / X.std(axis=0)
    for c in np.unique(clusters):
        rows = np.flatnonzero(clusters == c)
        centre = Z[rows].mean(axis=0)
        nearest = rows[np.argmin(np.linalg.norm(Z[rows] - centre, axis=1))]
        assert rows[np.argmax(priority[rows])] == nearest


def test_order_is_independent_of_the_batch_an_item_arrives_in():
    """Scoring items one at a time or all together gives the same priorities."""
    X, _ = _blobs([40, 40, 40])
    pool_map = fit_pool_map(X[::2], n_clusters=3, random_state=0)
    together, clusters = coverage(pool_map, X)
    alone = np.array([coverage(pool_map, X[i:i + 1])[0][0] for i in range(len(X))])
    np.testing.assert_allclose(together, alone)
    assert np.array_equal(clusters, assign(pool_map, X)[0])


def test_priorities_lie_in_zero_one_and_are_seeded():
    """Priorities in (0, 1]; the same seed gives the same map."""
    X, _ = _blobs([30, 30])
    first = coverage(fit_pool_map(X, 5, random_state=3), X)[0]
    again = coverage(fit_pool_map(X, 5, random_state=3), X)[0]
    assert np.all((first > 0) & (first <= 1))
    np.testing.assert_array_equal(first, again)


def test_fewer_distinct_rows_than_clusters_gives_fewer_clusters():
    """Three distinct rows cannot make 32 clusters: the map uses 3."""
    X = np.array([[0.0, 1.0], [0.0, 1.0], [5.0, 5.0], [9.0, 0.0]])
    assert fit_pool_map(X, n_clusters=32).n_clusters == 3


def test_constant_column_does_not_divide_by_zero():
    """A column with one value is left unscaled, not turned into NaN."""
    X = np.column_stack([np.arange(10.0), np.ones(10)])
    priority, _ = coverage(fit_pool_map(X, 2), X)
    assert np.all(np.isfinite(priority))


@pytest.mark.parametrize(("X", "k", "message"), [
    (np.zeros((0, 2)), 2, "at least one row"),
    (np.zeros((3, 2)), 0, "n_clusters must be an integer >= 1"),
    ([[0.0, np.nan]], 1, "NaN or inf"),
])
def test_bad_input_raises_a_clear_error(X, k, message):
    """Empty samples, bad cluster counts and NaN are refused with what was expected."""
    with pytest.raises(ValueError, match=message):
        fit_pool_map(X, k)


def test_rows_of_another_width_are_refused():
    """Rows must have the map's number of columns."""
    pool_map = fit_pool_map(np.eye(3), 2)
    with pytest.raises(ValueError, match="X has 2 columns, the pool map 3"):
        coverage(pool_map, np.zeros((1, 2)))
