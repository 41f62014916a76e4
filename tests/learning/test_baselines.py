"""Tests for taskrank.learning.baselines: checkpoints, the judge, random and margin orders."""

from __future__ import annotations

import numpy as np
import pytest

from taskrank.learning.baselines import (
    checkpoints,
    judge_accuracy,
    judge_curve,
    margin_order,
    random_order,
)
from taskrank.learning.datasets import load_dataset


@pytest.fixture(scope="module")
def line():
    """Two classes on a line, split at 0: items near 0 are the uncertain ones."""
    X = np.array([[-3.0], [-2.0], [-1.0], [-0.1], [0.1], [1.0], [2.0], [3.0]])
    return X, (X[:, 0] > 0).astype(int)


def test_checkpoints_step_by_batch_and_end_at_the_budget():
    """batch, 2 batch, ... and the budget itself, even when batch does not divide it."""
    assert checkpoints(10, 30).tolist() == [10, 20, 30]
    assert checkpoints(10, 25).tolist() == [10, 20, 25]
    with pytest.raises(ValueError, match="batch must be an integer >= 1"):
        checkpoints(0, 30)


def test_judge_with_one_class_predicts_that_class(line):
    """One labelled class: accuracy of predicting it everywhere, no fit, no crash."""
    X, y = line
    assert judge_accuracy(X[:2], y[:2], X, y) == pytest.approx(0.5)
    assert judge_accuracy(X[[0, 7]], y[[0, 7]], X, y) == 1.0


def test_judge_curve_uses_the_first_n_rows_of_the_order(line):
    """Checkpoint n judges exactly order[:n]."""
    X, y = line
    curve = judge_curve(X, y, X, y, np.array([0, 1, 7, 2]), np.array([2, 3]))
    assert curve.tolist() == [judge_accuracy(X[[0, 1]], y[[0, 1]], X, y),
                              judge_accuracy(X[[0, 1, 7]], y[[0, 1, 7]], X, y)]
    with pytest.raises(ValueError, match="counts must lie in"):
        judge_curve(X, y, X, y, np.array([0, 7]), np.array([3]))


def test_random_order_is_seeded_and_distinct():
    """Same seed, same order; distinct rows; another seed, another order."""
    first = random_order(100, 30, random_state=7)
    assert first.tolist() == random_order(100, 30, random_state=7).tolist()
    assert np.unique(first).size == 30 and first.max() < 100
    assert first.tolist() != random_order(100, 30, random_state=8).tolist()
    with pytest.raises(ValueError, match="exceeds the pool"):
        random_order(10, 11)


def test_margin_picks_the_smallest_margin_items(line):
    """After the two end points, the two items nearest the boundary come next."""
    X, y = line
    # Seed chosen so the initial pair holds both classes, and not the middle items.
    seed = next(s for s in range(100) if set(np.random.RandomState(s).choice(8, 2, False))
                in ({0, 7}, {1, 6}, {0, 6}, {1, 7}))
    order = margin_order(X, y, initial=2, batch=2, budget=4, random_state=seed)
    assert set(order[2:].tolist()) == {3, 4}


def test_margin_order_is_seeded_distinct_and_starts_random():
    """Initial rows are check_random_state(seed).choice; the whole order is reproducible."""
    X, y = load_dataset("iris")
    order = margin_order(X, y, initial=10, batch=5, budget=30, random_state=3)
    assert order.tolist() == margin_order(X, y, 10, 5, 30, random_state=3).tolist()
    assert np.unique(order).size == 30
    assert order[:10].tolist() == np.random.RandomState(3).choice(150, 10, False).tolist()


def test_margin_with_one_initial_class_draws_at_random(line):
    """No model can rank one class: the next batch is random, not a crash."""
    X, y = line
    seed = next(s for s in range(100) if np.unique(y[np.random.RandomState(s).choice(
        8, 2, False)]).size == 1)
    order = margin_order(X, y, initial=2, batch=2, budget=6, random_state=seed)
    assert np.unique(order).size == 6
