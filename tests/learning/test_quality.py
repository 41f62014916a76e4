"""Accuracy estimates from exploration batches: pooling over a window, curve points."""

from __future__ import annotations

import numpy as np
import pytest

from taskrank.learning.quality import binned_accuracy, pooled_accuracy


def test_pooled_accuracy_takes_the_newest_batches_until_the_window_is_full():
    """Batches 4 + 2 labels reach a window of 5 (the crossing batch counts whole); the
    older batch of 100 is left out."""
    estimate = pooled_accuracy(np.array([3, 1, 50]), np.array([4, 2, 100]), window=5)
    assert estimate == {"accuracy": 0.6667, "std_error": round(np.sqrt(0.6 * 0.4 / 10), 4),
                        "n": 6, "batches": 2}


def test_pooled_accuracy_uses_everything_when_the_window_is_not_full():
    """With fewer labels than the window, every batch is pooled."""
    estimate = pooled_accuracy(np.array([8, 1]), np.array([10, 2]), window=100)
    assert (estimate["accuracy"], estimate["n"], estimate["batches"]) == (0.75, 12, 2)
    assert estimate["std_error"] == round(np.sqrt(11 / 16 * 5 / 16 / 16), 4)


def test_pooled_accuracy_without_labels_is_null():
    """No batch: accuracy and standard error are None, n is 0."""
    assert pooled_accuracy(np.array([], dtype=int), np.array([], dtype=int)) == {
        "accuracy": None, "std_error": None, "n": 0, "batches": 0}


@pytest.mark.parametrize("correct, n, window", [([3], [2], 10), ([-1], [2], 10),
                                                ([1, 2], [2], 10), ([1], [2], 0)])
def test_pooled_accuracy_refuses_inconsistent_batches(correct, n, window):
    """correct > n, negative counts, mismatched lengths or an empty window are errors."""
    with pytest.raises(ValueError):
        pooled_accuracy(np.array(correct), np.array(n), window=window)


def test_binned_accuracy_pools_batches_into_points_of_min_n_labels():
    """Batches 10 + 15 make one point; 30 another; a short tail (2) joins the last point."""
    points = binned_accuracy(np.array([10, 20, 30, 40]), np.array([5, 10, 3, 1]),
                             np.array([10, 15, 30, 2]), min_n=20)
    assert points["n"].tolist() == [25, 32]
    assert points["accuracy"] == pytest.approx([15 / 25, 4 / 32])
    assert points["n_labels"] == pytest.approx([(100 + 300) / 25, (900 + 80) / 32])
    adjusted = (points["accuracy"] * points["n"] + 2) / (points["n"] + 4)
    assert points["std_error"] == pytest.approx(
        np.sqrt(adjusted * (1 - adjusted) / (points["n"] + 4)))


def test_binned_accuracy_keeps_a_lone_short_point_and_handles_no_batches():
    """A single short point is still drawn; no batches give empty arrays."""
    points = binned_accuracy(np.array([10.0]), np.array([1]), np.array([2]), min_n=20)
    assert points["n"].tolist() == [2] and points["accuracy"].tolist() == [0.5]
    empty = binned_accuracy(np.array([]), np.array([], dtype=int), np.array([], dtype=int))
    assert all(len(values) == 0 for values in empty.values())


def test_standard_error_is_not_zero_for_a_few_labels_all_right():
    """3 of 3 right is not certainty: Agresti-Coull keeps a sizeable error (sqrt(p(1-p)/n)
    would say 0)."""
    assert pooled_accuracy(np.array([3]), np.array([3]))["std_error"] > 0.15
