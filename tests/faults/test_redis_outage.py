"""Redis unavailable for a while under load: clients get 503 problems with Retry-After
(never a 500 or a traceback), and the service recovers by itself once Redis is back."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from tests.faults.stack import Labeler, Poller, export_labels, setup_project
from tests.invariants import check_store
from tests.waits import wait_for

RECOVERY_SECONDS = 5.0
READS = ["/v1/projects/p/stats", "/v1/projects/p/queue?limit=3", "/v1/projects/p/items/i1",
         "/v1/projects/p/labels?limit=5", "/readyz", "/metrics", "/v1/projects/p/model"]


def _outage(server, how: str) -> None:
    if how == "kill":  # refused connections, then a restart on the same data dir and port
        server.kill()
        time.sleep(3.0)
        server.start()
    else:  # a frozen server: commands time out (the app's socket timeout is 5 s)
        server.pause()
        time.sleep(7.0)
        server.resume()


@pytest.mark.parametrize("how", ["kill", "stop"])
def test_outage_answers_503_and_recovers(stack, how):
    """Two labelers and a reader loop through the outage: every 5xx is a 503 problem with
    Retry-After, a success arrives within a few seconds of Redis's return and stays; the
    labels sent meanwhile are counted once after the clients' retries."""
    server = stack.redis(fsync="always")
    web = stack.web(server.url)
    setup_project(web.api, n_items=300, experts=2, capacity=2)
    stop = threading.Event()
    clients = [Labeler(web.api, "e0", stop), Labeler(web.api, "e1", stop),
               Poller(web.api, READS, stop)]
    for client in clients:
        client.start()
    try:
        wait_for(lambda: sum(len(x.acked) for x in clients[:2]) >= 10, 15, "10 labels")
        down = time.monotonic()
        _outage(server, how)
        back = time.monotonic()
        wait_for(lambda: any(a.at > back + RECOVERY_SECONDS + 1.5 for x in clients
                             for a in x.answers), 20, "answers after the recovery window")
    finally:
        stop.set()
        for client in clients:
            client.join(20)

    answers = sorted((a for x in clients for a in x.answers), key=lambda a: a.at)
    wrong = [a for a in answers if a.status >= 500 and not a.is_problem_503()]
    assert not wrong, f"5xx other than a 503 problem: {wrong[:3]}"
    assert not [a for a in answers if "Traceback" in str(a.body)]
    assert [a for a in answers if down <= a.at and a.is_problem_503()], \
        f"no 503 during the outage: {Counter(a.status for a in answers)}"
    first_ok = min(a.at for a in answers if a.at > back and a.status < 300)
    assert first_ok - back < RECOVERY_SECONDS, f"first success {first_ok - back:.1f} s after"
    late = [a for a in answers if a.at > back + RECOVERY_SECONDS and a.status >= 500]
    assert not late, f"still failing {RECOVERY_SECONDS} s after Redis returned: {late[:3]}"
    assert not [lost for x in clients for lost in x.lost], "gunicorn dropped a connection"

    for labeler in clients[:2]:
        labeler.settle(timeout=10)
    acked = {tid for x in clients[:2] for tid in x.acked}
    records = export_labels(web.api)
    assert len(records) == len({r["task_id"] for r in records}), "a label exported twice"
    assert {r["task_id"] for r in records if r["counted"]} == acked
    assert check_store(server.client(), "p")["counted"] == len(acked)
