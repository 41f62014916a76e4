"""A counted label whose follow-up (aggregation, retrain trigger) did not run is finished by
the workers' upkeep: the LABEL script records what is left in the same write."""

from __future__ import annotations

from taskrank.queue import keys as K
from taskrank.queue import tasks
from taskrank.queue.after_label import after_label, drain_followups
from taskrank.queue.experts import load_expert, put_expert
from taskrank.queue.items import ingest
from taskrank.queue.projects import create_project, get_project
from tests.cluster import both_backends
from tests.pools import NO_CHECKS

pytestmark = both_backends  # on the single Redis and on the Redis Cluster


def _label(r, project, eid, answer="a"):
    task = tasks.claim(r, project, load_expert(r, eid), depth=8)
    status, body = tasks.submit_label(r, project, task["id"], answer, 10.0)
    assert status == 201
    return body


def _setup(r, redundancy):
    create_project(r, {"id": "p", "labels": ["a", "b"], "redundancy": redundancy,
                       "strategy": {"retrain": {"every_labels": 2, "min_labels": 1},
                                    **NO_CHECKS}})
    project = get_project(r, "p")
    ingest(r, project, [{"id": "i0", "predictions": {"m": [0.5, 0.5]}}])
    for eid in ("e1", "e2"):
        put_expert(r, eid, {"skills": {}, "capacity": 5})
    return project


def test_an_unaggregated_label_waits_in_the_followup_set_until_done(r, settings):
    """The second label of a redundancy-2 item is not aggregated by the script: its item
    waits in the follow-up set, and after_label takes it out once aggregated."""
    project = _setup(r, redundancy=2)
    assert _label(r, project, "e1")["aggregated"] is True  # the script votes a lone label
    assert r.smembers(K.followup_key("p")) == set()
    second = _label(r, project, "e2")
    assert second["aggregated"] is False  # two labels: aggregate.py decides
    assert r.smembers(K.followup_key("p")) == {"i0"}
    after_label(r, project, second, settings)
    assert r.smembers(K.followup_key("p")) == set()
    assert r.zscore(K.labeled_key("p"), "i0") is not None


def test_the_upkeep_aggregates_and_retrains_what_a_failed_follow_up_left(r, settings):
    """Both labels stored, no follow-up run (the request failed after the write): the
    drain aggregates the item, empties the set and queues the retrain that is due."""
    project = _setup(r, redundancy=2)
    _label(r, project, "e1")
    _label(r, project, "e2")
    assert r.zscore(K.labeled_key("p"), "i0") is None  # not aggregated as finished yet
    assert drain_followups(r, settings) == 1
    assert r.smembers(K.followup_key("p")) == set()
    assert r.zscore(K.labeled_key("p"), "i0") is not None
    assert r.hget(K.item_key("p", "i0"), "al") == "a"
    assert r.hget(K.counters_key("p"), "since_retrain") == "0"  # the trigger fired
    assert r.get(K.retrain_pending_key("p")) is not None  # a retrain job is queued
    assert drain_followups(r, settings) == 0  # nothing left: a second run does nothing


def test_a_label_aggregated_by_the_script_leaves_nothing_behind(r, settings):
    """At redundancy 1 the script votes the only label itself: nothing to follow up."""
    project = _setup(r, redundancy=1)
    assert _label(r, project, "e1")["aggregated"] is True
    assert r.smembers(K.followup_key("p")) == set()
