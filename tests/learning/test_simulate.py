"""Tests for taskrank.learning.simulate: dataset loading, the AL replay, routing replay."""

from __future__ import annotations

import json

import numpy as np
import pytest

from taskrank.learning.priority import Strategy
from taskrank.learning.simulate import (
    ROUTING_ARMS,
    load_dataset,
    run_simulation,
    simulate_routing,
)

SMALL = {"seeds": 2, "initial": 6, "batch": 6, "budget": 24}


@pytest.fixture(scope="module")
def iris():
    return load_dataset("iris")


@pytest.fixture(scope="module")
def iris_result(iris):
    """One small replay shared by the shape tests."""
    return run_simulation(*iris, ["random", "margin", "default"], dataset="iris", **SMALL)


@pytest.mark.parametrize(
    ("name", "shape", "n_classes"),
    [("iris", (150, 4), 3), ("wine", (178, 13), 3), ("breast_cancer", (569, 30), 2),
     ("digits", (1797, 64), 10)],
)
def test_load_dataset_bundled(name, shape, n_classes):
    """Each bundled dataset loads as float X and labels y without downloading."""
    X, y = load_dataset(name)
    assert X.shape == shape and X.dtype == float
    assert y.shape == shape[:1] and np.unique(y).size == n_classes


def test_load_dataset_unknown_name():
    """An unknown dataset name fails with the list of known ones."""
    with pytest.raises(ValueError, match="unknown dataset 'mnist'.*digits"):
        load_dataset("mnist")


def test_run_simulation_result_shape(iris_result):
    """The result has the documented JSON shape, curves per seed and AULC = curve mean."""
    assert set(iris_result) == {"dataset", "config", "strategies"}
    assert iris_result["dataset"] == "iris"
    assert list(iris_result["strategies"]) == ["random", "margin", "default"]
    for summary in iris_result["strategies"].values():
        assert summary["n_labels"] == [6, 12, 18, 24]
        curves = np.array(summary["curves"])
        assert curves.shape == (2, 4) and np.all((curves >= 0) & (curves <= 1))
        np.testing.assert_allclose(summary["aulc"]["per_seed"], curves.mean(axis=1))
        assert summary["aulc"]["mean"] == pytest.approx(curves.mean())
    json.dumps(iris_result)  # plain JSON types only


def test_run_simulation_strategies_share_split_and_start(iris_result):
    """All strategies of a seed start from the same labelled set, so first points agree."""
    firsts = [np.array(s["curves"])[:, 0] for s in iris_result["strategies"].values()]
    for first in firsts[1:]:
        np.testing.assert_array_equal(first, firsts[0])


def test_run_simulation_reproducible(iris, iris_result):
    """The same random_state gives the same result; another one gives another."""
    again = run_simulation(*iris, ["random", "margin", "default"], dataset="iris", **SMALL)
    assert again == iris_result
    other = run_simulation(*iris, ["random"], random_state=1, **SMALL)
    assert other["strategies"]["random"]["curves"] != iris_result["strategies"]["random"]["curves"]


def test_run_simulation_accepts_strategy_objects(iris):
    """A Strategy is scored like the default one with its own settings, and recorded."""
    candidate = Strategy.from_dict({"weights": {"uncertainty": 1.0, "disagreement": 0.0},
                                    "committee": {"members": 2}})
    result = run_simulation(*iris, {"candidate": candidate}, **SMALL)
    spec = result["strategies"]["candidate"]["spec"]
    assert spec["committee"]["members"] == 2 and spec["weights"]["disagreement"] == 0.0


def test_run_simulation_caps_budget_at_half_the_pool(iris):
    """A budget beyond half the pool stops there, with a final partial batch if needed."""
    result = run_simulation(*iris, ["random"], seeds=1, initial=10, batch=20, budget=500)
    assert result["strategies"]["random"]["n_labels"] == [10, 30, 50, 56]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"strategies": ["magic"]}, "unknown strategy"),
        ({"strategies": []}, "at least one"),
        ({"seeds": 0}, "seeds"),
        ({"batch": 0}, "batch"),
        ({"initial": 80}, "initial"),
        ({"test_size": 1.0}, "test_size"),
    ],
)
def test_run_simulation_rejects_bad_input(iris, kwargs, match):
    """Unknown strategies and nonsensical numbers fail before any work is done."""
    args = {"strategies": ["random"], **SMALL, **kwargs}
    with pytest.raises(ValueError, match=match):
        run_simulation(*iris, **args)


@pytest.fixture(scope="module")
def routing_result():
    """A small routing replay on digits shared by the routing tests."""
    X, y = load_dataset("digits")
    return simulate_routing(X, y, n_labels=450, seeds=2, random_state=3)


def test_simulate_routing_shape_and_budget(routing_result):
    """Every arm reports accuracy, cost and the labels it spent (the whole budget)."""
    assert set(routing_result) == {"config", "arms", "gap_closed"}
    assert list(routing_result["arms"]) == list(ROUTING_ARMS)
    for summary in routing_result["arms"].values():
        assert len(summary["accuracy"]["per_seed"]) == 2
        assert 0 <= summary["accuracy"]["mean"] <= 1 and summary["cost"]["mean"] > 0
        assert summary["labels"]["mean"] == 450
    assert routing_result["config"]["pool"] == 150
    json.dumps(routing_result)


def test_simulate_routing_prices_every_label(routing_result):
    """Dollars are rate x true seconds per label ($50-250/h, 36-240 s); right items per
    $1,000 follow from the right items and the cost; no gold, no overhead."""
    for summary in routing_result["arms"].values():
        per_label = np.array(summary["cost"]["per_seed"]) / 450
        assert np.all(per_label > 50 * 36 / 3600) and np.all(per_label < 250 * 240 / 3600)
        for seed in range(2):
            right, cost = (summary[key]["per_seed"][seed] for key in ("correct_items", "cost"))
            assert summary["correct_per_1000_usd"]["per_seed"][seed] == pytest.approx(
                1000 * right / cost)
            assert right <= 150
        assert summary["overhead_share"]["mean"] == 0


def test_simulate_routing_overhead_is_the_share_of_labels_on_gold():
    """With gold items, overhead_share counts the labels they took."""
    X, y = load_dataset("digits")
    result = simulate_routing(X, y, n_labels=200, seeds=1, redundancy=1, gold=0.2,
                              arms=["random"], random_state=1)
    assert 0.1 < result["arms"]["random"]["overhead_share"]["mean"] < 0.3


def test_simulate_routing_learned_skills_beat_random(routing_result):
    """Routing on learned skills gives more accurate labels than random assignment."""
    arms = routing_result["arms"]
    assert arms["taskrank"]["accuracy"]["mean"] > arms["random"]["accuracy"]["mean"] + 0.02
    assert arms["oracle"]["accuracy"]["mean"] > arms["random"]["accuracy"]["mean"] + 0.02
    assert routing_result["gap_closed"] > 0.5


def test_simulate_routing_reproducible():
    """The same random_state replays the same labels."""
    X, y = load_dataset("iris")
    runs = [simulate_routing(X, y, n_domains=2, n_experts=4, n_labels=60, seeds=1,
                             arms=("taskrank",)) for _ in range(2)]
    assert runs[0] == runs[1]
    assert runs[0]["gap_closed"] is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"arms": ("taskrank", "psychic")}, "unknown routing arms"),
        ({"redundancy": 9}, "redundancy"),
        ({"gold": 1.0}, "gold"),
        ({"n_labels": 0}, "n_labels"),
        ({"hold_back_margin": -0.1}, "hold_back_margin"),
        ({"pool": 1000}, "pool"),
    ],
)
def test_simulate_routing_rejects_bad_input(kwargs, match):
    """Unknown arms and impossible settings fail with ValueError."""
    X, y = load_dataset("iris")
    with pytest.raises(ValueError, match=match):
        simulate_routing(X, y, **{"n_labels": 60, "seeds": 1, **kwargs})
