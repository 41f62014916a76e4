"""Tests for taskrank.learning.uncertainty: least_confidence, margin, entropy."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from taskrank.learning.uncertainty import (
    UNCERTAINTY,
    entropy,
    get_uncertainty,
    least_confidence,
    margin,
)

SCORES = [least_confidence, margin, entropy]


@st.composite
def proba_matrices(draw, max_items=12, max_classes=7):
    """Random (n, k) probability matrices, rows normalised, some exact zeros."""
    n = draw(st.integers(1, max_items))
    k = draw(st.integers(2, max_classes))
    raw = draw(arrays(np.float64, (n, k), elements=st.floats(0, 1, allow_subnormal=False)))
    raw[:, 0] += 1e-3  # no all-zero row
    return raw / raw.sum(axis=1, keepdims=True)


def test_hand_computed_two_classes():
    """3 x 2 example: uniform -> 1, one-hot -> 0, (0.8, 0.2) by hand."""
    proba = [[0.5, 0.5], [1.0, 0.0], [0.8, 0.2]]
    np.testing.assert_allclose(least_confidence(proba), [1.0, 0.0, 0.4])
    np.testing.assert_allclose(margin(proba), [1.0, 0.0, 0.4])
    # H(0.8, 0.2) = 0.500402 nats; / ln 2 = 0.721928
    np.testing.assert_allclose(entropy(proba), [1.0, 0.0, 0.721928], atol=1e-6)


def test_hand_computed_three_classes():
    """2 x 3 example with k = 3 normalisation."""
    proba = [[0.5, 0.3, 0.2], [1 / 3, 1 / 3, 1 / 3]]
    # (1 - 0.5) / (1 - 1/3) = 0.75
    np.testing.assert_allclose(least_confidence(proba), [0.75, 1.0])
    # 1 - (0.5 - 0.3) = 0.8
    np.testing.assert_allclose(margin(proba), [0.8, 1.0])
    # (0.346574 + 0.361192 + 0.321888) / ln 3 = 1.029653 / 1.098612
    np.testing.assert_allclose(entropy(proba), [0.937231, 1.0], atol=1e-6)


@pytest.mark.parametrize("score", SCORES)
@pytest.mark.parametrize("k", [2, 3, 10, 50])
def test_uniform_scores_one_and_one_hot_scores_zero(score, k):
    """Every score is exactly 1 on a uniform row and 0 on a one-hot row."""
    uniform = np.full((1, k), 1.0 / k)
    one_hot = np.eye(k)
    np.testing.assert_allclose(score(uniform), [1.0], atol=1e-12)
    np.testing.assert_allclose(score(one_hot), np.zeros(k), atol=1e-12)


@settings(deadline=None, max_examples=40)
@given(proba=proba_matrices())
def test_scores_lie_in_unit_interval(proba):
    """Scores have one float per item, all within [0, 1]."""
    for score in SCORES:
        out = score(proba)
        assert out.shape == (proba.shape[0],)
        assert out.dtype == np.float64
        assert np.all((out >= 0) & (out <= 1))


@settings(deadline=None, max_examples=40)
@given(proba=proba_matrices(), seed=st.integers(0, 2**32 - 1))
def test_scores_permute_with_items_and_ignore_class_order(proba, seed):
    """Reordering items reorders scores; reordering classes changes nothing."""
    rng = np.random.default_rng(seed)
    items = rng.permutation(proba.shape[0])
    classes = rng.permutation(proba.shape[1])
    for score in SCORES:
        base = score(proba)
        np.testing.assert_allclose(score(proba[items]), base[items], atol=1e-12)
        np.testing.assert_allclose(score(proba[:, classes]), base, atol=1e-12)


@settings(deadline=None, max_examples=40)
@given(proba=proba_matrices())
def test_entropy_matches_scipy(proba):
    """entropy equals scipy.stats.entropy / log k."""
    expected = scipy.stats.entropy(proba, axis=1) / np.log(proba.shape[1])
    np.testing.assert_allclose(entropy(proba), expected, atol=1e-9)


@settings(deadline=None, max_examples=40)
@given(proba=proba_matrices())
def test_margin_and_least_confidence_match_sorting(proba):
    """margin and least_confidence agree with a plain sort-based reference."""
    k = proba.shape[1]
    ordered = np.sort(proba, axis=1)
    np.testing.assert_allclose(margin(proba), 1 - (ordered[:, -1] - ordered[:, -2]), atol=1e-12)
    np.testing.assert_allclose(
        least_confidence(proba), (1 - ordered[:, -1]) / (1 - 1 / k), atol=1e-12
    )


@pytest.mark.parametrize("score", SCORES)
def test_invalid_input_raises_naming_proba(score):
    """Scores validate their input: a NaN row is named."""
    with pytest.raises(ValueError, match="proba row 0 contains NaN"):
        score([[np.nan, 0.5]])


@pytest.mark.parametrize("score", SCORES)
def test_empty_batch_gives_empty_scores(score):
    """Zero items give a zero-length score vector."""
    assert score(np.zeros((0, 4))).shape == (0,)


def test_registry_resolves_every_name():
    """get_uncertainty returns the registered function for every name."""
    assert sorted(UNCERTAINTY) == ["entropy", "least_confidence", "margin"]
    for name, function in UNCERTAINTY.items():
        assert get_uncertainty(name) is function


def test_unknown_name_lists_choices():
    """An unknown name raises ValueError listing the valid ones."""
    expected = (
        "unknown uncertainty 'foo'; expected one of ['entropy', 'least_confidence', 'margin']"
    )
    with pytest.raises(ValueError) as info:
        get_uncertainty("foo")
    assert str(info.value) == expected


def test_exact_zeros_and_subnormal_probabilities_stay_finite():
    """0 log 0 counts as 0 and the smallest positive float does not overflow the log."""
    proba = np.array([[0.0, 1.0, 0.0], [5e-324, 1.0, 0.0], [0.5, 0.5, 0.0]])
    np.testing.assert_allclose(entropy(proba), [0.0, 0.0, np.log(2) / np.log(3)], atol=1e-12)
