"""Webhooks through a real worker process (its RQ scheduler and upkeep loop): a receiver
that is down while attempts are refused gets the event exactly once, under its id, once it
is back; an event whose drain job was never queued is delivered by the upkeep."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from rq import Queue
from rq.registry import ScheduledJobRegistry

from taskrank.queue import keys as K
from taskrank.queue.connection import connect_rq
from taskrank.queue.delivery import delivery_page
from taskrank.queue.embedded import free_port
from taskrank.queue.settings import current, install
from taskrank.server import create_app
from tests.receiver import SECRET, Receiver
from tests.server.helpers import make_items, make_project, next_task, post_items
from tests.waits import wait_for

RETRIES = ",".join(["1"] * 30)  # one retry a second, for half a minute


@pytest.fixture
def worker(settings, tmp_path):
    """``taskrank worker`` (with its scheduler) retrying deliveries every second and
    sweeping (and draining outboxes) every 0.2 s."""
    env = {**os.environ, **settings.as_env(), "TASKRANK_LOG_LEVEL": "WARNING",
           "TASKRANK_WEBHOOK_RETRY_INTERVALS": RETRIES, "TASKRANK_SWEEP_INTERVAL": "0.2"}
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "taskrank.scripts.worker"],
                                   env=env, stdout=out, stderr=subprocess.STDOUT)
    process.log = log
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@pytest.fixture
def client(settings, r):
    previous = current()
    app = create_app(settings)
    yield app.test_client()
    install(previous)


def finish_an_item(client, auth, url: str) -> None:
    """Project p1 subscribed to item.finished at ``url``; e1 labels one item."""
    make_project(client, auth)
    response = client.put("/v1/projects/p1/webhooks/w", headers=auth("platform"), json={
        "url": url, "events": ["item.finished"], "secret": SECRET})
    assert response.status_code == 201, response.json
    assert post_items(client, auth, make_items(2)).status_code == 200
    client.put("/v1/experts/e1", json={"capacity": 2}, headers=auth("admin"))
    task = next_task(client, auth).json["task"]
    response = client.post(f"/v1/tasks/{task['id']}/label", json={"label": "pos"},
                           headers=auth("platform"))
    assert response.status_code == 201, response.json


def delivery(r) -> dict | None:
    rows = delivery_page(r, "p1", "w", 10)
    return rows[0] if rows else None


def down_for(r, seconds: float) -> dict | None:
    """The delivery once it has been refused for ``seconds`` (None before)."""
    row = delivery(r)
    if row is None or row["attempts"] < 3:
        return None
    created = float(r.hget(K.webhook_delivery_key("p1", row["id"]), "created_at"))
    return row if time.time() - created >= seconds else None


def test_receiver_down_then_back_gets_the_event_once_by_id(settings, r, auth, client, worker):
    """While nothing listens (10 s), attempts are refused and retried under one id; once the
    receiver is back the next retry delivers it: one request, that id, a valid signature,
    and nothing left scheduled."""
    port = free_port()
    finish_an_item(client, auth, f"http://127.0.0.1:{port}/hooks")
    down = wait_for(lambda: down_for(r, 10), 60,
                    f"10 s of refused attempts; worker log: {worker.log.read_text()[-2000:]}")
    assert down["status"] == "pending" and "Refused" in down["last_error"]
    with Receiver(port=port) as receiver:
        delivered = wait_for(lambda: (row := delivery(r))["status"] == "delivered" and row,
                             60, "the delivery once the receiver is back")
        [request] = receiver.requests
    assert request.id == down["id"] == delivered["id"]
    assert request.verify(SECRET)["data"]["item_id"] in ("i0", "i1")
    assert delivered["attempts"] > down["attempts"] and delivered["last_status_code"] == 200
    with connect_rq(settings) as connection:
        queue = Queue(settings.queue_name, connection=connection)
        assert ScheduledJobRegistry(queue=queue).get_job_ids() == [] and queue.count == 0


def test_upkeep_delivers_an_event_whose_drain_job_was_never_queued(r, auth, client, worker):
    """An event recorded while a drain job is named (lost before it ran) queues none; the
    worker's upkeep loop drains the outbox and the event arrives."""
    r.set(K.webhook_drain_pending_key("p1"), "a-lost-job")
    with Receiver() as receiver:
        finish_an_item(client, auth, receiver.url)
        wait_for(lambda: receiver.requests, 30,
                 f"the upkeep's delivery; worker log: {worker.log.read_text()[-2000:]}")
        [request] = receiver.requests
    assert request.verify(SECRET)["type"] == "item.finished"
    assert r.xlen(K.webhook_outbox_key("p1")) == 0
