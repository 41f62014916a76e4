"""Withdrawal and an expert's open tasks in queue/, with time moved through ``now``."""

from __future__ import annotations

import pytest

from taskrank.queue import keys as K
from taskrank.queue import tasks
from taskrank.queue.exceptions import NoSuchItemError
from taskrank.queue.experts import load_expert, put_expert
from taskrank.queue.items import ingest
from taskrank.queue.labels import export_aggregated
from taskrank.queue.lifecycle import expert_open_tasks, withdraw_item
from taskrank.queue.projects import create_project, get_project
from tests.cluster import both_backends
from tests.invariants import check_store, pooled

pytestmark = both_backends  # on the single Redis and on the Redis Cluster

T0 = 1_700_000_000.0
LEASE = 60


@pytest.fixture
def project(r):
    create_project(r, {"id": "p", "labels": ["neg", "pos"], "redundancy": 3,
                       "lease_seconds": LEASE})
    ingest(r, get_project(r, "p"), [{"id": f"i{n}", "predictions": {"m": [0.5, 0.5]}}
                                    for n in range(3)])
    for eid in ("e1", "e2", "e3"):
        put_expert(r, eid, {"skills": {}, "capacity": 5})
    return get_project(r, "p")


def claim(r, project, eid, now=T0):
    return tasks.claim(r, project, load_expert(r, eid), depth=8, now=now)


def test_withdrawal_ends_every_open_lease_of_the_item(r, project):
    """Two experts hold the item (redundancy 3), a third labeled it: both leases end,
    the counted label stays, and the item is withdrawn whatever its counts say."""
    held = {eid: claim(r, project, eid) for eid in ("e1", "e2", "e3")}
    assert len({task["item_id"] for task in held.values()}) == 1  # the same top item
    iid = held["e1"]["item_id"]
    status, _ = tasks.submit_label(r, project, held["e3"]["id"], "pos", 5.0, now=T0 + 1)
    assert status == 201
    outcome = withdraw_item(r, project, iid, now=T0 + 2)
    assert outcome["withdrawn"] and sorted(outcome["ended_tasks"]) == sorted(
        [held["e1"]["id"], held["e2"]["id"]])
    assert r.hmget(K.item_key("p", iid), "st", "out", "done") == ["withdrawn", "0", "1"]
    assert r.hgetall(K.counters_key("p"))["reserved_usd"] == "0"
    status, body = tasks.submit_label(r, project, held["e2"]["id"], "neg", 5.0, now=T0 + 3)
    assert status == 409 and body["counted"] is False
    assert iid not in pooled(r, "p")
    check_store(r, "p")


def test_a_finished_item_keeps_its_labels_when_withdrawn(r, project):
    """Its counted labels stay in the training set and the aggregated export."""
    create_project(r, {"id": "q", "labels": ["neg", "pos"]})
    single = get_project(r, "q")
    ingest(r, single, [{"id": "i0", "predictions": {"m": [0.5, 0.5]}}])
    task = claim(r, single, "e1")
    tasks.submit_label(r, single, task["id"], "pos", 1.0, now=T0 + 1)
    assert r.zscore(K.labeled_key("q"), "i0") is not None
    assert withdraw_item(r, single, "i0", now=T0 + 2) == {"withdrawn": True, "ended_tasks": []}
    assert r.zscore(K.labeled_key("q"), "i0") is not None
    assert [x["item_id"] for x in export_aggregated(r, "q", None, 10)["labels"]] == ["i0"]
    check_store(r, "q")


def test_withdrawing_an_unknown_item_is_refused(r, project):
    """No item: NoSuchItemError, and nothing is written."""
    with pytest.raises(NoSuchItemError):
        withdraw_item(r, project, "nope")
    assert not r.exists(K.item_key("p", "nope"))


def test_open_tasks_leave_out_leases_past_their_expiry(r, project):
    """A lease past its expiry is not open, swept or not; the one still open is listed."""
    first = claim(r, project, "e1", now=T0)
    second = claim(r, project, "e1", now=T0 + 30)
    assert [t["id"] for t in expert_open_tasks(r, "e1", now=T0 + 31)] == [first["id"],
                                                                           second["id"]]
    assert [t["id"] for t in expert_open_tasks(r, "e1", now=T0 + LEASE + 1)] == [second["id"]]
    assert expert_open_tasks(r, "e2", now=T0) == []
