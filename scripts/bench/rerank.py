"""Label -> re-ranked queue (DESIGN §7: 100k pool, p95 <= 5 s): the retrain and the
re-score it triggers, timed from the label that asks for a retrain to the last re-scored
chunk, with 2 ``taskrank worker`` processes.

A retrain is asked every ``retrain.every_labels`` (the default strategy's) counted labels;
each trial labels all but one of them untimed, then times the last label, the retrain job
and its re-score run.
"""

from __future__ import annotations

import time

import redis

from taskrank.learning.priority import Strategy
from taskrank.queue.retrain import enqueue_retrain
from taskrank.queue.settings import Settings
from taskrank.scripts.bench.data import new_project, prefill
from taskrank.scripts.bench.loops import percentiles
from taskrank.scripts.bench.processes import fresh_redis, rq_workers
from taskrank.scripts.bench.rescore import (
    PID,
    label_some,
    train_model,
    wait_job,
    wait_rescore,
)

EVERY_LABELS = Strategy().retrain.every_labels


def run(pool: int, trials: int, workers: int = 2, fsync: str = "always") -> dict:
    """Seconds from label to re-ranked queue for ``trials`` retrains on a ``pool`` of items."""
    with fresh_redis(fsync) as (settings, r):
        new_project(r, PID)
        prefill(settings, PID, 0, pool)
        with rq_workers(settings, workers):
            first = train_model(settings, r)  # the first model: later ones are retrains
            runs = [one_trial(settings, r) for _ in range(trials)]
    stats = percentiles([run["seconds"] for run in runs])
    return {"pool": pool, "workers": workers, "trials": runs, "first_model": first,
            "p50_seconds": stats["p50"], "p95_seconds": stats["p95"]}


def one_trial(settings: Settings, r: redis.Redis) -> dict:
    """EVERY_LABELS - 1 labels untimed, then the last through retrain and re-score, timed."""
    label_some(r, EVERY_LABELS - 1)
    start = time.perf_counter()
    label_some(r, 1)
    result = wait_job(settings, enqueue_retrain(r, settings, PID))
    retrained = time.perf_counter() - start
    if not result.get("rescore_job_id"):
        raise RuntimeError(f"the retrain did not re-score: {result}")
    _, busy = wait_rescore(settings, r, result["rescore_job_id"])
    return {"seconds": round(time.perf_counter() - start, 3),
            "label_and_retrain_seconds": round(retrained, 3), "busy_answers_to_poller": busy}

