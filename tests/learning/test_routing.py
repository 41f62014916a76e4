"""Tests for taskrank.learning.routing: posteriors, fit, eligibility, value, hold-back."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from taskrank.learning.routing import (
    DEFAULT_GENERAL_LEVEL,
    accuracy_posterior,
    best_item,
    best_other_fit,
    eligible,
    general_level,
    hold_back,
    item_fit,
    value,
)

T, F = True, False


def test_accuracy_posterior_hand_computed():
    """Level 0.8 x strength 10 plus 3 agreements / 1 disagreement is Beta(11, 3)."""
    alpha, beta, mean = accuracy_posterior(0.8, 3, 1, prior_strength=10.0)
    assert alpha == pytest.approx(11.0)
    assert beta == pytest.approx(3.0)
    assert mean == pytest.approx(11.0 / 14.0)


def test_accuracy_posterior_clips_level_and_broadcasts():
    """Levels 0 and 1 are clipped into (0.01, 0.99); counts broadcast over (expert, tag)."""
    levels = np.array([[0.0, 1.0, 0.5]])
    post = accuracy_posterior(levels, np.array([[0], [10]]), 0)
    assert post.alpha.shape == (2, 3)
    np.testing.assert_allclose(post.alpha[0], [0.1, 9.9, 5.0])
    np.testing.assert_allclose(post.beta[1], [9.9, 0.1, 5.0])
    np.testing.assert_allclose(post.mean[1], (post.alpha / (post.alpha + post.beta))[1])


@pytest.mark.parametrize(
    ("level", "agree", "disagree", "strength"),
    [(1.5, 0, 0, 10.0), (0.5, -1, 0, 10.0), (0.5, 0, np.nan, 10.0), (0.5, 0, 0, 0.0)],
)
def test_accuracy_posterior_rejects_bad_input(level, agree, disagree, strength):
    """Levels outside [0, 1], negative or NaN counts and a non-positive strength fail."""
    with pytest.raises(ValueError):
        accuracy_posterior(level, agree, disagree, prior_strength=strength)


@settings(deadline=None)  # timing varies on a shared CI box; the property is what counts
@given(
    level=st.floats(0.0, 1.0),
    agree=st.integers(0, 500),
    disagree=st.integers(0, 500),
    strength=st.floats(0.1, 100.0),
)
def test_accuracy_posterior_mean_between_prior_and_data(level, agree, disagree, strength):
    """The posterior mean lies between the clipped declared level and the observed rate."""
    mean = accuracy_posterior(level, agree, disagree, strength).mean
    prior = min(max(level, 0.01), 0.99)
    rate = agree / (agree + disagree) if agree + disagree else prior
    assert min(prior, rate) - 1e-9 <= mean <= max(prior, rate) + 1e-9


def test_item_fit_takes_minimum_over_required_tags():
    """An item's fit is the weakest required tag; untagged items get the mean or a default."""
    acc = np.array([0.9, 0.6, 0.8])
    mask = np.array([[T, F, F], [T, T, F], [F, F, F], [F, T, T]])
    np.testing.assert_allclose(item_fit(acc, mask), [0.9, 0.6, 2.3 / 3, 0.6])
    np.testing.assert_allclose(item_fit(acc, mask, default=0.5), [0.9, 0.6, 0.5, 0.6])


def test_item_fit_many_experts_matches_one_at_a_time():
    """A (n_experts, n_tags) accuracy gives the rows of one-expert calls stacked."""
    rng = np.random.default_rng(0)
    acc = rng.uniform(0.3, 1.0, size=(4, 5))
    mask = rng.random((20, 5)) < 0.3
    expected = np.stack([item_fit(row, mask) for row in acc])
    np.testing.assert_allclose(item_fit(acc, mask), expected)


def test_item_fit_with_no_tag_at_all_is_the_default():
    """With no tag columns every item is untagged and gets the default fit."""
    np.testing.assert_allclose(item_fit(np.zeros(0), np.ones((1, 0), dtype=bool), 0.7), [0.7])


def test_general_level_is_the_mean_declared_level_or_the_default():
    assert general_level([0.6, 0.9]) == pytest.approx(0.75)
    assert general_level([]) == DEFAULT_GENERAL_LEVEL


def test_item_fit_rejects_mismatched_mask():
    """A mask whose tag count differs from the accuracy vector fails with ValueError."""
    with pytest.raises(ValueError, match="tags"):
        item_fit(np.array([0.9, 0.8]), np.zeros((3, 4), dtype=bool))
    with pytest.raises(ValueError, match="boolean"):
        item_fit(np.array([0.9, 0.8]), np.zeros((3, 2)))


def test_eligible_example():
    """Only items whose tags the expert holds and that it has not seen are eligible."""
    held = np.array([T, F, T])
    mask = np.array([[T, F, F], [F, T, F], [T, F, T], [F, F, F], [F, F, T]])
    seen = np.array([F, F, F, F, T])
    np.testing.assert_array_equal(
        eligible(held, mask, seen, active=True, open_leases=0, capacity=2), [T, F, T, T, F]
    )


@pytest.mark.parametrize(("active", "open_leases", "capacity"), [(F, 0, 5), (T, 5, 5), (T, 1, 0)])
def test_eligible_nothing_when_inactive_or_at_capacity(active, open_leases, capacity):
    """An inactive expert or one at capacity is eligible for nothing."""
    mask = np.array([[F, F], [T, F]])
    out = eligible(np.array([T, T]), mask, np.array([F, F]), active, open_leases, capacity)
    assert out.dtype == bool and not out.any()


def test_value_example():
    """value = priority * fit**a / cost**b, with cost ignored by default."""
    priority, fit = np.array([1.0, 0.5]), np.array([0.5, 1.0])
    np.testing.assert_allclose(value(priority, fit, 2.0), [0.5, 0.5])
    np.testing.assert_allclose(value(priority, fit, 2.0, cost_exponent=1.0), [0.25, 0.25])
    np.testing.assert_allclose(value(priority, fit, 2.0, fit_exponent=2.0), [0.25, 0.5])


@pytest.mark.parametrize("cost", [0.0, -1.0, np.nan, np.array([1.0, 0.0])])
def test_value_rejects_non_positive_cost(cost):
    """A cost that is not a finite positive number fails with ValueError."""
    with pytest.raises(ValueError, match="cost"):
        value(np.ones(2), np.ones(2), cost)


@settings(deadline=None)  # timing varies on a shared CI box; the property is what counts
@given(
    fit=hnp.arrays(float, 8, elements=st.floats(0.0, 1.0)),
    bump=st.floats(0.0, 1.0),
    a=st.floats(0.1, 3.0),
)
def test_value_grows_with_fit(fit, bump, a):
    """For positive priority, a higher fit never lowers the value."""
    priority = np.full(8, 0.7)
    higher = value(priority, np.minimum(fit + bump, 1.0), 1.5, a)
    assert np.all(higher >= value(priority, fit, 1.5, a))


def test_best_other_fit_and_hold_back():
    """Items are held back only when another available expert beats the asker by > margin."""
    fit = np.array([[0.6, 0.9, 0.6, 0.7], [0.9, 0.7, 0.65, 0.99], [0.99, 0.5, 0.5, 0.5]])
    available = np.array([[T, T, T, T], [T, T, T, F], [F, T, F, F]])
    other = best_other_fit(fit, available, asking=0)
    np.testing.assert_allclose(other, [0.9, 0.7, 0.65, np.nan])
    np.testing.assert_array_equal(hold_back(fit[0], other, margin=0.1), [T, F, F, F])
    np.testing.assert_array_equal(hold_back(fit[0], other, margin=0.0), [T, F, T, F])


def test_best_item_picks_highest_value_candidate():
    """best_item returns the candidate of highest value, or -1 when none is left."""
    item_value = np.array([0.3, 0.9, 0.5])
    assert best_item(item_value, np.array([T, F, T])) == 2
    assert best_item(item_value, np.array([F, F, F])) == -1
