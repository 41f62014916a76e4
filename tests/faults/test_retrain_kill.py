"""A retrain whose work horse is SIGKILLed: the old model keeps serving, the retry wins."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
from rq.job import Job

from taskrank.queue import keys as K
from taskrank.queue.connection import connect_rq
from taskrank.queue.items import ingest
from taskrank.queue.models import model_info
from taskrank.queue.projects import create_project, get_project
from taskrank.queue.retrain import enqueue_retrain
from taskrank.scripts.stack import child_pids as children
from taskrank.scripts.stack import started_at
from tests.waits import wait_for


def _labeled_project(r, n=3000, d=20):
    """A project whose items are all labeled (written directly: this test is about jobs)."""
    create_project(r, {"id": "p", "labels": ["a", "b"], "strategy": {
        "committee": {"members": 8}}})
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, d))
    for start in range(0, n, 1000):
        ingest(r, get_project(r, "p"), [{"id": f"i{i}", "features": X[i].round(3).tolist()}
                                        for i in range(start, min(n, start + 1000))])
    pipe = r.pipeline()
    for i in range(n):
        pipe.hset(K.item_key("p", f"i{i}"), mapping={"al": "ab"[int(X[i, :3].sum() > 0)],
                                                     "ac": 1.0})
        pipe.zadd(K.labeled_key("p"), {f"i{i}": 0})
    pipe.execute()


def test_killed_retrain_keeps_old_model_and_retry_succeeds(r, settings, run_jobs, tmp_path):
    """SIGKILL of the process running a retrain leaves version 1 serving; RQ's retry then
    makes version 2 current."""
    _labeled_project(r)
    enqueue_retrain(r, settings, "p")
    run_jobs()  # version 1, trained in-process
    assert model_info(r, "p")["version"] == 1
    env = {**os.environ, **settings.as_env(), "TASKRANK_LOG_LEVEL": "INFO"}
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        worker = subprocess.Popen([sys.executable, "-m", "taskrank.scripts.worker"], env=env,
                                  stdout=out, stderr=subprocess.STDOUT)
    try:
        job = Job.fetch(enqueue_retrain(r, settings, "p"), connection=connect_rq(settings))
        wait_for(lambda: job.get_status() == "started", 60, "the retrain to start")
        # The work horse is the worker's newest child (its scheduler was forked earlier).
        horse = max(wait_for(lambda: children(worker.pid), 10, "the work horse"), key=started_at)
        # The retrain clears its pending mark first, then reads 3,000 labels and fits: killed
        # at once, it has not stored its model (a fixed sleep raced the ~0.45 s job).
        wait_for(lambda: not r.exists(K.retrain_pending_key("p")), 10, "the retrain to begin")
        os.kill(horse, signal.SIGKILL)
        assert model_info(r, "p")["version"] == 1, "the old model keeps serving"
        wait_for(lambda: (model_info(r, "p")["version"] or 0) >= 2, 150,
              f"the retried retrain; worker log: {log.read_text()[-3000:]}")
        job.refresh()
        assert job.retries_left is not None and job.retries_left < 3
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()
