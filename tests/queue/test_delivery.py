"""Deliveries against a real receiver, run by real RQ workers in this process: signed as
Standard Webhooks does, retried after 5xx, 408, 429 and refused connections under the same
webhook-id, stopped by other 4xx, listed with their status on the deliveries page."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest
from rq import Queue
from rq.registry import ScheduledJobRegistry

from taskrank.queue import keys as K
from taskrank.queue.connection import connect_rq
from taskrank.queue.delivery import _fan_out, delivery_id, delivery_page, drain_all, signature
from taskrank.queue.embedded import free_port
from taskrank.queue.events import emit
from taskrank.queue.projects import create_project
from taskrank.queue.settings import current, install
from taskrank.queue.webhooks import delete_webhook, put_webhook
from taskrank.queue.worker import InProcessWorker, task_queue, task_queues
from tests.receiver import SECRET, Receiver
from tests.waits import wait_for

EVENT = "item.finished"


@pytest.fixture
def hooks(settings, r):
    """Settings with immediate retries (two), installed for the jobs run in this process;
    a project p."""
    previous = current()
    installed = install(settings.replace(webhook_retry_intervals="0,0"))
    create_project(r, {"id": "p", "labels": ["a", "b"]})
    yield installed
    install(previous)


def subscribe(r, url: str, name: str = "w", secret: str = SECRET, events=(EVENT,)) -> None:
    put_webhook(r, "p", name, {"url": url, "events": list(events), "secret": secret})


def record(r, n: int) -> bool:
    """Emit the ``n``-th test event (its own marker)."""
    return emit(r, "p", EVENT, {"item_id": f"i{n}", "label": "a", "confidence": 0.9,
                                "n_labels": 1}, (K.item_key("p", f"i{n}"), "ev", "1"))


def page(r, name: str = "w", limit: int = 100) -> list[dict]:
    return delivery_page(r, "p", name, limit)


def test_delivery_is_signed_and_verified_by_the_receiver(r, hooks, run_jobs):
    """The receiver gets the Standard Webhooks payload with webhook-id, -timestamp and
    -signature; the reference library verifies it with the secret; the id is the one on
    the deliveries page."""
    with Receiver() as receiver:
        subscribe(r, receiver.url)
        assert record(r, 1)
        run_jobs()
        [request] = receiver.requests
    payload = request.verify(SECRET)
    assert payload["type"] == EVENT and payload["data"] == {
        "project_id": "p", "item_id": "i1", "label": "a", "confidence": 0.9, "n_labels": 1}
    assert payload["timestamp"].endswith("Z") and request.path == "/hooks/taskrank"
    assert request.headers["content-type"] == "application/json"
    assert request.id.startswith("msg_") and "." not in request.id
    [delivery] = page(r)
    assert delivery["id"] == request.id and delivery["status"] == "delivered"
    assert delivery["attempts"] == 1 and delivery["last_status_code"] == 200
    assert delivery["payload"] == payload


def test_plain_secret_signs_with_its_bytes(r, hooks, run_jobs):
    """A secret without whsec_ is the HMAC key as written: the signature recomputed by hand
    over "{id}.{timestamp}.{body}" matches, and a wrong key does not."""
    plain = "0123456789abcdef0123456789abcdef"
    with Receiver() as receiver:
        subscribe(r, receiver.url, secret=plain)
        record(r, 1)
        run_jobs()
        [request] = receiver.requests
    signed = f"{request.id}.{request.headers['webhook-timestamp']}.".encode() + request.body
    expected = base64.b64encode(hmac.new(plain.encode(), signed, hashlib.sha256).digest())
    assert request.headers["webhook-signature"] == "v1," + expected.decode()
    assert signature(b"another key", request.id, int(request.headers["webhook-timestamp"]),
                     request.body) != request.headers["webhook-signature"]


@pytest.mark.parametrize("answers", [[503, 500], [408, 429], [502]])
def test_retried_until_delivered_under_one_id(r, hooks, run_jobs, answers):
    """5xx, 408 and 429 answers are retried; every attempt carries the same webhook-id and
    body (each signed anew), and the delivery ends delivered after them."""
    with Receiver(answers) as receiver:
        subscribe(r, receiver.url)
        record(r, 1)
        run_jobs()
        requests = receiver.requests
    assert len(requests) == len(answers) + 1
    assert len({request.id for request in requests}) == 1
    assert len({request.body for request in requests}) == 1
    for request in requests:
        request.verify()
    [delivery] = page(r)
    assert delivery["status"] == "delivered" and delivery["attempts"] == len(answers) + 1


def test_retries_run_out_then_the_delivery_failed(r, hooks, run_jobs):
    """A receiver that keeps answering 500 gets 1 + 2 attempts (two retry intervals), then
    the delivery is failed with the last answer."""
    with Receiver([500] * 10) as receiver:
        subscribe(r, receiver.url)
        record(r, 1)
        run_jobs()
        assert len(receiver.requests) == 3
    [delivery] = page(r)
    assert delivery["status"] == "failed" and delivery["attempts"] == 3
    assert delivery["last_status_code"] == 500 and "HTTP 500" in delivery["last_error"]


@pytest.mark.parametrize("status", [400, 401, 404, 410, 301])
def test_other_4xx_and_3xx_stop_at_once(r, hooks, run_jobs, status):
    """A 4xx other than 408/429 (or a redirect, never followed) fails the delivery after one
    attempt: asking again would get the same answer."""
    with Receiver([status]) as receiver:
        subscribe(r, receiver.url)
        record(r, 1)
        run_jobs()
        assert len(receiver.requests) == 1
    [delivery] = page(r)
    assert delivery["status"] == "failed" and delivery["attempts"] == 1
    assert delivery["last_status_code"] == status


def test_refused_connection_is_retried_and_delivered_when_the_receiver_is_back(
        r, settings, hooks, run_jobs):
    """With the receiver down, the attempt is refused and a retry scheduled (1 s); once it
    listens, the scheduled retry delivers it: one request, under the delivery's id."""
    install(hooks.replace(webhook_retry_intervals="1,1"))
    port = free_port()
    subscribe(r, f"http://127.0.0.1:{port}/hooks")
    record(r, 1)
    run_jobs()
    [delivery] = page(r)
    assert delivery["status"] == "pending" and delivery["attempts"] == 1
    assert delivery["last_status_code"] is None and "Refused" in delivery["last_error"]
    assert delivery["next_attempt_at"] is not None
    with connect_rq(settings) as connection, Receiver(port=port) as receiver:
        registry = ScheduledJobRegistry(queue=task_queue(settings, connection))
        assert registry.get_job_ids() == [delivery["id"]]
        wait_for(lambda: registry.get_scheduled_time(delivery["id"]).timestamp() < time.time(),
                 10, "the retry to be due")
        InProcessWorker([Queue(settings.queue_name, connection=connection)],
                        connection=connection).work(burst=True, with_scheduler=True,
                                                    logging_level="WARNING")
        [request] = receiver.requests
    assert request.id == delivery["id"]
    [delivered] = page(r)
    assert delivered["status"] == "delivered" and delivered["attempts"] == 2


def test_retry_after_delays_the_next_attempt(r, hooks, run_jobs):
    """A 503 with Retry-After: 120 schedules the retry 120 s on, past the 0 s interval."""
    with Receiver([503], headers={"Retry-After": "120"}) as receiver:
        subscribe(r, receiver.url)
        record(r, 1)
        run_jobs()
        assert len(receiver.requests) == 1
    [delivery] = page(r)
    fields = r.hgetall(K.webhook_delivery_key("p", delivery["id"]))
    assert delivery["status"] == "pending"
    assert float(fields["next_attempt_at"]) - float(fields["last_attempt_at"]) >= 119


def test_each_subscriber_gets_its_own_delivery(r, hooks, run_jobs):
    """Two webhooks of the event each get it, under different ids, each signed with its
    own secret; a webhook of other events gets nothing."""
    other = "whsec_" + base64.b64encode(b"z" * 24).decode()
    with Receiver() as first, Receiver() as second, Receiver() as third:
        subscribe(r, first.url, "a")
        subscribe(r, second.url, "b", secret=other)
        subscribe(r, third.url, "c", events=["model.trained"])
        record(r, 1)
        run_jobs()
        [one], [two] = first.requests, second.requests
        assert third.requests == []
    one.verify(SECRET), two.verify(other)
    assert one.id != two.id and one.body == two.body


def test_deliveries_page_shows_each_status_newest_first(r, hooks, run_jobs):
    """Delivered, failed (404) and pending (retry scheduled) deliveries are listed newest
    first with their attempts, last answer and times; `limit` cuts the page."""
    install(hooks.replace(webhook_retry_intervals="60"))
    with Receiver([200, 404, 503]) as receiver:
        subscribe(r, receiver.url)
        for n in range(3):
            record(r, n)
            run_jobs()
    rows = page(r)
    assert [row["payload"]["data"]["item_id"] for row in rows] == ["i2", "i1", "i0"]
    assert [(row["status"], row["last_status_code"], row["attempts"]) for row in rows] == [
        ("pending", 503, 1), ("failed", 404, 1), ("delivered", 200, 1)]
    assert rows[2]["delivered_at"] and rows[2]["last_error"] is None
    assert rows[0]["next_attempt_at"] and rows[0]["delivered_at"] is None
    assert all(row["created_at"] and row["last_attempt_at"] for row in rows)
    assert [row["id"] for row in page(r, limit=1)] == [rows[0]["id"]]


def test_page_keeps_the_newest_and_forgets_finished_older_ones(r, hooks, run_jobs):
    """With TASKRANK_WEBHOOK_DELIVERIES_KEPT=2, five deliveries leave two on the page and
    the records of the three older, delivered ones are deleted."""
    install(hooks.replace(webhook_deliveries_kept=2))
    with Receiver() as receiver:
        subscribe(r, receiver.url)
        for n in range(5):
            record(r, n)
            run_jobs()
        assert len(receiver.requests) == 5
    assert [row["payload"]["data"]["item_id"] for row in page(r)] == ["i4", "i3"]
    assert len(list(r.scan_iter(K.webhook_delivery_key("p", "*")))) == 2


def test_outbox_is_drained_by_the_upkeep_when_no_drain_job_was_queued(r, hooks, run_jobs):
    """An event recorded while a (lost) drain job is named gets no job of its own; the
    upkeep's drain_all delivers it."""
    r.set(K.webhook_drain_pending_key("p"), "a-lost-job")
    with Receiver() as receiver:
        subscribe(r, receiver.url)
        record(r, 1)
        run_jobs()
        assert receiver.requests == [] and r.xlen(K.webhook_outbox_key("p")) == 1
        [(entry_id, _)] = r.xrange(K.webhook_outbox_key("p"))
        assert drain_all(r) == 1 and r.xlen(K.webhook_outbox_key("p")) == 0
        run_jobs()
        [request] = receiver.requests
    assert request.id == delivery_id("p", entry_id, "w")


def test_a_drain_redone_makes_the_same_delivery_once(r, hooks, run_jobs):
    """A drain that died after making an entry's deliveries, before deleting the entry, is
    redone: the same delivery id is queued again, and the receiver gets it once."""
    r.set(K.webhook_drain_pending_key("p"), "a-lost-job")
    with Receiver() as receiver:
        subscribe(r, receiver.url)
        record(r, 1)
        entries = r.xrange(K.webhook_outbox_key("p"))
        assert _fan_out(r, "p", entries) == 1  # then died
        assert _fan_out(r, "p", entries) == 1  # redone: not sent yet, so queued again
        run_jobs()
        assert _fan_out(r, "p", entries) == 0  # redone after it was sent: nothing
        run_jobs()
        [request] = receiver.requests
    assert [row["id"] for row in page(r)] == [request.id]


def test_deleted_webhook_stops_its_retries(r, hooks, run_jobs):
    """A delivery whose webhook is deleted before its retry runs is not sent again."""
    install(hooks.replace(webhook_retry_intervals="0"))
    with Receiver([503]) as receiver:
        subscribe(r, receiver.url)
        record(r, 1)
        run_jobs()  # the 503, then the retry at once
        assert len(receiver.requests) == 2
        record(r, 2)
        with connect_rq(hooks) as connection:
            InProcessWorker(task_queues(hooks, connection), connection=connection).work(
                burst=True, max_jobs=1, logging_level="WARNING")  # the drain only
        delete_webhook(r, "p", "w")
        run_jobs()
        assert len(receiver.requests) == 2
