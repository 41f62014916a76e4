"""Tests for taskrank.learning.priority: Strategy validation and the score function."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskrank.learning.priority import DEFAULT_STRATEGY_DICT, Scores, Strategy, score

TWO_MEMBERS = np.array(
    [
        [[1.0, 0.0], [0.5, 0.5], [0.9, 0.1]],
        [[0.0, 1.0], [0.5, 0.5], [0.6, 0.4]],
    ]
)


# The weights the hand-computed examples below were worked out with (DESIGN §4's example).
MIXED = Strategy.from_dict({"weights": {"uncertainty": 0.6, "disagreement": 0.4}})


# --- Strategy -------------------------------------------------------------------------


def test_default_strategy_is_the_design_dict():
    """Strategy() and from_dict({}) / from_dict(None) all equal the documented defaults."""
    assert Strategy() == Strategy.from_dict({}) == Strategy.from_dict(None)
    assert Strategy().to_dict() == DEFAULT_STRATEGY_DICT
    assert DEFAULT_STRATEGY_DICT["weights"] == {
        "uncertainty": 1.0,
        "disagreement": 0.0,
        "density": 0.0,
    }
    assert DEFAULT_STRATEGY_DICT["routing"] == {
        "fit_exponent": 4.0,
        "cost_exponent": 1.0,
        "holdback_seconds": 300.0,
        "holdback_margin": 0.1,
    }
    assert DEFAULT_STRATEGY_DICT["qa"] == {
        "gold_rate": 0.05,
        "review_rate": 0.02,
        "qualify": {"min_gold": 3, "min_accuracy": 0.5},
    }
    assert DEFAULT_STRATEGY_DICT["redundancy"] == {
        "adaptive": False,
        "stop_confidence": 0.95,
        "max_labels": 5,
    }


def test_partial_dict_is_deep_merged_onto_defaults():
    """A partial section overrides only its own keys and leaves the rest at defaults."""
    strategy = Strategy.from_dict({"weights": {"density": 0.2}, "uncertainty": "entropy"})
    assert strategy.weights.density == 0.2
    assert strategy.weights.uncertainty == 1.0
    assert strategy.uncertainty == "entropy"
    assert strategy.committee == Strategy().committee


def test_round_trip_through_json():
    """to_dict is JSON-ready and from_dict(to_dict()) gives an equal strategy."""
    patch = {
        "disagreement": "vote_entropy",
        "committee": {"members": 3},
        "routing": {"cost_exponent": 1},
    }
    strategy = Strategy.from_dict(patch)
    again = Strategy.from_dict(json.loads(json.dumps(strategy.to_dict())))
    assert again == strategy
    assert again.routing.cost_exponent == 1.0
    assert isinstance(again.routing.cost_exponent, float)


def test_updated_merges_onto_current_values():
    """updated() applies a PATCH onto the strategy, not onto the defaults."""
    base = Strategy.from_dict({"weights": {"density": 0.3}})
    patched = base.updated({"weights": {"uncertainty": 1.0}})
    assert (patched.weights.density, patched.weights.uncertainty) == (0.3, 1.0)


def test_defaults_are_not_mutated_by_merging():
    """Building strategies never changes DEFAULT_STRATEGY_DICT."""
    before = copy.deepcopy(DEFAULT_STRATEGY_DICT)
    Strategy.from_dict({"weights": {"density": 0.5}, "routing": {"fit_exponent": 2.0}})
    Strategy().to_dict()["weights"]["density"] = 9.0
    assert before == DEFAULT_STRATEGY_DICT


def test_integral_float_counts_are_accepted_as_int():
    """JSON 5.0 for an integer setting is read as 5."""
    members = Strategy.from_dict({"committee": {"members": 5.0}}).committee.members
    assert members == 5 and isinstance(members, int)


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"foo": 1}, r"unknown strategy key 'foo'; expected one of \['committee', "),
        (
            {"weights": {"foo": 1}},
            r"unknown strategy key 'weights\.foo'; expected one of "
            r"\['density', 'disagreement', 'uncertainty'\]",
        ),
        ({"routing": {"speed": 1}}, r"unknown strategy key 'routing\.speed'"),
        ({"uncertainty": "foo"}, r"unknown uncertainty 'foo' for 'uncertainty'; expected one of"),
        ({"disagreement": "bar"}, r"unknown disagreement 'bar'.*'consensus_kl', 'vote_entropy'"),
        ({"committee": {"model": "svm"}}, r"unknown model 'svm'.*'logistic_regression'"),
        ({"weights": {"uncertainty": -0.1}}, r"'weights\.uncertainty' must be a number in \[0"),
        ({"weights": {"density": "high"}}, r"'weights\.density' must be a number"),
        ({"weights": {"density": True}}, r"'weights\.density' must be a number"),
        ({"weights": {"density": float("nan")}}, r"'weights\.density' must be a number"),
        (
            {"weights": {"uncertainty": 0, "disagreement": 0}},
            r"strategy weights are all 0; at least one of \['density', 'disagreement', "
            r"'uncertainty'\] must be positive",
        ),
        ({"committee": {"members": 0}},
         r"'committee\.members' must be an integer from 1 to 100, got 0"),
        ({"committee": {"members": 2.5}}, r"'committee\.members' must be an integer from 1"),
        ({"committee": {"members": 10_000}}, r"'committee\.members' must be an integer from 1"),
        ({"weights": {"uncertainty": 1.5e308}}, r"'weights\.uncertainty' must be a number in"),
        ({"routing": {"cost_exponent": 1e300}}, r"'routing\.cost_exponent' must be a number"),
        ({"committee": {"use_supplied": "yes"}}, r"'committee\.use_supplied' must be true or"),
        ({"redundancy": {"stop_confidence": 1.5}}, r"'redundancy\.stop_confidence' must be"),
        ({"retrain": {"every_labels": -1}}, r"'retrain\.every_labels' must be an integer from 1"),
        ({"retrain": {"max_train_items": 99}},
         r"'retrain\.max_train_items' must be an integer from 100 to 10000000"),
        ({"density": {"sample_size": 0}}, r"'density\.sample_size' must be an integer from 1"),
        ({"weights": 3}, r"'weights' must be an object, got int"),
    ],
)
def test_invalid_strategy_names_the_problem(patch, message):
    """Every invalid setting raises ValueError naming the key and what is expected."""
    with pytest.raises(ValueError, match=message):
        Strategy.from_dict(patch)


def test_non_dict_strategy_is_rejected():
    """The strategy itself must be an object."""
    with pytest.raises(ValueError, match="strategy must be an object, got list"):
        Strategy.from_dict(["margin"])


def test_direct_construction_is_validated_too():
    """Strategy(...) with a bad value raises, so no invalid Strategy can exist."""
    with pytest.raises(ValueError, match="unknown uncertainty 'foo'"):
        Strategy(uncertainty="foo")
    with pytest.raises(ValueError, match="strategy weights must be a Weights"):
        Strategy(weights={"uncertainty": 1.0})


def test_strategy_is_frozen():
    """A strategy cannot be changed in place."""
    with pytest.raises(AttributeError):
        Strategy().uncertainty = "entropy"


# --- score ----------------------------------------------------------------------------


def test_hand_computed_single_member():
    """m=1: disagreement is 0, priority = 0.6 x margin."""
    committee = [[[0.5, 0.5], [1.0, 0.0], [0.8, 0.2]]]
    result = score(committee, strategy=MIXED)
    np.testing.assert_allclose(result.terms["uncertainty"], [1.0, 0.0, 0.4])
    np.testing.assert_array_equal(result.terms["disagreement"], np.zeros(3))
    np.testing.assert_allclose(result.priority, [0.6, 0.0, 0.24])


def test_hand_computed_two_members_uses_the_consensus():
    """Uncertainty is taken on the mean row; opposite one-hots score 0.6 + 0.4 = 1."""
    result = score(TWO_MEMBERS, strategy=MIXED)
    # Consensus rows: (.5, .5), (.5, .5), (.75, .25) -> margin 1, 1, 0.5.
    np.testing.assert_allclose(result.terms["uncertainty"], [1.0, 1.0, 0.5])
    np.testing.assert_allclose(result.terms["disagreement"], [1.0, 0.0, 0.091305], atol=1e-6)
    np.testing.assert_allclose(result.priority, [1.0, 0.6, 0.3 + 0.4 * 0.091305], atol=1e-6)
    assert result.weights == {"uncertainty": 0.6, "disagreement": 0.4, "boost": 1.0}


def test_boost_is_added_unweighted():
    """boost adds to the priority as is and shows up as a term."""
    result = score(TWO_MEMBERS, boost=[0.0, 2.0, -1.0])
    base = score(TWO_MEMBERS).priority
    np.testing.assert_allclose(result.priority, base + [0.0, 2.0, -1.0])
    np.testing.assert_array_equal(result.terms["boost"], [0.0, 2.0, -1.0])


def test_strategy_choices_change_the_terms():
    """The strategy's uncertainty, disagreement and weights are the ones applied."""
    strategy = {
        "uncertainty": "entropy",
        "disagreement": "vote_entropy",
        "weights": {"uncertainty": 1.0, "disagreement": 2.0},
    }
    result = score(TWO_MEMBERS, strategy=strategy)
    np.testing.assert_allclose(result.terms["disagreement"], [1.0, 0.0, 0.0])
    # entropy of (.75, .25) = 0.811278 bits
    np.testing.assert_allclose(result.terms["uncertainty"], [1.0, 1.0, 0.811278], atol=1e-6)
    np.testing.assert_allclose(result.priority, [3.0, 1.0, 0.811278], atol=1e-6)


def test_density_term_only_when_weighted_and_features_given():
    """Density joins the terms when its weight is positive and features exist."""
    features = [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]
    weighted = Strategy.from_dict({"weights": {"density": 0.5}})
    assert "density" not in score(TWO_MEMBERS, features=features).terms
    assert "density" not in score(TWO_MEMBERS, strategy=weighted).terms
    result = score(TWO_MEMBERS, features=features, strategy=weighted)
    assert result.weights["density"] == 0.5
    assert np.all((result.terms["density"] > 0) & (result.terms["density"] <= 1))


@pytest.mark.parametrize("committee", [None, np.zeros((0, 4, 3)), []])
def test_cold_start_ranks_by_the_pool_maps_coverage(committee):
    """No committee (None, zero members): the given coverage at the strategy's total
    weight, never density within the batch (a batch is not the pool)."""
    features = np.random.default_rng(0).normal(size=(4, 2))
    strategy = Strategy.from_dict({"weights": {"uncertainty": 0.5, "density": 1.5}})
    result = score(committee, features=features, coverage=[0.1, 0.9, 0.5, 0.2],
                   strategy=strategy)
    assert set(result.terms) == {"coverage", "boost"}
    assert result.weights["coverage"] == pytest.approx(2.0)
    np.testing.assert_allclose(result.priority, [0.2, 1.8, 1.0, 0.4])
    assert "density" not in score(committee, features=features).terms


def test_cold_start_without_features_is_seeded_random():
    """Without committee or features: a seeded uniform draw named 'random'."""
    first = score(None, boost=np.zeros(50), random_state=3)
    assert set(first.terms) == {"random", "boost"}
    assert np.all((first.priority >= 0) & (first.priority < 1))
    again = score(None, boost=np.zeros(50), random_state=3)
    np.testing.assert_array_equal(first.priority, again.priority)
    assert len(np.unique(first.priority)) == 50


def test_cold_start_with_zero_member_array_knows_n():
    """A (0, n, k) committee alone gives n random priorities."""
    assert score(np.zeros((0, 5, 2))).priority.shape == (5,)


def test_nothing_to_count_items_raises():
    """With no committee, features or boost, n is unknown: a clear error."""
    with pytest.raises(ValueError, match="needs a committee, features or boost"):
        score(None)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"boost": [0.0, 1.0]}, "boost has 2 rows, expected 3"),
        ({"boost": [0.0, np.nan, 1.0]}, "boost row 1 is not finite"),
        ({"boost": [[0.0, 1.0, 2.0]]}, r"boost must have shape \(n_items,\)"),
        ({"features": np.zeros((2, 2))}, "features has 2 rows, expected 3"),
        ({"features": [[0.0], [np.inf], [1.0]]}, "features row 1 contains NaN or inf"),
        ({"strategy": "margin"}, "strategy must be a Strategy or a dict, got str"),
        ({"strategy": {"weights": {"x": 1}}}, r"unknown strategy key 'weights\.x'"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    """score validates boost, features and strategy, naming the argument."""
    with pytest.raises(ValueError, match=message):
        score(TWO_MEMBERS, **kwargs)


def test_bad_committee_row_is_named():
    """score validates the committee and names member and row."""
    committee = TWO_MEMBERS.copy()
    committee[1, 2] = [0.9, 0.3]
    with pytest.raises(ValueError, match=r"committee member 1 row 2 sums to 1\.2"):
        score(committee)


def test_breakdown_explains_one_item():
    """breakdown(i) gives value, weight and contribution per term, summing to priority."""
    result = score(TWO_MEMBERS, boost=[0.0, 0.0, 0.5], strategy=MIXED)
    parts = result.breakdown(2)
    assert set(parts) == {"uncertainty", "disagreement", "boost"}
    assert parts["uncertainty"] == {"value": 0.5, "weight": 0.6, "contribution": 0.3}
    total = sum(part["contribution"] for part in parts.values())
    assert total == pytest.approx(result.priority[2])


@st.composite
def committees(draw):
    """Random (m, n, k) committees with m >= 1."""
    m, n, k = draw(st.integers(1, 5)), draw(st.integers(1, 10)), draw(st.integers(2, 5))
    seed = draw(st.integers(0, 2**32 - 1))
    return np.random.default_rng(seed).dirichlet(np.full(k, 0.5), size=(m, n))


@settings(deadline=None, max_examples=50)
@given(committee=committees(), seed=st.integers(0, 2**32 - 1))
def test_priority_is_weighted_sum_and_permutes_with_items(committee, seed):
    """priority = sum(weight x term), terms in [0, 1], reordering items reorders all."""
    result = score(committee)
    assert isinstance(result, Scores)
    rebuilt = sum(result.weights[name] * values for name, values in result.terms.items())
    np.testing.assert_allclose(result.priority, rebuilt)
    for name in ("uncertainty", "disagreement"):
        assert np.all((result.terms[name] >= 0) & (result.terms[name] <= 1))
    order = np.random.default_rng(seed).permutation(committee.shape[1])
    np.testing.assert_allclose(score(committee[:, order]).priority, result.priority[order])


def test_ragged_committee_is_a_named_error():
    """Members with different class counts raise ValueError naming the committee."""
    with pytest.raises(ValueError, match="committee must be an array of numbers"):
        score([[[0.5, 0.5]], [[0.2, 0.3, 0.5]]])
