"""SIGKILL of Redis (AOF, appendfsync always) under gunicorn while experts label: after a
restart on the same data dir, every acknowledged label is there exactly once."""

from __future__ import annotations

import threading
import time

from tests.faults.stack import Labeler, check_acknowledged_kept, setup_project
from tests.invariants import check_store
from tests.waits import wait_for

K_LABELS = 40  # acknowledged labels before the kill


def test_acknowledged_labels_survive_a_sigkill_of_redis(stack):
    """K labels acknowledged (201) through gunicorn, then redis-server is SIGKILLed in the
    middle of the clients' traffic and restarted on its data dir: all K are in the export
    once, counters agree, and the pool, leases and label counts are consistent."""
    server = stack.redis(fsync="always")
    web = stack.web(server.url)
    setup_project(web.api, n_items=80, experts=4, redundancy=2)
    stop = threading.Event()
    labelers = [Labeler(web.api, f"e{e}", stop) for e in range(4)]
    for labeler in labelers:
        labeler.start()
    try:
        wait_for(lambda: sum(len(x.acked) for x in labelers) >= K_LABELS, 20,
                 f"{K_LABELS} acknowledged labels")
        acked_before = {tid for x in labelers for tid in list(x.acked)}
        server.kill()  # while the clients keep sending
        time.sleep(0.5)
    finally:
        stop.set()
        for labeler in labelers:
            labeler.join(20)
    assert len(acked_before) >= K_LABELS

    server.start()  # same data dir and port: the AOF is replayed
    wait_for(lambda: web.api.send("GET", "/readyz")[0] == 200, 10, "Redis back")
    for labeler in labelers:
        labeler.settle(timeout=10)

    acked = {tid for x in labelers for tid in x.acked}
    check_acknowledged_kept(web.api, acked, acked_before)
    stats = web.api.send("GET", "/v1/projects/p/stats")[2]
    assert stats["labels"]["counted"] == len(acked) and stats["labels"]["late"] == 0
    counts = check_store(server.client(), "p")
    assert counts["counted"] == len(acked)
    answers = [a for x in labelers for a in x.answers]
    assert any(a.is_problem_503() for a in answers), "no client met the outage"
    wrong = [a for a in answers if a.status >= 500 and not a.is_problem_503()]
    assert not wrong, f"answers other than a 503 problem during the outage: {wrong[:3]}"
