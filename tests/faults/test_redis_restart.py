"""SIGKILL of the embedded Redis of ``taskrank serve`` while experts label: serve restarts it
from its append-only file, clients meet 503s with Retry-After meanwhile, and labeling
resumes with no human action and no acknowledged label lost."""

from __future__ import annotations

import os
import signal
import threading
import time

from tests.faults.stack import Labeler, check_acknowledged_kept, setup_project
from tests.invariants import check_store
from tests.waits import wait_for


def test_a_killed_embedded_redis_is_restarted_and_service_recovers(serve):
    """Redis is SIGKILLed under four labeling clients: serve starts it again on its data
    dir; meanwhile answers are 503 problems with Retry-After (never a refused connection);
    then labels are acknowledged again, and every label acknowledged before or after is
    counted once."""
    server = serve()
    server.wait_ready()
    setup_project(server.api, n_items=300, experts=4, redundancy=2)
    stop = threading.Event()
    labelers = [Labeler(server.api, f"e{e}", stop, budget=60) for e in range(4)]
    for labeler in labelers:
        labeler.start()
    try:
        wait_for(lambda: sum(len(x.acked) for x in labelers) >= 30, 20, "30 labels")
        acked_before = {tid for x in labelers for tid in list(x.acked)}
        redis_pid = server.child("redis-server")
        os.kill(redis_pid, signal.SIGKILL)
        killed = time.monotonic()
        first_201 = wait_for(lambda: min((a.at for x in labelers for a in list(x.answers)
                                          if a.status == 201 and a.at > killed), default=None),
                             30, f"a label acknowledged after the kill\n{server.output()}")
        print(f"first 201 {first_201 - killed:.2f} s after the SIGKILL of Redis")
    finally:
        stop.set()
        for labeler in labelers:
            labeler.join(20)
    for labeler in labelers:
        labeler.settle(timeout=20)

    assert server.process.poll() is None, server.output()
    assert server.child("redis-server") != redis_pid
    answers = [a for x in labelers for a in x.answers]
    assert any(a.is_problem_503() for a in answers if a.at > killed), "no client met the outage"
    wrong = [a for a in answers if a.status >= 500 and not a.is_problem_503()]
    assert not wrong, f"answers other than a 503 problem during the outage: {wrong[:3]}"
    lost = [lost for x in labelers for lost in x.lost]
    assert not lost, f"the web tier did not answer: {lost[:3]}"

    acked = {tid for x in labelers for tid in x.acked}
    check_acknowledged_kept(server.api, acked, acked_before)
    assert check_store(server.redis(), "p")["counted"] == len(acked)
    server.wait_ready()  # the worker too, whether it survived the outage or was restarted
    assert server.stop() == 0, server.output()
    server.wait_nothing_left()
