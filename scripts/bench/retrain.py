"""One retrain against the size of the project (issue 17): its cost must follow the labels
since the last retrain, not all labels.

One project (k = 5, 2 supplied models, redundancy 2, the default strategy) grows to each
size of finished items (``finished.py``: written straight into Redis, two labels each from
8 experts of planted accuracies), beside ``PENDING`` ingested pending items that new labels
go to.  At each size:

- ``first``: the first retrain, a full Dawid–Skene pass (the items were written around the
  re-aggregation).  Up to ``full_up_to`` items it also trains on every labeled item
  (``retrain.max_train_items`` 10M): the retrain as it was before issue 17; beyond, on the
  capped set: the first retrain after an upgrade;
- ``incremental``: the retrain as shipped, ``trials`` times: ``retrain.every_labels`` new
  labels (two experts each on every_labels / 2 new items, brought in by IMPORT_LABELS and
  followed up as the server does), then one retrain job;
- ``refreshing``: the same once more, while every (expert, skill) is being refreshed (set
  so in the stored state, as if all their accuracies had just moved; on these planted
  experts none moves by itself): the retrain that reads the most, ``REFRESH_ITEMS`` more.

Each retrain job runs in this process (an RQ ``SimpleWorker``, one job): its time is RQ's
(started to ended: re-aggregation, training-set read, fit, store, queueing the re-score and
the evaluation, which are not run), split by the job's own ``step_seconds``.
"""

from __future__ import annotations

import time

import redis
from rq.job import Job

from taskrank.learning.priority import Strategy
from taskrank.queue import keys as K
from taskrank.queue.aggregation_state import load_state
from taskrank.queue.connection import connect_rq
from taskrank.queue.label_import import finish_import, import_labels
from taskrank.queue.projects import get_project, update_project
from taskrank.queue.reaggregate import request_full
from taskrank.queue.retrain import enqueue_retrain
from taskrank.queue.settings import Settings
from taskrank.queue.worker import InProcessWorker, task_queue
from taskrank.scripts.bench.data import new_project, prefill
from taskrank.scripts.bench.finished import EXPERTS, crowd_labels, declare_crowd, fill_finished
from taskrank.scripts.bench.items import LABELS
from taskrank.scripts.bench.loops import percentiles
from taskrank.scripts.bench.processes import fresh_redis

PID = "retrain"
PENDING = 1000
DEFAULTS = Strategy().retrain
UNCAPPED = 10_000_000


def run(sizes: list[int], trials: int, full_up_to: int, fsync: str = "always") -> dict:
    """Retrain seconds at each number of finished items (``sizes``, increasing)."""
    out: dict = {"every_labels": DEFAULTS.every_labels, "pending": PENDING,
                 "max_train_items": DEFAULTS.max_train_items, "sizes": {}}
    with fresh_redis(fsync) as (settings, r):
        new_project(r, PID, redundancy=2)
        declare_crowd(r)
        prefill(settings, PID, 0, PENDING)
        labeler, finished = Labeler(settings, r), 0
        for size in sizes:
            start = time.perf_counter()
            fill_finished(r, PID, PENDING + finished, PENDING + size)
            finished, built = size, round(time.perf_counter() - start, 1)
            out["sizes"][str(size)] = {"build_seconds": built, **at_size(
                settings, r, labeler, trials, uncapped=size <= full_up_to)}
    return out


def at_size(settings: Settings, r: redis.Redis, labeler: Labeler, trials: int,
            uncapped: bool) -> dict:
    """The first (full) retrain at this size, then ``trials`` incremental ones."""
    _set_cap(r, UNCAPPED if uncapped else DEFAULTS.max_train_items)
    labeler.label(DEFAULTS.every_labels // 2)
    request_full(r, PID)
    first = timed_retrain(settings, r)
    _set_cap(r, DEFAULTS.max_train_items)
    runs = []
    for _ in range(trials):
        labeler.label(DEFAULTS.every_labels // 2)
        runs.append(timed_retrain(settings, r))
    labeler.label(DEFAULTS.every_labels // 2)
    _refresh_everything(r)
    refreshing = timed_retrain(settings, r)
    summary = {name: percentiles([run[name] for run in runs]) for name in
               ("seconds", "reaggregate", "training_set", "fit", "store_and_queue")}
    return {"used_memory_bytes": int(r.info("memory")["used_memory"]),
            "first": {"uncapped": uncapped, **first}, "incremental": runs,
            "refreshing": refreshing,
            "p50_seconds": summary["seconds"]["p50"], "p95_seconds": summary["seconds"]["p95"],
            "p50_steps": {name: stats["p50"] for name, stats in summary.items()}}


def _refresh_everything(r: redis.Redis) -> None:
    state = load_state(r, get_project(r, PID))
    state.refresh = {name: [0, 0] for name in state.cells}
    r.set(K.aggregation_state_key(PID), state.to_json())


def _set_cap(r: redis.Redis, cap: int) -> None:
    update_project(r, PID, {"strategy": {"retrain": {"max_train_items": cap}}})


class Labeler:
    """Brings labels in for the next pending items, two experts each (``crowd_labels``)."""

    def __init__(self, settings: Settings, r: redis.Redis) -> None:
        self.settings, self.r, self.next = settings, r, 0

    def label(self, n_items: int) -> None:
        if self.next + n_items > PENDING:
            raise RuntimeError(f"only {PENDING} pending items to label")
        who, given = crowd_labels(self.next, n_items)
        names = list(EXPERTS)
        records = [{"item_id": f"item-{self.next + i:07d}", "expert_id": names[who[i, j]],
                    "label": LABELS[given[i, j]]} for i in range(n_items) for j in range(2)]
        self.next += n_items
        project = get_project(self.r, PID)
        finish_import(self.r, project, import_labels(self.r, project, records), self.settings)


def timed_retrain(settings: Settings, r: redis.Redis) -> dict:
    """Run one retrain job (nothing else queued) in this process; its time and steps."""
    connection = connect_rq(settings)
    queue = task_queue(settings, connection)
    queue.empty()  # what the labels or a strategy change queued (pool map, re-score)
    r.delete(K.retrain_pending_key(PID))
    job_id = enqueue_retrain(r, settings, PID)
    InProcessWorker([queue], connection=connection).work(burst=True, max_jobs=1,
                                                        logging_level="WARNING")
    job = Job.fetch(job_id, connection=connection)
    if job.get_status() != "finished":
        raise RuntimeError(f"retrain {job_id} {job.get_status()}: {job.latest_result()}")
    result, seconds = job.return_value(), (job.ended_at - job.started_at).total_seconds()
    queue.empty()  # its re-score and evaluation are not part of the retrain
    connection.close()
    return {"seconds": round(seconds, 3), **result["step_seconds"],
            "store_and_queue": round(seconds - result["train_seconds"], 3),
            "n_labels": result["n_labels"], "dawid_skene": result["dawid_skene"]}
