"""Label -> re-ranked queue (DESIGN §7: p95 <= 5 s at 100k pending, <= 2 s at 1M): the
retrain and the top of the re-score it triggers, timed from the label that asks for a
retrain until the run is re-ranked (its top done: ``reranked`` in its progress), and on to
the whole pool re-scored (the run finished), with 2 ``taskrank worker`` processes.

A retrain is asked every ``retrain.every_labels`` (the default strategy's) counted labels;
each trial labels all but one of them untimed, then times the last label, the retrain job
and its re-score run.  Trials come in pairs: the first starts with the workers idle and is
followed as soon as it is re-ranked by the second, whose retrain and top then run while
the first one's tail is still being re-scored (which the second supersedes); the second
is followed until its whole pool is re-scored.  The retrain is asked for as a label's
follow-up asks for it, in a project whose ``retrain.min_interval_seconds`` is 0: the floor
(a cadence choice, not work) is not part of the figure.
"""

from __future__ import annotations

import time

import redis

from taskrank.learning.priority import Strategy
from taskrank.queue import keys as K
from taskrank.queue.after_label import maybe_retrain
from taskrank.queue.projects import get_project
from taskrank.queue.settings import Settings
from taskrank.scripts.bench.data import new_project, prefill
from taskrank.scripts.bench.loops import percentiles
from taskrank.scripts.bench.machine import settle
from taskrank.scripts.bench.processes import fresh_redis, rq_workers
from taskrank.scripts.bench.rescore import (
    PID,
    label_some,
    poll,
    train_model,
    wait_rescore,
)

EVERY_LABELS = Strategy().retrain.every_labels


def run(pools: list[int], trials: int, workers: int = 2, fsync: str = "always") -> dict:
    """Label -> re-ranked and label -> whole pool re-scored at each pool size."""
    return {"workers": workers, "by_pool": {str(pool): one_pool(pool, trials, workers, fsync)
                                            for pool in pools}}


def one_pool(pool: int, trials: int, workers: int, fsync: str) -> dict:
    """``trials`` retrains (in pairs, see the module) on a fresh pool of ``pool`` items."""
    with fresh_redis(fsync) as (settings, r):
        # No floor: labels here ask for a retrain only once the last one re-ranked.
        new_project(r, PID, strategy={"retrain": {"min_interval_seconds": 0}})
        prefill(settings, PID, 0, pool)
        with rq_workers(settings, workers):
            first = train_model(settings, r)  # the first model: later ones are retrains
            runs = []
            for _ in range(max(1, trials // 2)):
                settle(r)  # no rewrite of the append-only file forked beside the trials
                runs.append(one_trial(settings, r, whole=False) | {"tail_running": False})
                runs.append(one_trial(settings, r, whole=True) | {"tail_running": True})
    reranked = percentiles([trial["reranked_seconds"] for trial in runs])
    whole = percentiles([trial["whole_seconds"] for trial in runs if "whole_seconds" in trial])
    return {"pool": pool, "first_model": first, "trials": runs,
            "reranked_seconds": reranked, "whole_pool_seconds": whole,
            "p50_seconds": reranked["p50"], "p95_seconds": reranked["p95"]}


def one_trial(settings: Settings, r: redis.Redis, whole: bool) -> dict:
    """EVERY_LABELS - 1 labels untimed, then the last one, the retrain it asks for (as the
    label's follow-up asks for it) and the re-rank, timed (and on until the whole pool is
    re-scored with ``whole``)."""
    label_some(r, EVERY_LABELS - 1)
    version = _model(r)[0]
    start = time.perf_counter()
    label_some(r, 1)
    maybe_retrain(r, get_project(r, PID), EVERY_LABELS, settings)
    (_, run_id), _ = poll(lambda: _model(r) if _model(r)[0] != version else None,
                          "the retrain", interval=0.01)
    retrained = time.perf_counter() - start
    progress, _ = wait_rescore(settings, r, run_id, "reranked")
    out = {"reranked_seconds": round(time.perf_counter() - start, 3),
           "label_to_model_seconds": round(retrained, 3),
           "window_stale": progress["window_stale"],
           "items_when_reranked": progress["items_done"]}
    if whole:
        progress, _ = wait_rescore(settings, r, run_id)
        out |= {"whole_seconds": round(time.perf_counter() - start, 3),
                "items": progress["items_done"], "chunks": progress["chunks"]}
    return out


def _model(r: redis.Redis) -> tuple[str | None, str | None]:
    """The current model version and the re-score run that applies it."""
    return tuple(r.hmget(K.model_meta_key(PID), "version", "rescore_job_id"))
