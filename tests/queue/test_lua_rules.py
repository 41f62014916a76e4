"""The Lua claim and label scripts against ``learning.routing`` and ``learning.aggregation``.

Production routes and aggregates inside Redis (queue/lua.py); the rules are stated once,
in numpy.  These properties hold the two together on generated experts (skills, learned
agreement, capacity, cost), pools (tags, priorities, items already seen), strategies and
labels, against the real embedded Redis.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from taskrank.learning.aggregation import clip_accuracy, vote_posterior
from taskrank.learning.routing import NEEDS_GOLD, item_fit
from taskrank.queue import keys as K
from taskrank.queue import tasks
from taskrank.queue.aggregate import vote
from taskrank.queue.experts import GENERAL, load_expert, put_expert
from taskrank.queue.items import ingest
from taskrank.queue.label_import import import_labels
from taskrank.queue.projects import create_project, get_project
from taskrank.queue.skills import load_profile, record_agreement
from tests.cluster import both_backends
from tests.routing_oracle import rate_pool

pytestmark = both_backends  # on the single Redis and on the Redis Cluster

TAGS = ["a", "b", "c"]
PID, EID = "p", "e"
# The tests share the session's Redis and flush it per example themselves.
PROPERTY = hypothesis_settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Levels at the ends too, where the accuracy bounds bite.
level = st.one_of(st.sampled_from([0.0, 0.001, 0.999, 1.0]), st.floats(0.0, 1.0))
levels = st.dictionaries(st.sampled_from(TAGS), level, max_size=3)
# Graded labels the expert gave: (tag, probability it was right) pairs.
track_record = st.lists(st.tuples(st.sampled_from([*TAGS, GENERAL]), st.floats(0.0, 1.0)),
                        max_size=12)
# Seconds the expert reported per skill: (tag, labels, seconds each); they set the cost
# of a label, so the choice weighs a skill's time against its fit.
timing = st.lists(st.tuples(st.sampled_from([*TAGS, GENERAL]), st.integers(1, 20),
                            st.floats(5.0, 900.0).map(lambda s: round(s, 2))), max_size=4)
item_tags = st.lists(st.sampled_from(TAGS), max_size=2, unique=True)
pool = st.lists(st.fixed_dictionaries({
    "tags": item_tags,
    "p": st.floats(0.01, 0.99).map(lambda p: round(p, 4)),
    "boost": st.floats(-2.0, 2.0).map(lambda b: round(b, 6)),
    "seen": st.booleans()}), min_size=1, max_size=12)
expert_bodies = st.fixed_dictionaries({
    "skills": levels,
    "capacity": st.integers(1, 3),
    "cost_per_hour": st.floats(0.5, 400.0).map(lambda c: round(c, 2)),
    "active": st.booleans()})
# A page covers every pool set whole (the value bound still stops each set early).  With
# shorter pages the claim settles for the best of the first page when it found any
# candidate there, though a later page of another set may hold a better one.
DEPTH = 16
routing = st.fixed_dictionaries({
    "fit_exponent": st.sampled_from([0.0, 0.5, 1.0, 3.0]),
    "cost_exponent": st.sampled_from([0.0, 0.5, 1.0, 2.0])})


def _expert(r, body: dict, record: list, open_leases: int = 0, times: tuple = ()) -> dict:
    """The expert declared, graded on ``record``, timed on ``times`` and holding
    ``open_leases`` leases."""
    put_expert(r, EID, body)
    record_agreement(r, PID, [(EID, [] if tag == GENERAL else [tag], credit)
                              for tag, credit in record])
    for tag, n, seconds in times:
        r.hset(K.expert_skill_key(PID, EID), mapping={f"n:{tag}": n, f"sec:{tag}": n * seconds})
    for n in range(open_leases):  # leases of other items, far from expiry
        r.zadd(K.expert_leases_key(PID, EID), {f"held{n}.{PID}": 2e9})
    return load_expert(r, EID)


@PROPERTY
@given(items=pool, body=expert_bodies, record=track_record, open_leases=st.integers(0, 3),
       rule=routing, times=timing)
def test_claim_leases_an_item_of_highest_value(r, items, body, record, open_leases, rule,
                                               times):
    """The claim leases an eligible item whose value is the highest by learning.routing,
    and reports its fit and value; it answers nothing exactly when no item is eligible."""
    r.flushdb()
    create_project(r, {"id": PID, "labels": ["x", "y"], "strategy": {"routing": rule}})
    project = get_project(r, PID)
    ingest(r, project, [{"id": f"i{n}", "predictions": {"m": [item["p"], 1 - item["p"]]},
                         "skills": item["tags"], "boost": item["boost"]}
                        for n, item in enumerate(items)])
    for n, item in enumerate(items):
        if item["seen"]:  # as a lease it held or a label it gave leaves it
            r.sadd(K.item_key(PID, f"i{n}") + ":experts", EID)
    expert = _expert(r, body, record, open_leases, times)
    rated = rate_pool(r, project, expert)
    task = tasks.claim(r, project, expert, DEPTH)
    if not rated.candidate.any():
        assert task is None
        return
    assert task is not None
    chosen = rated.ids.index(task["item_id"])
    assert rated.candidate[chosen]
    best = rated.value[rated.candidate].max()
    assert rated.value[chosen] == _approx(best)
    assert task["fit"] == _approx(rated.fit[chosen])
    assert task["value"] == _approx(rated.value[chosen])


@hypothesis_settings(PROPERTY, max_examples=150)
@given(n_classes=st.integers(2, 5), skills=levels, record=track_record, data=st.data())
def test_label_script_votes_a_single_label_as_learning_does(r, n_classes, skills, record,
                                                             data):
    """An item's only label: the script stores the weighted vote's label and confidence
    (learning.aggregation over the expert's fit, clipped) when the label wins that vote,
    and leaves the item to aggregate.py when it does not."""
    held = st.lists(st.sampled_from(sorted(skills)), max_size=2, unique=True)
    tags = data.draw(held if skills else st.just([]))
    given_class = data.draw(st.integers(0, n_classes - 1))
    r.flushdb()
    labels = [f"c{n}" for n in range(n_classes)]
    create_project(r, {"id": PID, "labels": labels,  # never flagged: the vote is tested
                       "strategy": {"qa": {"qualify": {"min_accuracy": 0.0}}}})
    project = get_project(r, PID)
    ingest(r, project, [{"id": "i0", "predictions": {"m": [1 / n_classes] * n_classes},
                         "skills": tags}])
    expert = _expert(r, {"skills": skills}, record)
    fits, general = load_profile(r, project, expert).fits()
    fit = item_fit(np.array([fits[tag] for tag in tags]), np.ones((1, len(tags)), dtype=bool),
                   default=general)
    posterior = vote_posterior([0], [0], [given_class], clip_accuracy(fit), 1, n_classes)[0]
    others = np.delete(posterior, given_class)
    assume(abs(posterior[given_class] - others.max()) > 1e-9)  # an exact tie is Python's
    task = tasks.claim(r, project, expert, depth=4)
    status, answer = tasks.submit_label(r, project, task["id"], labels[given_class], 1.0)
    assert status == 201
    wins = posterior[given_class] > others.max()
    assert answer["aggregated"] is bool(wins)
    if wins:
        label, confidence = r.hmget(K.item_key(PID, "i0"), "al", "ac")
        assert label == labels[given_class]
        # Lua writes %.6f, Python rounds half to even: the last digit may differ by one
        assert float(confidence) == _approx(round(float(posterior[given_class]), 6), 2e-6)


@hypothesis_settings(PROPERTY, max_examples=100)
@given(n_classes=st.integers(2, 5), skills=levels, record=track_record, tags=item_tags,
       anonymous=st.booleans(), data=st.data())
def test_import_script_votes_a_single_label_as_aggregate_does(r, n_classes, skills, record,
                                                               tags, anonymous, data):
    """An item's only label, posted without a lease: the import script stores the label
    and confidence aggregate.vote gives it (the expert's fit on the item's weakest skill, a
    skill it lacks at its general accuracy; ANONYMOUS_ACCURACY without an expert), or
    leaves the item to aggregate.py when the label does not win."""
    given_class = data.draw(st.integers(0, n_classes - 1))
    r.flushdb()
    labels = [f"c{n}" for n in range(n_classes)]
    create_project(r, {"id": PID, "labels": labels})
    project = get_project(r, PID)
    ingest(r, project, [{"id": "i0", "predictions": {"m": [1 / n_classes] * n_classes},
                         "skills": tags}])
    _expert(r, {"skills": skills}, record)
    voter = "" if anonymous else EID
    winner, confidence, posterior = vote(r, project, [[voter, labels[given_class]]], tags)
    others = np.delete(posterior, given_class)
    assume(abs(posterior[given_class] - others.max()) > 1e-9)  # an exact tie is Python's
    record_ = {"item_id": "i0", "label": labels[given_class]}
    record_.update({"source": "s"} if anonymous else {"expert_id": EID})
    result = import_labels(r, project, [record_])
    assert result.answer["counted"] == 1
    wins = posterior[given_class] > others.max()
    assert result.to_aggregate == ([] if wins else ["i0"])
    if wins:
        label, stored = r.hmget(K.item_key(PID, "i0"), "al", "ac")
        assert label == winner == labels[given_class]
        assert float(stored) == _approx(confidence, 2e-6)


def _approx(expected: float, tolerance: float = 1e-9):
    """Equal up to float rounding (Lua's pow and tostring against numpy's)."""
    return pytest.approx(float(expected), rel=tolerance, abs=tolerance)


gold_record = st.dictionaries(st.sampled_from([*TAGS, GENERAL]),
                              st.tuples(st.integers(0, 4), st.integers(0, 4)), max_size=4)
qualify = st.fixed_dictionaries({"min_gold": st.integers(0, 3),
                                 "min_accuracy": st.sampled_from([0.0, 0.5, 0.9])})


@PROPERTY
@given(items=pool, body=expert_bodies, record=track_record, gold_items=gold_record,
       answered=gold_record, debt=st.floats(0.0, 1.0), rate=st.sampled_from([0.0, 0.3, 1.0]),
       rule=qualify)
def test_claim_serves_gold_as_the_gate_and_share_say(r, items, body, record, gold_items,
                                                     answered, debt, rate, rule):
    """With gold in the pool, the claim leases either a real item of highest value
    (learning.routing, gold left out) or, in its place, an unseen gold item of one of that
    item's skills: one the expert must still qualify on (learning.routing.gate), or the
    one whose gold share (learning.routing.gold_share) brought the running debt to 1."""
    r.flushdb()
    body = {**body, "active": True}
    create_project(r, {"id": PID, "labels": ["x", "y"], "strategy": {
        "qa": {"gold_rate": rate, "review_rate": 0.0, "qualify": rule}}})
    project = get_project(r, PID)
    gold = [{"id": f"g{tag}{n}", "predictions": {"m": [0.5, 0.5]}, "gold": "x",
             "skills": [] if tag == GENERAL else [tag]}
            for tag, (count, _) in gold_items.items() for n in range(count)]
    ingest(r, project, gold + [{"id": f"i{n}", "predictions": {"m": [item["p"], 1 - item["p"]]},
                                "skills": item["tags"]} for n, item in enumerate(items)])
    expert = _expert(r, body, record)
    key = K.expert_skill_key(PID, EID)
    for tag, (seen, right) in answered.items():
        r.hset(key, mapping={f"gn:{tag}": seen, f"gr:{tag}": min(seen, right)})
    r.hset(key, "gold_debt", debt)
    profile = load_profile(r, project, expert)
    state = dict(zip(profile.tags, profile.state, strict=True))
    share = profile.table(profile.gold_share)
    rated = rate_pool(r, project, expert)
    real = np.array([iid.startswith("i") for iid in rated.ids])
    candidate = rated.candidate & real
    task = tasks.claim(r, project, expert, DEPTH)
    if not candidate.any():
        assert task is None
        return
    assert task is not None
    best = rated.value[candidate].max()
    top = candidate & np.isclose(rated.value, best, rtol=1e-9, atol=1e-9)
    tops = [rated.ids[n] for n in np.flatnonzero(top)]
    has_gold = {tag for tag, (count, _) in gold_items.items() if count > 0}

    def gold_due(iid: str) -> set[str]:
        """The skills of real item ``iid`` on which gold must replace it (none unseen
        is ever missing here: the expert has seen no gold item)."""
        tags = (r.hget(K.item_key(PID, iid), "s") or GENERAL).split(",")
        gated = {tag for tag in tags if state[tag] == NEEDS_GOLD and tag in has_gold}
        if gated:
            return gated
        widest = max(tags, key=lambda tag: share.get(tag, 0.0))
        owed = share.get(widest, 0.0) > 0 and debt + share[widest] >= 1.0
        return {widest} if owed and widest in has_gold else set()

    if task["item_id"].startswith("i"):
        assert task["item_id"] in tops
        assert not gold_due(task["item_id"]), (task["item_id"], state, share, debt)
        return
    served = r.hget(K.item_key(PID, task["item_id"]), "s") or GENERAL
    assert any(served in gold_due(iid) for iid in tops), (task["item_id"], state, share, debt)
