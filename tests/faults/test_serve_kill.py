"""SIGKILL of ``taskrank serve`` itself while experts label: Redis, the RQ worker (with its
work horse and scheduler) and gunicorn (with its workers) die with it, and a new serve on
the same data dir starts at once and keeps every acknowledged label."""

from __future__ import annotations

import signal
import threading

from tests.faults.stack import Labeler, check_acknowledged_kept, setup_project
from tests.invariants import check_store
from tests.waits import wait_for


def test_kill_9_of_serve_takes_its_children_and_a_new_serve_takes_over(serve):
    """serve is SIGKILLed under three labeling clients: nothing it started keeps running;
    a second serve on the same data dir and port starts (no "already runs"), the clients'
    unanswered labels are answered by it, and every acknowledged label is counted once."""
    first = serve("first")
    first.wait_ready()
    setup_project(first.api, n_items=300, experts=3)
    stop = threading.Event()
    labelers = [Labeler(first.api, f"e{e}", stop, budget=60) for e in range(3)]
    for labeler in labelers:
        labeler.start()
    try:
        wait_for(lambda: sum(len(x.acked) for x in labelers) >= 20, 20, "20 labels")
        tree = first.tree()
        assert len(tree) >= 5, tree  # Redis, worker (+ scheduler), gunicorn + 2 workers
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(10)
        first.wait_nothing_left()
    finally:
        stop.set()
        for labeler in labelers:
            labeler.join(20)
    acked_before = {tid for x in labelers for tid in x.acked}

    second = serve("second", port=first.port)
    second.wait_ready()
    assert "already runs" not in second.err.read_text(), second.output()
    for labeler in labelers:
        labeler.settle(timeout=20)

    acked = {tid for x in labelers for tid in x.acked}
    check_acknowledged_kept(second.api, acked, acked_before)
    assert check_store(second.redis(), "p")["counted"] == len(acked)
    assert second.stop() == 0, second.output()
    second.wait_nothing_left()
