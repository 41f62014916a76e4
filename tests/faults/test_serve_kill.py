"""SIGKILL of ``taskrank serve`` itself while experts label: Redis, the RQ worker (with its
work horse and scheduler) and gunicorn (with its workers) die with it, and a new serve on
the same data dir starts at once and keeps every acknowledged label."""

from __future__ import annotations

import signal
import threading
from collections import Counter

from tests.faults.stack import Labeler, export_labels, setup_project
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
    records = export_labels(second.api)
    twice = [tid for tid, n in Counter(r["task_id"] for r in records).items() if n > 1]
    assert not twice, f"labels exported twice: {twice}"
    counted = {r["task_id"] for r in records if r["counted"]}
    assert acked_before <= counted, f"acknowledged labels lost: {acked_before - counted}"
    assert counted == acked, "every label a client saw acknowledged is counted, and no other"
    assert check_store(second.redis(), "p")["counted"] == len(acked)
    assert second.stop() == 0, second.output()
    second.wait_nothing_left()
