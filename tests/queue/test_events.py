"""Recording webhook events: once per marker, only when subscribed, one drain job for a
burst, and never failing (nor losing) what caused them when the drain cannot be queued."""

from __future__ import annotations

import json
import logging

import pytest
import redis

from taskrank.queue import events
from taskrank.queue import keys as K
from taskrank.queue.connection import connect_rq
from taskrank.queue.delivery import drain_all
from taskrank.queue.events import emit, item_finished
from taskrank.queue.projects import create_project
from taskrank.queue.rerank import mark_reranked
from taskrank.queue.settings import current, install
from taskrank.queue.webhooks import put_webhook
from taskrank.queue.worker import task_queue
from taskrank.server import create_app
from tests.cluster import both_backends
from tests.receiver import SECRET, Receiver
from tests.server.helpers import make_items, make_project, next_task, post_items

pytestmark = both_backends  # on the single Redis and on the Redis Cluster

MARKS = K.webhook_marks_key("p")  # a key of the project (lua.run checks)


@pytest.fixture
def project(r):
    return create_project(r, {"id": "p", "labels": ["a", "b"]})


def subscribe(r, url="http://127.0.0.1:9/", events_=("item.finished", "queue.reranked"),
              pid="p") -> None:
    put_webhook(r, pid, "w", {"url": url, "events": list(events_), "secret": SECRET})


def test_emit_records_once_per_marker_and_queues_one_drain(r, settings, project):
    """Three events and a repeat of the first: three outbox entries (the repeat is not
    recorded) and one drain job queued for the burst, the one the pending mark names."""
    subscribe(r)
    sent = [emit(r, "p", "item.finished", {"n": n}, (MARKS, f"f{n}", "1")) for n in range(3)]
    assert sent == [True] * 3
    assert emit(r, "p", "item.finished", {"n": 0}, (MARKS, "f0", "1")) is False
    assert r.xlen(K.webhook_outbox_key("p")) == 3
    with connect_rq(settings) as connection:
        queue = task_queue(settings, connection)
        assert queue.job_ids == [r.get(K.webhook_drain_pending_key("p"))]
    assert emit(r, "p", "item.finished", {"n": 0}, (MARKS, "f0", "2")) is True  # new value


def test_nothing_is_recorded_without_a_subscriber(r, project):
    """A finished item of a project whose webhooks take other events leaves no outbox."""
    r.hset(K.item_key("p", "i"), mapping={"st": "labeled", "al": "a", "ac": 1, "done": 1})
    assert item_finished(r, project, "i") is False
    subscribe(r, events_=("model.trained",))
    assert item_finished(r, project, "i") is False
    assert not r.exists(K.webhook_outbox_key("p"))
    subscribe(r)
    assert item_finished(r, project, "i") is True
    assert r.xlen(K.webhook_outbox_key("p")) == 1


def test_an_unfinished_item_sends_nothing(r, project):
    """An item still pending or leased is not finished."""
    subscribe(r)
    for status in ("pending", "leased"):
        r.hset(K.item_key("p", "i"), mapping={"st": status, "al": "a"})
        assert item_finished(r, project, "i") is False
    assert not r.exists(K.webhook_outbox_key("p"))


def test_reranked_once_though_the_last_top_chunk_finishes_twice(r, project):
    """A re-score run's last top chunk finishing again (RQ's retry, killed after it sent
    the event but before it recorded the re-rank) sends no second event."""
    subscribe(r)
    progress = K.rescore_progress_key("p", "run-1")
    r.hset(progress, mapping={"chunks": 2, "chunks_done": 1, "top_chunks": 1, "done:0": 4,
                              "items_done": 4, "total_items": 10, "layout": "[[], []]",
                              "tags": '[""]', "reason": "model v1", "started_at": 1.0})
    mark_reranked(r, "p", "run-1")
    r.hdel(progress, "reranked_at")
    mark_reranked(r, "p", "run-1")
    assert r.xlen(K.webhook_outbox_key("p")) == 1
    event = json.loads(r.xrange(K.webhook_outbox_key("p"))[0][1]["body"])
    assert event["data"]["items"] == 4 and event["data"]["tail_items"] == 6


@pytest.fixture
def client(settings, r, auth):
    previous = current()
    app = create_app(settings.replace(webhook_retry_intervals=""))
    yield app.test_client()
    install(previous)


def test_label_is_counted_when_the_drain_cannot_be_queued(client, auth, r, run_jobs,
                                                          monkeypatch, caplog):
    """Queueing the drain job fails (RQ's Redis gone): the label still answers 201, the
    event waits in the outbox and the upkeep's drain delivers it."""
    def refuse(*args: object) -> None:
        raise redis.ConnectionError("RQ is down")

    monkeypatch.setattr(events, "enqueue_drain", refuse)
    make_project(client, auth)
    assert post_items(client, auth, make_items(2)).status_code == 200
    client.put("/v1/experts/e1", json={"capacity": 2}, headers=auth("admin"))
    with Receiver() as receiver:
        subscribe(r, receiver.url, pid="p1")
        task = next_task(client, auth).json["task"]
        with caplog.at_level(logging.WARNING, "taskrank.queue.events"):
            response = client.post(f"/v1/tasks/{task['id']}/label", json={"label": "pos"},
                                   headers=auth("platform"))
        assert response.status_code == 201, response.json
        assert "upkeep will drain" in caplog.text  # logged, not raised
        assert r.xlen(K.webhook_outbox_key("p1")) == 1
        drain_all(r)
        run_jobs()
        [request] = receiver.requests
    assert request.verify()["data"]["item_id"] == task["item_id"]


def test_label_is_counted_when_recording_fails(client, auth, r, monkeypatch, caplog):
    """Recording itself fails (Redis error after the label's write): the label answers
    201 all the same and the failure is logged."""
    def broken(*args: object) -> None:
        raise redis.ConnectionError("Redis went away")

    monkeypatch.setattr(events, "emit_many", broken)
    make_project(client, auth)
    assert post_items(client, auth, make_items(2)).status_code == 200
    client.put("/v1/experts/e1", json={"capacity": 2}, headers=auth("admin"))
    subscribe(r, pid="p1")
    task = next_task(client, auth).json["task"]
    with caplog.at_level(logging.ERROR, "taskrank.queue.events"):
        response = client.post(f"/v1/tasks/{task['id']}/label", json={"label": "pos"},
                               headers=auth("platform"))
    assert response.status_code == 201 and response.json["counted"] is True
    assert "Redis went away" in caplog.text


def test_upkeep_follow_up_sends_item_finished(r, project, settings):
    """Two labels finish an item whose follow-up (aggregation and events) never ran: the
    upkeep's drain_followups aggregates it and records item.finished."""
    from taskrank.queue.after_label import drain_followups
    from taskrank.queue.experts import load_expert, put_expert
    from taskrank.queue.items import ingest
    from taskrank.queue.projects import get_project
    from taskrank.queue.tasks import claim, submit_label

    create_project(r, {"id": "p2", "labels": ["a", "b"], "redundancy": 2})
    project2 = get_project(r, "p2")
    subscribe(r, pid="p2")
    ingest(r, project2, [{"id": "i", "predictions": {"m": [0.5, 0.5]}}])
    for eid in ("e1", "e2"):
        put_expert(r, eid, {"capacity": 1})
        task = claim(r, project2, load_expert(r, eid), depth=8)
        assert submit_label(r, project2, task["id"], "a", 10)[0] == 201
    assert not r.exists(K.webhook_outbox_key("p2"))  # nothing ran after the labels
    assert drain_followups(r, settings) == 1
    [(_, fields)] = r.xrange(K.webhook_outbox_key("p2"))
    assert fields["type"] == "item.finished" and '"n_labels":2' in fields["body"]
