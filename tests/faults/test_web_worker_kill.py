"""A gunicorn worker SIGKILLed in the middle of a label submission: the client's retry with
the same Idempotency-Key is counted exactly once."""

from __future__ import annotations

import os
import random
import secrets
import signal
import threading
import time
from collections import Counter

from taskrank.client import Client, ClientError
from taskrank.queue import keys as K
from tests.faults.stack import Labeler, check_acknowledged_kept, setup_project
from tests.invariants import check_store
from tests.waits import wait_for

MAX_STRIKES = 30


def _claim(api: Client, eid: str) -> dict:
    def ask() -> dict | None:
        try:
            status, _, body = api.send("POST", "/v1/projects/p/tasks/next", {"expert_id": eid})
        except ClientError:
            return None
        return body["task"] if status == 200 else None

    return wait_for(ask, 15, f"a task for {eid}")


def _strike(web, redis_client, eid: str, delay: float) -> dict:
    """Send a label, SIGKILL every worker ``delay`` s later, then retry with the same key."""
    task = _claim(web.api, eid)
    key = secrets.token_hex(8)
    path, body, headers = f"/v1/tasks/{task['id']}/label", {"label": "pos"}, {
        "Idempotency-Key": key}
    web.api.start("POST", path, body, headers)
    time.sleep(delay)
    for pid in web.workers():
        os.kill(pid, signal.SIGKILL)
    try:
        first = web.api.finish().status
    except ClientError:
        first = None  # the worker died with the request
    time.sleep(0.05)  # a script the dead worker sent may still be running in Redis
    committed = bool(redis_client.exists(K.label_idempotency_key("p", task["id"], key)))
    wait_for(lambda: len(web.workers()) == 2, 15, "gunicorn to replace its workers")
    retry = wait_for(lambda: _try(web.api, path, body, headers), 15, "the retry's answer")
    return {"task": task["id"], "first": first, "committed": committed, "retry": retry}


def _try(api: Client, path: str, body: dict, headers: dict) -> tuple[int, dict] | None:
    try:
        status, _, answer = api.send("POST", path, body, headers)
    except ClientError:
        return None
    return None if status >= 500 else (status, answer)


def _strikes(web, redis_client) -> list[dict]:
    """Strike until kills have landed both before and after the label's Lua script ran.

    The delay between sending and killing adapts to this machine: longer while the kill
    comes before the label is stored, shorter once the answer gets out before the kill.
    """
    rng, delay, strikes = random.Random(0), 0.002, []
    deadline = time.monotonic() + 25
    while len(strikes) < MAX_STRIKES and time.monotonic() < deadline:
        strike = _strike(web, redis_client, f"e{4 + len(strikes) % 2}",
                         delay * rng.uniform(0.7, 1.3))
        strikes.append(strike)
        if not strike["committed"]:
            delay *= 1.3
        elif strike["first"] is not None:
            delay /= 1.3
        kinds = Counter((s["first"] is None, s["committed"]) for s in strikes)
        if kinds[(True, True)] >= 3 and kinds[(True, False)] >= 3:
            break
    return strikes


def _random_kills(web, labelers: list[Labeler], kills: int) -> None:
    """Many concurrent labels; every 0.4 s one worker (at random) is SIGKILLed."""
    rng = random.Random(1)
    for labeler in labelers:
        labeler.start()
    wait_for(lambda: sum(len(x.acked) for x in labelers) >= 10, 15, "labels under load")
    for _ in range(kills):
        time.sleep(0.4)
        workers = web.workers()
        if workers:
            os.kill(rng.choice(workers), signal.SIGKILL)
    time.sleep(0.5)


def test_label_retry_after_a_killed_worker_counts_once(stack):
    """Workers are SIGKILLed right after a label was sent to an idle server, at delays that
    land before and after its Lua script stored it, then at random under a load of
    concurrent labelers; every retry with the same key answers 201 with the label
    counted once, and the export, counters and store agree."""
    server = stack.redis(fsync="always")
    web = stack.web(server.url, workers=2, preload=True)
    setup_project(web.api, n_items=400, experts=6, capacity=3)
    r = server.client()
    strikes = _strikes(web, r)
    stop = threading.Event()
    labelers = [Labeler(web.api, f"e{e}", stop, budget=30) for e in range(4)]
    try:
        _random_kills(web, labelers, kills=5)
    finally:
        stop.set()
        for labeler in labelers:
            labeler.join(20)
    for labeler in labelers:
        labeler.settle(timeout=15)

    summary = Counter((s["first"], s["committed"]) for s in strikes)
    assert summary[(None, True)] and summary[(None, False)], \
        f"kills should land both before and after the label was stored: {summary}"
    for strike in strikes:
        status, answer = strike["retry"]
        assert status == 201 and answer["counted"], strike
    acked = {tid for x in labelers for tid in x.acked} | {s["task"] for s in strikes}
    check_acknowledged_kept(web.api, acked)
    stats = web.api.send("GET", "/v1/projects/p/stats")[2]
    assert stats["labels"]["counted"] == len(acked) and stats["labels"]["late"] == 0
    assert check_store(r, "p")["counted"] == len(acked)
