"""Jobs killed together with their worker (SIGKILL of the RQ worker; its work horse dies
with it): ``GET /v1/jobs/{id}`` reports them as RQ reports abandoned jobs, retried when
they have retries left, else failed, and not ``started`` for ever."""

from __future__ import annotations

import os
import signal

import redis
from rq import Queue, Retry
from rq.job import Job

from tests.faults.serve import WORKER
from tests.waits import wait_for


def test_jobs_killed_with_their_workers_are_retried_or_failed(serve):
    """Two running jobs, one with a retry left, lose their workers to SIGKILL: the one
    with a retry runs again and finishes on a restarted worker, the other is failed with
    RQ's AbandonedJobError; no work horse outlives its worker."""
    server = serve(TASKRANK_RQ_WORKERS="2")
    server.wait_ready()
    wait_for(lambda: server.readyz()[1]["parts"]["workers"].get("running") == 2, 30,
             "both workers")
    url = (server.data_dir / "redis.url").read_text().strip()
    connection = redis.Redis.from_url(url, socket_timeout=10)
    try:
        queue = Queue("taskrank", connection=connection)
        retried = queue.enqueue("time.sleep", 2, retry=Retry(max=1))
        failed = queue.enqueue("time.sleep", 60)
        wait_for(lambda: {retried.get_status(), failed.get_status()} == {"started"}, 30,
                 f"both jobs to start\n{server.output()}")
        server.tree()  # remember the work horses
        for worker in server.children(WORKER):
            os.kill(worker, signal.SIGKILL)

        def view(job: Job) -> dict:
            status, _, body = server.api.send("GET", f"/v1/jobs/{job.id}")
            assert status == 200, body
            return body

        wait_for(lambda: view(failed)["status"] == "failed", 30,
                 f"the job without retries to be failed\n{server.output()}")
        assert "AbandonedJobError" in view(failed)["error"], view(failed)
        wait_for(lambda: view(retried)["status"] == "finished", 30,
                 f"the job with a retry to run again\n{server.output()}")
        assert view(retried)["retries_left"] == 0
    finally:
        connection.close()
    horses = [pid for pid, (_, cmd) in server.seen.items() if WORKER in cmd]
    assert len(horses) >= 4, "two workers and their two work horses"
    assert server.stop() == 0, server.output()
    server.wait_nothing_left()
