"""Tests for taskrank.learning.aggregation: weighted vote and Dawid–Skene EM."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskrank.learning.aggregation import (
    ACCURACY_BOUNDS,
    agreement_credit,
    clip_accuracy,
    dawid_skene,
    vote_posterior,
    weighted_vote,
)


def _simulate_labels(accuracy, n_items=400, per_item=5, k=4, seed=0):
    """Labels from one-coin experts; accuracy is (n_experts,) or (n_experts, n_tags)."""
    rng = np.random.default_rng(seed)
    accuracy = np.asarray(accuracy)
    n_experts = accuracy.shape[0]
    truth = rng.integers(0, k, n_items)
    tag = rng.integers(0, accuracy.shape[1], n_items) if accuracy.ndim == 2 else None
    items = np.repeat(np.arange(n_items), per_item)
    experts = np.concatenate(
        [rng.choice(n_experts, per_item, replace=False) for _ in range(n_items)]
    )
    acc = accuracy[experts] if tag is None else accuracy[experts, tag[items]]
    wrong = (truth[items] + rng.integers(1, k, items.size)) % k
    labels = np.where(rng.random(items.size) < acc, truth[items], wrong)
    label_tag = None if tag is None else tag[items]
    return truth, items, experts, labels, label_tag


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


def test_dawid_skene_beats_majority_vote_on_planted_accuracies():
    """EM recovers planted accuracies and labels better than majority-vote agreement does."""
    planted = np.array([0.95, 0.9, 0.8, 0.65, 0.5, 0.4, 0.35])
    truth, items, experts, labels, _ = _simulate_labels(planted)
    n_items, n_experts = truth.size, planted.size
    majority, _ = weighted_vote(items, experts, labels, np.full(n_experts, 0.7), n_items, 4)
    agree_mv = np.bincount(experts, weights=labels == majority[items]) / np.bincount(experts)
    label, confidence, estimated = dawid_skene(items, experts, labels, n_items, n_experts, 4)
    assert estimated.shape == (n_experts,)
    assert np.abs(estimated - planted).mean() < 0.6 * np.abs(agree_mv - planted).mean()
    # against the accuracy each expert actually achieved, EM is off by sampling noise only
    achieved = np.bincount(experts, weights=labels == truth[items]) / np.bincount(experts)
    assert np.abs(estimated - achieved).max() < 0.03
    assert (label == truth).mean() > (majority == truth).mean() + 0.03
    assert np.all((confidence > 0.25) & (confidence <= 1.0))


def test_dawid_skene_per_tag_accuracy():
    """With item_tag, accuracy is estimated per (expert, tag) and tracks the planted matrix."""
    planted = np.array([[0.95, 0.5], [0.5, 0.95], [0.9, 0.9], [0.6, 0.8], [0.8, 0.6]])
    truth, items, experts, labels, tag = _simulate_labels(planted, n_items=600, per_item=4)
    label, _, estimated = dawid_skene(items, experts, labels, truth.size, 5, 4, item_tag=tag)
    assert estimated.shape == (5, 2)
    assert np.abs(estimated - planted).max() < 0.08
    assert (label == truth).mean() > 0.95


def test_dawid_skene_unlabelled_items_and_idle_experts():
    """Items without labels get -1 and 0; an expert without labels keeps the prior mean."""
    items, experts, labels = np.array([0, 0, 2]), np.array([0, 1, 1]), np.array([1, 1, 0])
    label, confidence, accuracy = dawid_skene(items, experts, labels, 4, 3, 2, prior=(3.0, 1.0))
    np.testing.assert_array_equal(label[[1, 3]], [-1, -1])
    np.testing.assert_array_equal(confidence[[1, 3]], [0.0, 0.0])
    assert label[0] == 1 and label[2] == 0
    assert accuracy[2] == pytest.approx(0.75)


def test_dawid_skene_prior_may_differ_per_expert():
    """Array priors (e.g. from declared levels) broadcast to the accuracy shape."""
    truth, items, experts, labels, tag = _simulate_labels(
        np.full((3, 2), 0.8), n_items=30, per_item=3
    )
    alpha = np.array([[90.0, 90.0], [10.0, 10.0], [50.0, 50.0]])
    _, _, accuracy = dawid_skene(
        items, experts, labels, truth.size, 3, 4, item_tag=tag, prior=(alpha, 100.0 - alpha)
    )
    assert accuracy[0, 0] > accuracy[2, 0] > accuracy[1, 0]


def test_dawid_skene_rejects_bad_prior_and_iterations():
    """Non-positive pseudo-counts and max_iter < 1 fail with ValueError."""
    args = (np.array([0]), np.array([0]), np.array([1]), 1, 1, 2)
    with pytest.raises(ValueError, match="prior"):
        dawid_skene(*args, prior=(0.0, 1.0))
    with pytest.raises(ValueError, match="max_iter"):
        dawid_skene(*args, max_iter=0)


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
