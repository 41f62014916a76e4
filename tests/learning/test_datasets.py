"""Tests for taskrank.learning.datasets: the bundled and the two generated pools."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import KMeans

from taskrank.learning.datasets import (
    DATASETS,
    load_dataset,
    make_classes10,
    make_embeddings384,
)
from taskrank.learning.simulate import DATASETS as SIMULATE_DATASETS
from taskrank.learning.simulate import load_dataset as simulate_load_dataset


@pytest.fixture(scope="module")
def embeddings():
    return make_embeddings384()


def test_simulate_still_exports_the_datasets():
    """taskrank.learning.simulate re-exports DATASETS and load_dataset."""
    assert SIMULATE_DATASETS is DATASETS and simulate_load_dataset is load_dataset
    assert {"classes10", "embeddings384", "digits", "iris"} <= set(DATASETS)


def test_classes10_shape_classes_and_imbalance():
    """3,000 rows of 30 features, ten classes of unequal size."""
    X, y = load_dataset("classes10")
    assert X.shape == (3000, 30) and X.dtype == float
    counts = np.bincount(y)
    assert counts.size == 10 and counts.max() > 1.5 * counts.min()


def test_classes10_has_several_clusters_per_class():
    """Three k-means clusters explain a class far better than they explain one blob."""
    X, y = make_classes10()
    rows = X[y == 0]
    blob = np.random.RandomState(0).normal(size=rows.shape) * rows.std(axis=0)
    def explained(data):
        inertia = [KMeans(c, n_init=3, random_state=0).fit(data).inertia_ for c in (1, 3)]
        return 1 - inertia[1] / inertia[0]
    assert explained(rows) > 0.3 > explained(blob)


def test_embeddings384_unit_rows_classes_and_subtopics(embeddings):
    """384-d unit rows; 8 classes of unequal size, each of 2-4 sub-topics."""
    X, y, topic = embeddings
    assert X.shape == (3000, 384)
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0)
    counts = np.bincount(y)
    assert counts.size == 8 and np.unique(counts).size == 8
    for k in range(8):
        assert 2 <= np.unique(topic[y == k]).size <= 4
    assert all(np.unique(y[topic == t]).size == 1 for t in np.unique(topic))


def test_embeddings384_centroids_are_not_orthogonal(embeddings):
    """Cosines between class centroids sit in roughly 0.3-0.6, like real embeddings."""
    X, y, _ = embeddings
    centres = np.array([X[y == k].mean(axis=0) for k in range(8)])
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    cosines = (centres @ centres.T)[~np.eye(8, dtype=bool)]
    assert cosines.min() > 0.25 and cosines.max() < 0.7


def test_embeddings384_subtopics_are_closer_than_classes(embeddings):
    """Rows of one sub-topic are more alike than rows of one class."""
    X, y, topic = embeddings
    def mean_cosine(rows):
        return float((rows @ rows.T).mean())
    assert mean_cosine(X[topic == topic[0]]) > mean_cosine(X[y == y[0]])


def test_generated_pools_are_deterministic():
    """Two loads give identical arrays (fixed seeds, nothing random left)."""
    for name in ("classes10", "embeddings384"):
        (X1, y1), (X2, y2) = load_dataset(name), load_dataset(name)
        np.testing.assert_array_equal(X1, X2)
        np.testing.assert_array_equal(y1, y2)
