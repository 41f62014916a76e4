"""Acknowledged means replicated (queue/replication.py), over HTTP: an answer that promises
stored data (a label, labels without a lease, an item batch, a withdrawal) is a 503 problem
with Retry-After when no replica confirmed the write, and the request repeated once one
does is answered as usual, nothing stored twice.  The single Redis of the tests has no
replica, so TASKRANK_REDIS_WAIT_REPLICAS=1 is never met there; a paused replica of a real
cluster is tests/faults/test_cluster_failover.py."""

from __future__ import annotations

import pytest
from redis.cluster import RedisCluster

from taskrank.queue import keys as K
from taskrank.queue.connection import connect
from taskrank.queue.exceptions import NotReplicatedError
from taskrank.queue.replication import replicated
from taskrank.queue.settings import Settings
from taskrank.server import create_app
from tests.server.helpers import (
    assert_problem,
    make_expert,
    make_items,
    make_project,
    next_task,
    post_items,
)

NOT_ON_A_REPLICA = "not yet on a replica"


@pytest.fixture
def waiting(settings, r):
    """A test client of an app that wants one replica per write (and waits 20 ms)."""
    return create_app(settings.replace(redis_wait_replicas=1,
                                       redis_wait_timeout_ms=20)).test_client()


def assert_not_replicated(response) -> None:
    body = assert_problem(response, 503, NOT_ON_A_REPLICA, "safe to repeat")
    assert body["type"].endswith("/not-replicated") and response.headers["Retry-After"] == "1"


@pytest.mark.parametrize("fast", [True, False])
def test_a_label_no_replica_confirmed_is_a_503_and_its_retry_the_201(settings, client,
                                                                     auth, r, fast):
    """The label is stored (the export shows it) but answered 503; sent again with the
    same Idempotency-Key once replicas are not wanted, it is the 201 the first would have
    been, counted once."""
    waiting = create_app(settings.replace(redis_wait_replicas=1, redis_wait_timeout_ms=20,
                                          fast_path=fast)).test_client()
    make_project(client, auth)
    post_items(client, auth, make_items(3))
    make_expert(client, auth, "e1")
    task = next_task(client, auth).json["task"]
    send = {"headers": {**auth("platform"), "Idempotency-Key": "k1"}, "json": {"label": "pos"}}
    assert_not_replicated(waiting.post(f"/v1/tasks/{task['id']}/label", **send))
    exported = client.get("/v1/projects/p1/labels", headers=auth("platform")).json["labels"]
    assert [record["task_id"] for record in exported] == [task["id"]]
    assert r.get(K.replication_fence_key("p1")) == "1"

    retry = client.post(f"/v1/tasks/{task['id']}/label", **send)
    assert retry.status_code == 201 and retry.json["counted"] is True, retry.json
    exported = client.get("/v1/projects/p1/labels", headers=auth("platform")).json["labels"]
    assert len(exported) == 1 and exported[0]["counted"]


def test_items_labels_and_withdrawals_wait_for_a_replica(client, auth, waiting, r):
    """POST items, POST labels (without a lease) and DELETE of an item are 503s when no
    replica confirms them; repeated, they store nothing twice (updated, duplicates, the
    same withdrawal)."""
    make_project(client, auth)
    make_expert(client, auth, "e1")
    items = make_items(2)
    assert_not_replicated(post_items(waiting, auth, items))
    assert post_items(client, auth, items).json["updated"] == 2

    records = {"labels": [{"item_id": "i0", "label": "pos", "expert_id": "e1"}]}
    assert_not_replicated(waiting.post("/v1/projects/p1/labels", json=records,
                                       headers=auth("platform")))
    again = client.post("/v1/projects/p1/labels", json=records, headers=auth("platform"))
    assert (again.json["counted"], again.json["duplicates"]) == (0, 1), again.json

    assert_not_replicated(waiting.delete("/v1/projects/p1/items/i1", headers=auth("platform")))
    again = client.delete("/v1/projects/p1/items/i1", headers=auth("platform"))
    assert again.status_code == 200 and again.json["status"] == "withdrawn", again.json


def test_a_refused_write_is_not_fenced(client, auth, waiting, r):
    """A request whose write is refused (an unknown task: 404) is answered for what it is,
    without waiting: the fence is not even written."""
    make_project(client, auth)
    response = waiting.post("/v1/tasks/nosuch.p1/label", json={"label": "pos"},
                            headers=auth("platform"))
    assert_problem(response, 404)
    assert r.get(K.replication_fence_key("p1")) is None


def test_auto_waits_for_no_replica_on_a_single_redis(settings, r):
    """'auto' on a single Redis (the embedded one has no replica): nothing is waited for,
    the fence untouched."""
    with replicated(r, "p1", settings):
        r.set(K.project_key("p1"), "x")
    assert r.get(K.replication_fence_key("p1")) is None


def test_auto_on_a_cluster_acknowledges_what_a_master_without_replica_holds(redis_cluster):
    """A master with no replica online cannot have a write replicated: 'auto' acknowledges
    it at once (the fence untouched); wanting 1 replica there is the refusal."""
    settings = Settings(redis_url=redis_cluster.url, redis_cluster=True)
    with connect(settings) as r:
        assert isinstance(r, RedisCluster)
        fence = K.replication_fence_key("p-repl")
        r.delete(fence)
        with replicated(r, "p-repl", settings):
            r.set(K.project_key("p-repl"), "x")
        assert r.get(fence) is None
        strict = settings.replace(redis_wait_replicas=1, redis_wait_timeout_ms=10)
        with pytest.raises(NotReplicatedError, match="0 of the 1 replicas"), \
                replicated(r, "p-repl", strict):
            r.set(K.project_key("p-repl"), "y")
        assert r.get(fence) == "1"
        r.delete(fence, K.project_key("p-repl"))
