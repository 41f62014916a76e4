"""Tests for taskrank.learning.aggregation: the accuracy-weighted vote and agreement credit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskrank.learning.aggregation import (
    ACCURACY_BOUNDS,
    agreement_credit,
    clip_accuracy,
    vote_posterior,
    weighted_vote,
)


def test_weighted_vote_hand_computed():
    """One 0.9 expert outvotes two 0.6 experts: posterior proportional to (18, 9, 1)."""
    items = np.array([0, 0, 0, 1])
    experts = np.array([0, 1, 2, 1])
    labels = np.array([0, 1, 1, 2])
    label, confidence = weighted_vote(items, experts, labels, np.array([0.9, 0.6, 0.6]), 3, 3)
    np.testing.assert_array_equal(label, [0, 2, -1])
    # item 0: log-odds log(2) + logit(acc) = log 18 for class 0, 2 log 3 = log 9 for class 1
    # item 1: one 0.6 vote gives weight log 3 to class 2 against 0 for the others
    np.testing.assert_allclose(confidence, [18 / 28, 3 / 5, 0.0])


def test_weighted_vote_per_tag_accuracy():
    """With item_tag, each label is weighted by the expert's accuracy on that tag."""
    items, experts, labels = np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1]), np.array([0, 1, 0, 1])
    accuracy = np.array([[0.9, 0.6], [0.6, 0.9]])
    tag = np.array([0, 0, 1, 1])
    label, _ = weighted_vote(items, experts, labels, accuracy, 2, 2, item_tag=tag)
    np.testing.assert_array_equal(label, [0, 1])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"accuracy": np.array([1.0, 0.5])}, "strictly"),
        ({"labels": np.array([0, 3])}, "labels"),
        ({"expert_index": np.array([0])}, "expert_index"),
        ({"item_index": np.array([0.0, 1.0])}, "integer"),
        ({"n_classes": 1}, "n_classes"),
    ],
)
def test_weighted_vote_rejects_bad_input(kwargs, match):
    """Out-of-range labels, wrong lengths or dtypes and accuracies of 0 or 1 fail."""
    args = {
        "item_index": np.array([0, 1]),
        "expert_index": np.array([0, 1]),
        "labels": np.array([0, 1]),
        "accuracy": np.array([0.8, 0.7]),
        "n_items": 2,
        "n_classes": 3,
    }
    with pytest.raises(ValueError, match=match):
        weighted_vote(**{**args, **kwargs})


@settings(deadline=None)  # timing varies on a shared CI box; the property is what counts
@given(
    votes=st.lists(st.integers(0, 3), min_size=1, max_size=9),
    acc=st.floats(0.3, 0.95),
)
def test_weighted_vote_equal_accuracy_is_plurality(votes, acc):
    """With equal accuracies above chance the vote picks the plurality label."""
    labels = np.array(votes)
    n = labels.size
    label, confidence = weighted_vote(
        np.zeros(n, dtype=int), np.arange(n), labels, np.full(n, acc), 1, 4
    )
    counts = np.bincount(labels, minlength=4)
    assert label[0] == np.argmax(counts)
    assert 0.25 - 1e-12 <= confidence[0] <= 1.0


def test_vote_posterior_rows_and_soft_agreement():
    """The posterior rows match the hand example; posterior[item, label] scores each label."""
    items, experts, labels = np.array([0, 0, 0]), np.array([0, 1, 2]), np.array([0, 1, 1])
    posterior = vote_posterior(items, experts, labels, np.array([0.9, 0.6, 0.6]), 2, 3)
    np.testing.assert_allclose(posterior, [[18 / 28, 9 / 28, 1 / 28], [1 / 3, 1 / 3, 1 / 3]])
    np.testing.assert_allclose(posterior[items, labels], [18 / 28, 9 / 28, 9 / 28])


def test_clip_accuracy_keeps_every_accuracy_uncertain():
    """Accuracies of 0 and 1 move inside the bounds; others are left alone."""
    low, high = ACCURACY_BOUNDS
    np.testing.assert_allclose(clip_accuracy([0.0, 0.5, 1.0]), [low, 0.5, high])
    assert clip_accuracy(0.7).shape == ()


def test_agreement_credit_gold_soft_hard_and_single_label():
    """Gold gives 1/0; otherwise the posterior of each label (soft) or 0/1 agreement with
    the winner (hard); one label without gold gives no credit."""
    posterior = np.array([0.2, 0.7, 0.1])
    np.testing.assert_allclose(agreement_credit([1, 0, 1], posterior, gold=0), [0, 1, 0])
    np.testing.assert_allclose(agreement_credit([1, 0, 2], posterior), [0.7, 0.2, 0.1])
    np.testing.assert_allclose(agreement_credit([1, 0], posterior, soft=False), [1, 0])
    assert agreement_credit([1], posterior) is None
    np.testing.assert_allclose(agreement_credit([1], posterior, gold=1), [1.0])
    np.testing.assert_allclose(agreement_credit([1], posterior, gold=-1), [0.0])


def test_agreement_credit_rejects_labels_outside_the_classes():
    with pytest.raises(ValueError, match="labels"):
        agreement_credit([3, 0], np.array([0.5, 0.5]))
