"""RQ jobs that learn: retrain the ranking model on the aggregated labels, then evaluate it.

Neither grows with the project: the re-aggregation before a retrain reads the items new
since the last one (``queue/reaggregate.py``), and both jobs train on at most the
strategy's ``retrain.max_train_items`` labeled items.

Jobs take ids, load what they need, call ``taskrank.learning``, store the result and return a
small dict; exceptions reach RQ, which retries them (``RETRY``).
"""

from __future__ import annotations

import time

import numpy as np
import redis

from taskrank.learning.quality import cross_validated_metrics
from taskrank.learning.ranker import TaskRanker
from taskrank.queue import keys as K
from taskrank.queue import lua
from taskrank.queue.cadence import queue_now, retrain_started, start_time
from taskrank.queue.connection import rq_redis
from taskrank.queue.enqueue import JOB_TIMEOUT, RETRY, enqueue_once, job_redis, new_job_id
from taskrank.queue.events import flag_check_all, model_trained
from taskrank.queue.metrics import observe_retrain
from taskrank.queue.models import LoadedModel, current_ranker, set_metrics, store_model
from taskrank.queue.projects import get_project
from taskrank.queue.quality import evaluate_exploration
from taskrank.queue.reaggregate import reaggregate
from taskrank.queue.rescore import enqueue_rescore, top_jobs
from taskrank.queue.scoring import ItemInput, model_inputs, stored_item
from taskrank.queue.settings import Settings, current
from taskrank.queue.worker import low_queue, task_queue

SAMPLE_CHUNK = 5000  # ranks per call of the sampling script


def enqueue_retrain(r: redis.Redis, settings: Settings, pid: str,
                    min_interval: float = 0.0) -> str:
    """Queue a retrain unless one is already waiting: a burst of labels merges into one.
    With ``min_interval`` (the strategy's floor), it starts no sooner than that after the
    previous retrain started (queue/cadence.py); without, now, even one already waiting."""
    job_id = enqueue_once(r, settings, K.retrain_pending_key(pid), "retrain", retrain, pid,
                          at=start_time(r, pid, min_interval))
    if not min_interval:
        queue_now(task_queue(settings, rq_redis(r, settings)), job_id)
    return job_id


def retrain(pid: str) -> dict:
    """Fit the ranker on the aggregated labels, store it as a new version, re-score."""
    started = time.perf_counter()
    r = job_redis()
    # Clear the pending mark before reading labels: any label counted after this point
    # queues a new retrain, so the last label always reaches a model.
    retrain_started(r, pid)
    project = get_project(r, pid)
    trained_on = int(r.hget(K.counters_key(pid), "counted") or 0)
    aggregation, recent = reaggregate(r, project)
    flag_check_all(r, project, f"after re-aggregating {pid}")  # accuracies re-estimated
    aggregated = time.perf_counter()
    items, labels, weights = _training_set(r, project, recent, seed=trained_on)
    read = time.perf_counter()
    # After the training set is read, so the model in use never trained on what it is
    # scored on (see queue/quality.py).
    evaluate_exploration(r, project, lambda: current_ranker(r, project))
    strategy = project["strategy"]
    if len(items) < strategy["retrain"]["min_labels"] or len(set(labels)) < 2:
        return {"skipped": f"{len(items)} labeled items of {len(set(labels))} classes; need "
                           f"{strategy['retrain']['min_labels']} of at least 2 classes"}
    fitting = time.perf_counter()
    model = _fit(project, items, labels, weights)
    fitted = time.perf_counter()
    seconds = round(fitted - started, 4)  # aggregation and fit
    # The run's id is stored with the version: the queue views no longer show which model
    # scored a priority, so a client waits for this run to know the queue is re-ranked.
    run = new_job_id("rescore", pid)
    version = store_model(r, pid, model, {
        "n_labels": len(items), "trained_on": trained_on, "metrics": {},
        "model": strategy["committee"]["model"],
        "strategy_version": project["strategy_version"], "train_seconds": seconds,
        "rescore_job_id": run}, current().model_versions_kept)
    observe_retrain(r, pid, seconds)
    model_trained(r, pid)
    rescore_job = enqueue_rescore(r, pid, f"model v{version}", run=run) if version else None
    if version:
        # Cross-validation fits the ranker once per fold, ~4x the fit: on the low queue
        # once the queue is re-ranked, so it neither slows that down nor holds up a retrain.
        enqueue_evaluation(r, pid, version, after=top_jobs(r, pid, run))
    return {"version": version, "n_labels": len(items), "train_seconds": seconds,
            "rescore_job_id": rescore_job, "dawid_skene": aggregation,
            "step_seconds": {"reaggregate": round(aggregated - started, 4),
                             "training_set": round(read - aggregated, 4),
                             "fit": round(fitted - fitting, 4)}}


def enqueue_evaluation(r: redis.Redis, pid: str, version: int,
                       after: list[str] | None = None) -> str:
    """Queue the evaluation of ``version`` once the jobs ``after`` are done."""
    job_id = f"{new_job_id('evaluate', pid)}-v{version}"
    queue = low_queue(current(), rq_redis(r))
    # Ahead of the re-score's tail: the metrics come soon after the version, not after
    # the whole pool.
    queue.enqueue(evaluate_model, pid, version, job_id=job_id, retry=RETRY, at_front=True,
                  depends_on=after or None, job_timeout=JOB_TIMEOUT,
                  description=f"evaluate {pid} v{version}")
    return job_id


def evaluate_model(pid: str, version: int) -> dict:
    """Cross-validated metrics of model ``version`` (its ranker refitted per fold on the
    labels there are now, a uniform sample of at most ``retrain.max_train_items`` of them),
    stored with the version; skipped once a newer one is current, or while a retrain waits
    to train one (under a stream of labels, the version of its last retrain is evaluated:
    cross-validation costs ~5 fits, and a worker running it cannot start the next
    retrain)."""
    r = job_redis()
    project = get_project(r, pid)
    model = current_ranker(r, project)
    if model is None or model.version != version:
        return {"skipped": f"model v{version} is no longer current"}
    if r.exists(K.retrain_pending_key(pid)):
        return {"skipped": f"a retrain waits to replace model v{version}"}
    items, labels, weights = _training_set(r, project, [], seed=version)
    metrics = cross_validated_metrics(model.ranker, _inputs(model, items), labels, weights)
    set_metrics(r, pid, version, metrics)
    return {"version": version, "metrics": metrics}


def _training_set(r: redis.Redis, project: dict, recent: list[str],
                  seed: int) -> tuple[list[ItemInput], np.ndarray, np.ndarray]:
    """The labeled items to train on, their labels and weights (``_bounded_ids``): at most
    ``retrain.max_train_items``, or ``min_labels`` when that is more (so a retrain that has
    them always trains)."""
    pid, rule = project["id"], project["strategy"]["retrain"]
    ids = _bounded_ids(r, pid, recent, max(rule["max_train_items"], rule["min_labels"]), seed)
    pipe = r.pipeline(transaction=False)  # reads: no need to hold Redis for all of them
    for iid in ids:
        pipe.hmget(K.item_key(pid, iid), "p", "f", "al", "ac")
    items, labels, weights = [], [], []
    for iid, (preds, feats, label, confidence) in zip(ids, pipe.execute(), strict=True):
        if label in project["labels"]:
            items.append(stored_item(iid, preds, feats))
            labels.append(project["labels"].index(label))
            weights.append(max(float(confidence or 1.0), 1e-3))
    return items, np.array(labels, dtype=int), np.array(weights)


def _bounded_ids(r: redis.Redis, pid: str, recent: list[str], cap: int, seed: int) -> list[str]:
    """Every labeled item while there are at most ``cap``; beyond, the ``recent`` ones and
    a uniform sample (seeded) of the others, ``cap`` in all: the read and the fit stay
    bounded, and a model still learns what the newest labels teach."""
    total = r.zcard(K.labeled_key(pid))
    if total <= cap:
        return r.zrange(K.labeled_key(pid), 0, -1)
    rng = np.random.default_rng(seed)
    if len(recent) > cap:
        recent = sorted(rng.choice(recent, cap, replace=False).tolist())
    # Uniform by rank (the set is ordered by id); ``cap`` ranks, so that enough of them
    # miss the recent items.  In chunks: each call holds Redis a few milliseconds.
    ranks, new, older = rng.choice(total, cap, replace=False).tolist(), set(recent), []
    for start in range(0, cap, SAMPLE_CHUNK):
        members = lua.run(r, "members_at", pid, [K.labeled_key(pid)],
                          ranks[start:start + SAMPLE_CHUNK])
        older += [iid for iid in members if iid not in new]
    return recent + older[:cap - len(recent)]


def _fit(project: dict, items: list[ItemInput], labels: np.ndarray,
         weights: np.ndarray) -> LoadedModel:
    k = len(project["labels"])
    n_features = project.get("n_features") or 0
    if n_features and any(item.features is None for item in items):
        n_features = 0  # some labeled items lack features: learn from predictions only
    model = LoadedModel(None, list(project.get("models") or []), n_features, k, 0)
    committee = project["strategy"]["committee"]
    model.ranker = TaskRanker(model=committee["model"], members=committee["members"],
                              classes=list(range(k)), random_state=0)
    model.ranker.fit(_inputs(model, items), labels, sample_weight=weights)
    return model


def _inputs(model: LoadedModel, items: list[ItemInput]) -> np.ndarray:
    return model_inputs(items, model.models, model.n_features, model.n_classes)
