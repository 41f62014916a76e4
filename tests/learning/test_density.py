"""Tests for taskrank.learning.density: representativeness from features."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from taskrank.learning.density import density


def test_hand_computed_three_points():
    """Corner points (0,0), (1,0), (0,1): median squared distance 1 gives gamma 1."""
    features = [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]
    e1, e2 = np.exp(-1.0), np.exp(-2.0)
    expected = [(1 + 2 * e1) / 3, (e1 + 1 + e2) / 3, (e1 + e2 + 1) / 3]
    np.testing.assert_allclose(density(features), expected)


def test_cluster_members_outrank_an_outlier():
    """Rows in a tight cluster are more representative than a far-away row."""
    rng = np.random.default_rng(0)
    features = np.vstack([rng.normal(0, 0.1, size=(50, 3)), [[10.0, 10.0, 10.0]]])
    scores = density(features)
    assert scores[:50].min() > scores[50]


def test_identical_rows_score_one():
    """When every row is the same point, each is fully representative."""
    np.testing.assert_allclose(density(np.ones((5, 3))), 1.0)


@settings(deadline=None, max_examples=40)
@given(
    features=arrays(
        np.float64, st.tuples(st.integers(1, 30), st.integers(1, 4)), elements=st.floats(-100, 100)
    ),
    sample_size=st.integers(1, 40),
)
def test_scores_lie_in_unit_interval(features, sample_size):
    """One score per row, all within [0, 1], for any finite features."""
    scores = density(features, sample_size=sample_size)
    assert scores.shape == (features.shape[0],)
    assert np.all((scores >= 0) & (scores <= 1))


def test_permuting_items_against_a_fixed_reference():
    """With a given reference, reordering items reorders their scores."""
    rng = np.random.default_rng(1)
    features, reference = rng.normal(size=(40, 3)), rng.normal(size=(100, 3))
    order = rng.permutation(40)
    base = density(features, reference, sample_size=20, random_state=3)
    np.testing.assert_allclose(density(features[order], reference, 20, 3), base[order])


def test_seed_makes_sample_reproducible():
    """The same random_state gives the same scores; the sample is the only randomness."""
    features = np.random.default_rng(2).normal(size=(300, 4))
    first = density(features, sample_size=16, random_state=7)
    np.testing.assert_array_equal(first, density(features, sample_size=16, random_state=7))
    assert not np.array_equal(first, density(features, sample_size=16, random_state=8))


def test_never_builds_an_n_by_n_matrix():
    """Peak memory stays far below one n x n float matrix over the pool."""
    n = 6000
    features = np.random.default_rng(3).normal(size=(n, 5))
    tracemalloc.start()
    density(features, sample_size=64)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < n * n * 8 / 50


def test_empty_features_give_empty_scores():
    """Zero items give a zero-length score vector."""
    assert density(np.zeros((0, 3))).shape == (0,)


@pytest.mark.parametrize(
    ("features", "reference", "message"),
    [
        ([[0.0, 1.0], [np.nan, 1.0]], None, "features row 1 contains NaN or inf"),
        ([[0.0, 1.0]], [[1.0, np.inf]], "reference row 0 contains NaN or inf"),
        ([0.0, 1.0], None, r"features must have shape \(n_rows, n_features >= 1\)"),
        ([[0.0, 1.0]], [[1.0, 2.0, 3.0]], "reference has 3 features per row, features has 2"),
        ([[0.0, 1.0]], np.zeros((0, 2)), "reference must have at least one row"),
        ([["a", "b"]], None, "features must be an array of numbers"),
    ],
)
def test_invalid_input_names_the_argument(features, reference, message):
    """Bad features or reference raise ValueError naming the argument (and row)."""
    with pytest.raises(ValueError, match=message):
        density(features, reference)


@pytest.mark.parametrize("sample_size", [0, -3, 2.5, True])
def test_sample_size_must_be_positive_integer(sample_size):
    """sample_size must be a positive integer."""
    with pytest.raises(ValueError, match="sample_size must be a positive integer"):
        density([[0.0, 1.0]], sample_size=sample_size)


@pytest.mark.parametrize(("scale", "offset"), [(1e-150, 0.0), (1.0, 1e8), (1e6, -3.0), (1e-9, 5.0)])
def test_invariant_to_shift_and_scale(scale, offset):
    """Shifting or rescaling all features leaves densities unchanged (and finite)."""
    features = np.random.default_rng(4).normal(size=(60, 3))
    expected = density(features, sample_size=30)
    np.testing.assert_allclose(
        density(features * scale + offset, sample_size=30), expected, atol=1e-6
    )


def test_rows_differing_only_in_the_last_bits_do_not_give_nan():
    """Near-identical rows (subnormal squared distances) still score within [0, 1]."""
    features = np.array([[0.0, 0.0], [0.0, 4.6e-160], [4.6e-160, 0.0]])
    scores = density(features)
    assert np.all((scores >= 0) & (scores <= 1))
