"""SIGKILL of the RQ worker of ``taskrank serve`` while experts label: serve restarts it,
the web tier keeps answering, and /readyz says the workers were down meanwhile."""

from __future__ import annotations

import os
import signal
import threading
import time

from tests.faults.serve import WORKER
from tests.faults.stack import Labeler, Poller, export_labels, setup_project
from tests.invariants import check_store
from tests.waits import wait_for


def test_a_killed_worker_is_restarted_while_the_web_tier_serves(serve):
    """The worker is SIGKILLed under load: serve stays up, every request is answered (no
    5xx, no refused connection), /readyz goes ``degraded`` (workers down) then ``ready`` with
    a new worker, and every acknowledged label is counted once."""
    server = serve()
    server.wait_ready()
    setup_project(server.api, n_items=600, experts=3)
    stop = threading.Event()
    labelers = [Labeler(server.api, f"e{e}", stop, budget=60) for e in range(3)]
    poller = Poller(server.api, ["/readyz"], stop, budget=60)
    for thread in (*labelers, poller):
        thread.start()
    try:
        wait_for(lambda: sum(len(x.acked) for x in labelers) >= 10, 20, "10 labels")
        worker = server.child(WORKER)
        os.kill(worker, signal.SIGKILL)
        killed = time.monotonic()
        wait_for(lambda: server.children(WORKER) not in ([], [worker]), 20, "a new worker")
        server.wait_ready()
        back = time.monotonic()
    finally:
        stop.set()
        for thread in (*labelers, poller):
            thread.join(20)

    assert server.process.poll() is None, server.output()
    assert "restarting in" in server.err.read_text(), server.output()
    answers = [a for x in (*labelers, poller) for a in x.answers]
    lost = [lost for x in (*labelers, poller) for lost in x.lost]
    assert not lost, f"requests not answered while the worker was down: {lost[:3]}"
    assert not [a for a in answers if a.status >= 500], "a 5xx with only the worker down"
    degraded = [a.body for a in poller.answers if a.body.get("status") == "degraded"]
    assert degraded, "/readyz never said the workers were down"
    assert all(body["parts"]["workers"]["status"] == "down" and
               body["parts"]["redis"]["status"] == "ok" for body in degraded), degraded[:2]
    assert poller.answers[-1].body["status"] == "ready"
    assert [a for x in labelers for a in x.answers if a.status == 201 and killed < a.at < back], \
        "no label was taken while the worker was down"

    acked = {tid for x in labelers for tid in x.acked}
    counted = {r["task_id"] for r in export_labels(server.api) if r["counted"]}
    assert counted == acked, "every acknowledged label is counted, and no other"
    assert check_store(server.redis(), "p")["counted"] == len(acked)
    assert server.stop() == 0, server.output()
    server.wait_nothing_left()
