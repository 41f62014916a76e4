"""Tests for taskrank.learning.disagreement: vote_entropy and consensus_kl."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from taskrank.learning.disagreement import (
    DISAGREEMENT,
    consensus_kl,
    get_disagreement,
    vote_entropy,
)

SCORES = [vote_entropy, consensus_kl]


@st.composite
def committees(draw, max_members=6, max_items=8, max_classes=6):
    """Random (m, n, k) committees of normalised probability rows."""
    m = draw(st.integers(1, max_members))
    n = draw(st.integers(1, max_items))
    k = draw(st.integers(2, max_classes))
    raw = draw(arrays(np.float64, (m, n, k), elements=st.floats(0, 1, allow_subnormal=False)))
    raw[..., 0] += 1e-3
    return raw / raw.sum(axis=2, keepdims=True)


def test_hand_computed_two_members_two_classes():
    """m=2, n=3, k=2: opposite one-hots -> 1, identical rows -> 0, mild disagreement."""
    committee = [
        [[1.0, 0.0], [0.5, 0.5], [0.9, 0.1]],
        [[0.0, 1.0], [0.5, 0.5], [0.6, 0.4]],
    ]
    # Votes: (0, 1) split evenly; (0, 0) on the tie; (0, 0).
    np.testing.assert_allclose(vote_entropy(committee), [1.0, 0.0, 0.0], atol=1e-12)
    # Item 2: mean (0.75, 0.25); H = 0.562335; member H = 0.325083, 0.673012;
    # (0.562335 - 0.499047) / ln 2 = 0.091305.
    np.testing.assert_allclose(consensus_kl(committee), [1.0, 0.0, 0.091305], atol=1e-6)


def test_hand_computed_three_members_three_classes():
    """m=3, n=2, k=3: votes (0, 0, 1) give H(2/3, 1/3) / ln 3; three distinct one-hots give 1."""
    committee = [
        [[0.6, 0.3, 0.1], [1.0, 0.0, 0.0]],
        [[0.5, 0.4, 0.1], [0.0, 1.0, 0.0]],
        [[0.2, 0.7, 0.1], [0.0, 0.0, 1.0]],
    ]
    # H(2/3, 1/3) = 0.636514 nats; / ln 3 = 0.579380
    np.testing.assert_allclose(vote_entropy(committee), [0.579380, 1.0], atol=1e-6)
    assert consensus_kl(committee)[1] == pytest.approx(1.0)


@pytest.mark.parametrize("score", SCORES)
def test_single_member_scores_zero(score):
    """With one member there is nobody to disagree with."""
    committee = np.array([[[0.2, 0.8], [1.0, 0.0], [0.5, 0.5]]])
    np.testing.assert_array_equal(score(committee), np.zeros(3))


@settings(deadline=None, max_examples=40)
@given(committee=committees())
def test_scores_lie_in_unit_interval(committee):
    """Both scores give one float per item within [0, 1]."""
    for score in SCORES:
        out = score(committee)
        assert out.shape == (committee.shape[1],)
        assert np.all((out >= 0) & (out <= 1))


@settings(deadline=None, max_examples=40)
@given(committee=committees(), seed=st.integers(0, 2**32 - 1))
def test_permuting_items_or_members(committee, seed):
    """Reordering items reorders scores; reordering members changes nothing."""
    rng = np.random.default_rng(seed)
    items = rng.permutation(committee.shape[1])
    members = rng.permutation(committee.shape[0])
    for score in SCORES:
        base = score(committee)
        np.testing.assert_allclose(score(committee[:, items]), base[items], atol=1e-12)
        np.testing.assert_allclose(score(committee[members]), base, atol=1e-9)


@settings(deadline=None, max_examples=40)
@given(committee=committees(max_members=1), copies=st.integers(2, 5))
def test_identical_members_do_not_disagree(committee, copies):
    """A committee of copies of one member scores 0 on both measures."""
    repeated = np.repeat(committee, copies, axis=0)
    for score in SCORES:
        np.testing.assert_allclose(score(repeated), 0.0, atol=1e-9)


@settings(deadline=None, max_examples=40)
@given(committee=committees())
def test_consensus_kl_matches_scipy_mean_kl(committee):
    """consensus_kl equals mean scipy KL(p_i || mean) over log(min(m, k))."""
    m, _, k = committee.shape
    mean = committee.mean(axis=0)
    kl = np.mean([scipy.stats.entropy(p.T, mean.T) for p in committee], axis=0)
    expected = kl / np.log(min(m, k)) if m > 1 else np.zeros_like(kl)
    np.testing.assert_allclose(consensus_kl(committee), expected, atol=1e-9)


@settings(deadline=None, max_examples=40)
@given(committee=committees())
def test_vote_entropy_matches_scipy_on_vote_counts(committee):
    """vote_entropy equals scipy entropy of argmax vote counts over log(min(m, k))."""
    m, n, k = committee.shape
    votes = committee.argmax(axis=2)
    counts = np.stack([np.bincount(votes[:, j], minlength=k) for j in range(n)])
    expected = scipy.stats.entropy(counts, axis=1) / np.log(min(m, k)) if m > 1 else 0.0
    np.testing.assert_allclose(vote_entropy(committee), expected, atol=1e-9)


@pytest.mark.parametrize(("m", "k"), [(2, 2), (2, 5), (4, 4), (6, 3)])
def test_maximal_disagreement_reaches_one(m, k):
    """One-hot members spread as evenly as possible over classes score 1 (m <= k or m % k == 0)."""
    committee = np.stack([np.eye(k)[[i % k]] for i in range(m)])
    assert vote_entropy(committee)[0] == pytest.approx(1.0)
    assert consensus_kl(committee)[0] == pytest.approx(1.0)


@pytest.mark.parametrize("score", SCORES)
def test_invalid_committee_names_member_and_row(score):
    """Disagreement scores validate input and name the bad member and row."""
    committee = np.full((2, 2, 2), 0.5)
    committee[1, 0, 1] = -0.5
    with pytest.raises(ValueError, match="committee member 1 row 0 contains a negative value"):
        score(committee)


@pytest.mark.parametrize("score", SCORES)
def test_two_dimensional_input_is_rejected(score):
    """A plain (n, k) matrix is not a committee."""
    with pytest.raises(ValueError, match="committee must have shape"):
        score([[0.5, 0.5]])


def test_registry_and_unknown_name():
    """get_disagreement resolves names and rejects unknown ones listing the choices."""
    for name, function in DISAGREEMENT.items():
        assert get_disagreement(name) is function
    with pytest.raises(ValueError) as info:
        get_disagreement("foo")
    assert str(info.value) == (
        "unknown disagreement 'foo'; expected one of ['consensus_kl', 'vote_entropy']"
    )
