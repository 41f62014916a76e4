"""SIGKILL of the work horse running a re-score chunk: RQ's retry finishes the run and the
pool holds exactly the pending items, though experts kept claiming and labeling meanwhile."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
from rq.job import Job

from taskrank.queue import keys as K
from taskrank.queue import tasks
from taskrank.queue.aggregate import aggregate_item
from taskrank.queue.connection import connect_rq
from taskrank.queue.experts import load_expert, put_expert
from taskrank.queue.items import ingest
from taskrank.queue.models import current_ranker
from taskrank.queue.projects import create_project, get_project
from taskrank.queue.rescore import enqueue_rescore, rescore_progress
from taskrank.queue.retrain import enqueue_retrain
from taskrank.queue.worker import InProcessWorker, task_queues
from taskrank.scripts.stack import child_pids as children
from taskrank.scripts.stack import started_at
from tests.invariants import check_store, not_rescored, pooled
from tests.scripts.helpers import rq_worker
from tests.waits import wait_for

N_ITEMS = 30_000  # one chunk per set; the untagged one (~1 s) is long enough to be killed in
N_FEATURES = 20


def _project(r) -> dict:
    """Items with features (some needing skill x) and 30 counted labels to train on."""
    create_project(r, {"id": "p", "labels": ["a", "b"], "strategy": {
        "committee": {"members": 8}, "retrain": {"min_labels": 10, "every_labels": 10**6}}})
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N_ITEMS, N_FEATURES)).round(3)
    for start in range(0, N_ITEMS, 1000):
        ingest(r, get_project(r, "p"), [
            {"id": f"i{i}", "features": X[i].tolist(), "skills": ["x"] if i % 3 == 0 else [],
             "predictions": {"m": [round(float(p), 4), round(1 - round(float(p), 4), 4)]}}
            for i, p in zip(range(start, min(N_ITEMS, start + 1000)),
                            rng.uniform(0.05, 0.95, 1000), strict=False)])
    for eid in ("e0", "e1"):
        put_expert(r, eid, {"skills": {"x": 0.9}, "capacity": 1000})
    project = get_project(r, "p")
    for n in range(30):
        task = tasks.claim(r, project, load_expert(r, f"e{n % 2}"), 32)
        label = "ab"[int(X[int(task["item_id"][1:]), :3].sum() > 0)]
        status, body = tasks.submit_label(r, project, task["id"], label, 5.0)
        assert status == 201
        aggregate_item(r, project, body["item_id"])
    return project


class Churn(threading.Thread):
    """Experts keep claiming, labeling and releasing while the re-score runs."""

    def __init__(self, r, project: dict, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.r, self.project, self.stop = r, project, stop
        self.touched: set[str] = set()
        self.error: BaseException | None = None

    def run(self) -> None:
        deadline = time.monotonic() + 60
        try:
            for n in range(100_000):
                if self.stop.is_set() or time.monotonic() > deadline:
                    return
                task = tasks.claim(self.r, self.project, load_expert(self.r, f"e{n % 2}"), 32)
                if task is None:
                    continue
                self.touched.add(task["item_id"])
                if n % 3 == 0:
                    tasks.release(self.r, self.project, task["id"])
                else:
                    tasks.submit_label(self.r, self.project, task["id"], "a", 1.0)
                time.sleep(0.01)
        except BaseException as error:  # reported by the test
            self.error = error


def _horse(worker_pid: int) -> int:
    """The work horse: the worker's newest child (its scheduler was forked earlier)."""
    return max(wait_for(lambda: children(worker_pid), 10, "the work horse"), key=started_at)


def test_killed_rescore_chunk_is_retried_and_the_pool_stays_exact(r, settings):
    """The horse re-scoring the pool after a retrain is SIGKILLed mid-chunk; RQ's retry
    re-scores every item still pending with the new model, finishes the run, and the pool
    (and each skill set) holds exactly the pending items at their stored priority."""
    project = _project(r)
    # One chunk per set, the top step included (its size follows the claim's depth: a top
    # split in two jobs of a few thousand items ends before the kill).
    settings = settings.replace(rescore_chunk=N_ITEMS, claim_depth=N_ITEMS)
    stop = threading.Event()
    churn = Churn(r, project, stop)
    with rq_worker(settings, r) as worker:
        retrain = Job.fetch(enqueue_retrain(r, settings, "p"),
                            connection=connect_rq(settings))
        wait_for(lambda: retrain.get_status() == "finished", 30, "the retrain")
        run = retrain.return_value()["rescore_job_id"]
        chunk = Job.fetch(f"{run}-c0", connection=connect_rq(settings))
        wait_for(lambda: chunk.get_status() == "started", 20, "the re-score chunk to start")
        churn.start()
        time.sleep(0.3)  # inside the chunk's scoring
        os.kill(_horse(worker.pid), signal.SIGKILL)
        assert not r.hexists(K.rescore_progress_key("p", run), "done:0"), \
            "the chunk finished before the kill: make it larger"
        wait_for(lambda: rescore_progress(r, "p", run)["finished"], 40,
                 "the retried chunk to finish the run")
        stop.set()
        churn.join(20)
    assert churn.error is None, repr(churn.error)
    chunk.refresh()
    assert chunk.retries_left is not None and chunk.retries_left < 3, "RQ retried the chunk"
    check_store(r, "p")
    untouched = sorted(set(pooled(r, "p")) - churn.touched)
    assert current_ranker(r, get_project(r, "p")).version == 1
    assert not not_rescored(r, get_project(r, "p"), untouched), \
        "a pending item was not re-scored with model v1"
    assert len(churn.touched) > 0


def test_a_retry_after_the_chunk_was_stored_finishes_the_run(r, settings):
    """A horse killed after storing its chunk but before marking the run finished: the
    retry sees the chunk done and still finishes the run (it used to skip, leaving the run
    'started' forever)."""
    create_project(r, {"id": "p", "labels": ["a", "b"]})
    ingest(r, get_project(r, "p"), [{"id": f"i{i}", "predictions": {"m": [0.3, 0.7]}}
                                    for i in range(10)])
    run = enqueue_rescore(r, "p", "test", settings)
    progress = K.rescore_progress_key("p", run)
    # The state a kill between the chunk's stored work and the run's finish leaves.
    r.hset(progress, mapping={"done:0": 10, "items_done": 10, "chunks_done": 1})
    InProcessWorker(task_queues(settings, connect_rq(settings)),
                 connection=connect_rq(settings)).work(burst=True, logging_level="WARNING")
    assert rescore_progress(r, "p", run)["finished"]
    assert not r.exists(K.rescore_snapshot_key("p", run, 0, 0))
