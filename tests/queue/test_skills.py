"""What a project learns of its experts (queue/skills.py): the profile the claim routes
by, and the best working experts per skill the hold-back reads."""

from __future__ import annotations

import pytest

from taskrank.learning.priority import Strategy
from taskrank.learning.routing import DEFAULT_LABEL_SECONDS, FLAGGED, NEEDS_GOLD, QUALIFIED
from taskrank.queue import keys as K
from taskrank.queue.experts import put_expert
from taskrank.queue.projects import create_project, get_project
from taskrank.queue.skills import (
    best_experts_by_tag,
    best_experts_cache,
    load_profile,
    record_agreement,
)
from tests.cluster import both_backends

pytestmark = both_backends  # on the single Redis and on the Redis Cluster

NOW = 1_000_000.0


@pytest.fixture
def project(r):
    create_project(r, {"id": "p", "labels": ["x", "y"]})
    return get_project(r, "p")


def _worth(level: float, rate: float) -> float:
    """fit^a / cost^b per label with the default exponents and no reported time."""
    rule = Strategy().routing
    return level**rule.fit_exponent / (rate * DEFAULT_LABEL_SECONDS / 3600)**rule.cost_exponent


def test_best_experts_rank_working_experts_by_value_per_dollar(r, project, monkeypatch):
    """Cheaper experts of equal skill rank first; an expert who has not claimed within
    the hold-back seconds, or is inactive, waits for no item; the table is cached."""
    monkeypatch.setattr(best_experts_cache, "seconds", 60.0)
    best_experts_cache.clear()
    put_expert(r, "dear", {"skills": {"onco": 0.9}, "capacity": 2, "cost_per_hour": 200})
    put_expert(r, "cheap", {"skills": {"onco": 0.9}, "capacity": 3, "cost_per_hour": 50})
    put_expert(r, "away", {"skills": {"onco": 0.99}, "cost_per_hour": 10})
    put_expert(r, "off", {"skills": {"onco": 0.99}, "cost_per_hour": 10, "active": False})
    r.zadd(K.working_experts_key("p"), {"dear": NOW - 10, "cheap": NOW, "off": NOW,
                                        "away": NOW - 301})
    ranked = best_experts_by_tag(r, project, NOW)["onco"]
    assert [row[0] for row in ranked] == ["cheap", "dear"]
    assert ranked[0][1] == pytest.approx(_worth(0.9, 50)) and ranked[0][2] == 3
    assert ranked[1][1] == pytest.approx(_worth(0.9, 200))
    r.zadd(K.working_experts_key("p"), {"away": NOW})
    assert [row[0] for row in best_experts_by_tag(r, project, NOW)["onco"]] == ["cheap", "dear"]
    best_experts_cache.clear()
    assert best_experts_by_tag(r, project, NOW)["onco"][0][0] == "away"


def test_profile_learns_time_gold_and_agreement_per_skill(r, project):
    """Reported seconds move the prediction; gold answers and agreement move the
    posterior; the gate asks for gold while the project has some, then judges."""
    expert, _ = put_expert(r, "e", {"skills": {"onco": 0.9, "cardio": 0.8}})
    key = K.expert_skill_key("p", "e")
    fresh = load_profile(r, project, expert)
    assert fresh.table(fresh.seconds)["onco"] == pytest.approx(DEFAULT_LABEL_SECONDS)
    assert list(fresh.state) == [QUALIFIED] * 3  # no gold in the project: nothing to ask
    for n in range(3):
        r.zadd(K.gold_key("p", "onco"), {f"g{n}": 0})
    assert load_profile(r, project, expert).state[0] == NEEDS_GOLD
    r.hset(key, mapping={"n:onco": 4, "sec:onco": 4 * 30.0, "gn:onco": 3, "gr:onco": 0})
    profile = load_profile(r, project, expert)
    assert profile.table(profile.seconds)["onco"] < 60  # shrunk towards 120 s, mostly 30 s
    assert profile.posterior.mean[0] == pytest.approx(9 / 13)  # Beta(9, 1) + 0 right of 3
    # 0 of 3 gold right fails min_accuracy 0.5 whatever the declared level says, and the
    # project has no other gold to test it again on
    assert profile.state[0] == FLAGGED
    fits, general = profile.fits()
    assert "onco" not in fits and fits["cardio"] == pytest.approx(0.8) and general is not None
    record_agreement(r, "p", [("e", ["onco"], 1.0)] * 6)
    assert load_profile(r, project, expert).state[0] == FLAGGED  # agreement does not undo gold
    for n in range(3, 12):
        r.zadd(K.gold_key("p", "onco"), {f"g{n}": 0})
    assert load_profile(r, project, expert).state[0] == NEEDS_GOLD  # tested again on more
    r.hset(key, mapping={"gn:onco": 8, "gr:onco": 4})
    assert load_profile(r, project, expert).state[0] == QUALIFIED  # 4 of 8: min_accuracy 0.5
    r.hset(key, mapping={"gn:onco": 9, "gr:onco": 1})
    assert load_profile(r, project, expert).state[0] == FLAGGED  # 3 x min_gold answers failed
