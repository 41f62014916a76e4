"""Tests for taskrank.learning.dawid_skene: the EM over a project and over a batch."""

from __future__ import annotations

import numpy as np
import pytest

from taskrank.learning.aggregation import weighted_vote
from taskrank.learning.dawid_skene import (
    dawid_skene,
    dawid_skene_parameters,
    dawid_skene_statistics,
    dawid_skene_update,
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


def _triples(items, experts, labels, tag, rows):
    """The labels of the items in ``rows``, renumbered 0..len(rows)-1."""
    position = np.full(items.max() + 1, -1)
    position[rows] = np.arange(rows.size)
    keep = position[items] >= 0
    return position[items[keep]], experts[keep], labels[keep], tag[keep]


def test_statistics_and_parameters_are_the_m_step():
    """Without `rest`, the update is the whole-project EM; the parameters of the final
    posteriors' statistics are its accuracies (to EM's tolerance)."""
    planted = np.array([[0.9, 0.6], [0.7, 0.95], [0.8, 0.8]])
    truth, items, experts, labels, tag = _simulate_labels(planted, n_items=200, per_item=3)
    posterior, accuracy = dawid_skene_update(items, experts, labels, truth.size, 3, 4,
                                             item_tag=tag, n_tags=2)
    label, confidence, whole = dawid_skene(items, experts, labels, truth.size, 3, 4,
                                          item_tag=tag, n_tags=2)
    np.testing.assert_array_equal(accuracy, whole)
    np.testing.assert_array_equal(posterior.argmax(axis=1), label)
    correct, total, mass, n = dawid_skene_statistics(items, experts, labels, posterior, 3,
                                                     item_tag=tag, n_tags=2)
    assert total.sum() == items.size and n == truth.size
    np.testing.assert_allclose(mass.sum(), truth.size)
    refitted, prevalence = dawid_skene_parameters(correct, total, mass, n)
    np.testing.assert_allclose(refitted, whole, atol=1e-5)
    np.testing.assert_allclose(prevalence.sum(), 1.0)


def test_a_batch_decided_against_the_rest_at_the_fixed_point_stays_put():
    """At EM's fixed point, re-deciding any batch against the others' statistics gives
    the same posteriors: the incremental update keeps what the whole pass found."""
    planted = np.array([[0.95, 0.55], [0.6, 0.9], [0.85, 0.85], [0.7, 0.65]])
    truth, items, experts, labels, tag = _simulate_labels(planted, n_items=500, per_item=3)
    posterior, _ = dawid_skene_update(items, experts, labels, truth.size, 4, 4, item_tag=tag,
                                      n_tags=2, tol=1e-10, max_iter=500)
    batch = np.arange(40, 90)
    others = np.setdiff1d(np.arange(truth.size), batch)
    rest = dawid_skene_statistics(*_triples(items, experts, labels, tag, others)[:3],
                                  posterior[others], 4,
                                  item_tag=_triples(items, experts, labels, tag, others)[3],
                                  n_tags=2)
    b_items, b_experts, b_labels, b_tag = _triples(items, experts, labels, tag, batch)
    again, _ = dawid_skene_update(b_items, b_experts, b_labels, batch.size, 4, 4, rest=rest,
                                  item_tag=b_tag, n_tags=2)
    np.testing.assert_allclose(again, posterior[batch], atol=1e-4)


def test_items_arriving_in_batches_then_swept_once_match_the_whole_pass():
    """Items decided as they arrive (each batch against the earlier ones), then decided
    once more in a sweep, agree with one EM over everything."""
    planted = np.array([[0.95, 0.6], [0.55, 0.9], [0.85, 0.8], [0.65, 0.7], [0.75, 0.95]])
    truth, items, experts, labels, tag = _simulate_labels(planted, n_items=1000, per_item=3)
    whole_label, _, whole_accuracy = dawid_skene(items, experts, labels, truth.size, 5, 4,
                                                 item_tag=tag, n_tags=2)
    posterior = np.zeros((truth.size, 4))
    stats = (np.zeros((5, 2)), np.zeros((5, 2)), np.zeros(4), 0)
    batches = np.array_split(np.arange(truth.size), 20)
    for batch in [*batches, *np.array_split(np.arange(truth.size), 10)]:  # arrival, sweep
        b_items, b_experts, b_labels, b_tag = _triples(items, experts, labels, tag, batch)
        rest = stats
        if posterior[batch].any():  # swept: its items' shares come out first
            old = dawid_skene_statistics(b_items, b_experts, b_labels, posterior[batch], 5,
                                         item_tag=b_tag, n_tags=2)
            rest = tuple(s - o for s, o in zip(stats, old, strict=True))
        posterior[batch], _ = dawid_skene_update(b_items, b_experts, b_labels, batch.size, 5,
                                                 4, rest=rest, item_tag=b_tag, n_tags=2)
        new = dawid_skene_statistics(b_items, b_experts, b_labels, posterior[batch], 5,
                                     item_tag=b_tag, n_tags=2)
        stats = tuple(r + n for r, n in zip(rest, new, strict=True))
    accuracy, _ = dawid_skene_parameters(*stats)
    assert (posterior.argmax(axis=1) == whole_label).mean() >= 0.99
    np.testing.assert_allclose(accuracy, whole_accuracy, atol=0.01)


def test_update_rejects_rest_of_the_wrong_shape():
    """Statistics that do not fit the accuracies' shape or the classes fail early."""
    args = (np.array([0, 0]), np.array([0, 1]), np.array([1, 1]), 1, 2, 3)
    with pytest.raises(ValueError, match="rest must hold"):
        dawid_skene_update(*args, rest=(np.zeros(3), np.zeros(3), np.zeros(3), 4))
    with pytest.raises(ValueError, match="rest must hold"):
        dawid_skene_update(*args, rest=(np.zeros(2), np.zeros(2), np.zeros(2), 4))
