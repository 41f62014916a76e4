"""Retrain and evaluation jobs (queue/retrain.py): labels trigger retrains on RQ, a new model
re-ranks the pending pool, cross-validation follows the re-score."""

from __future__ import annotations

from collections import Counter

import numpy as np
from rq.job import Job

from taskrank.queue import keys as K
from taskrank.queue import tasks
from taskrank.queue.after_label import after_label
from taskrank.queue.connection import connect_rq
from taskrank.queue.experts import load_expert
from taskrank.queue.models import current_ranker, model_info
from taskrank.queue.projects import get_project
from taskrank.queue.reaggregate import request_full
from taskrank.queue.retrain import _bounded_ids, enqueue_evaluation, enqueue_retrain
from taskrank.queue.worker import InProcessWorker, low_queue, task_queue
from tests.invariants import not_rescored, pooled
from tests.pools import Crowd, features_project


def _label_next(r, settings, truth, count):
    project, expert = get_project(r, "p"), load_expert(r, "e")
    for _ in range(count):
        task = tasks.claim(r, project, expert, depth=32)
        label = project["labels"][truth[task["item_id"]]]
        status, answer = tasks.submit_label(r, project, task["id"], label, 1.0)
        assert status == 201
        after_label(r, project, answer, settings)


def test_labels_train_a_model_and_boundary_items_rise(r, settings, run_jobs):
    """After labels stream in, a model version appears and the top of the queue sits near
    the learned decision boundary (x0 + x1 = 0), as uncertainty sampling predicts."""
    items, truth = features_project(r)
    features = {item["id"]: np.array(item["features"]) for item in items}
    assert model_info(r, "p")["version"] is None
    _label_next(r, settings, truth, 30)
    run_jobs()
    info = model_info(r, "p")
    assert info["version"] is not None and info["n_labels"] >= 10
    assert info["metrics"]["accuracy"] is not None
    live = pooled(r, "p")
    top = sorted(live, key=live.get, reverse=True)[:20]
    pending = sorted(live)
    distance = {iid: abs(features[iid].sum()) / np.sqrt(2) for iid in pending}
    assert np.mean([distance[i] for i in top]) < 0.5 * np.mean(list(distance.values()))
    assert current_ranker(r, get_project(r, "p")).version == info["version"]
    assert not not_rescored(r, get_project(r, "p"), pending), \
        "every pending item was re-scored by the new model"


def test_burst_of_labels_merges_into_few_retrains(r, settings, run_jobs):
    """500 labels in a burst queue a handful of retrains, and the final model has seen
    the last label."""
    _, truth = features_project(r, n=600, every=1, min_labels=1)
    _label_next(r, settings, truth, 500)
    queued = [jid for jid in task_queue(settings).job_ids if jid.startswith("retrain-")]
    assert 1 <= len(queued) <= 3
    run_jobs()
    assert model_info(r, "p")["n_labels"] == 500


def test_cross_validation_runs_after_the_re_score_and_skips_a_superseded_version(
        r, settings, run_jobs):
    """The retrain stores its version without metrics and queues the re-score's top on
    the main queue; the evaluation waits for the top, then goes to the low queue ahead
    of the tail; it fills the metrics in, and does nothing for a version that is no
    longer current."""
    _, truth = features_project(r, every=10**6)
    run_jobs()  # the pool map of the ingest
    _label_next(r, settings, truth, 20)
    enqueue_retrain(r, settings, "p")
    connection = connect_rq(settings)
    queue = task_queue(settings, connection)
    low = low_queue(settings, connection)

    def one_job() -> None:
        InProcessWorker([queue], connection=connection).work(burst=True, max_jobs=1,
                                                           logging_level="WARNING")

    one_job()  # the retrain
    assert model_info(r, "p")["metrics"] == {}
    assert queue.job_ids and all(job.startswith("rescore-") for job in queue.job_ids)
    assert low.job_ids == [] and any(
        job.startswith("evaluate-") for job in low.deferred_job_registry.get_job_ids())
    one_job()  # the top of the re-score
    assert low.job_ids[0].startswith("evaluate-")
    run_jobs()
    assert model_info(r, "p")["metrics"]["accuracy"] is not None
    _label_next(r, settings, truth, 5)
    enqueue_retrain(r, settings, "p")
    run_jobs()
    job_id = enqueue_evaluation(r, "p", 1)
    run_jobs()
    assert Job.fetch(job_id, connection=connection).return_value() == {
        "skipped": "model v1 is no longer current"}


def _calls(r) -> Counter:
    """Commands Redis ran since its statistics were reset, by name."""
    return Counter({name.removeprefix("cmdstat_"): stats["calls"]
                    for name, stats in r.info("commandstats").items()})


def _one_job(settings) -> None:
    connection = connect_rq(settings)
    InProcessWorker([task_queue(settings, connection)], connection=connection).work(
        burst=True, max_jobs=1, logging_level="WARNING")


def test_a_retrain_reads_the_new_labels_not_the_whole_project(r, settings, run_jobs):
    """With 600 or 2,400 finished items, a retrain after the same 10 new items runs the same
    reads, counted by Redis itself: the new items' labels and hashes, and a training sample
    of retrain.max_train_items; so does the evaluation after it.  A full pass, asked for,
    reads every item."""
    reads, full = {}, {}
    for pid, n in (("small", 600), ("big", 2400)):
        crowd = Crowd(r, settings, redundancy=2, pid=pid, max_train_items=200)
        crowd.add(n)
        enqueue_retrain(r, settings, pid)
        run_jobs()  # the first retrain: a full pass
        crowd.add(10)
        run_jobs()  # anything the new labels queued
        r.config_resetstat()
        enqueue_retrain(r, settings, pid)
        _one_job(settings)
        reads[pid] = _calls(r)
        r.config_resetstat()
        run_jobs()  # its re-score and evaluation
        reads[pid + "-after"] = _calls(r)
        request_full(r, pid)
        r.config_resetstat()
        enqueue_retrain(r, settings, pid)
        _one_job(settings)
        full[pid] = _calls(r)["lrange"]
        assert model_info(r, pid)["n_labels"] == 200
    for command in ("lrange", "hmget", "zrange", "smembers", "get"):  # (RQ's vary: HGETALL)
        assert reads["small"][command] == reads["big"][command], command
        assert reads["small-after"][command] == reads["big-after"][command], command
    assert reads["big"]["lrange"] <= 10 + 5  # the new items' labels, and RQ's own
    assert reads["big"]["hmget"] <= 10 + 200 + 5  # the new items, the training sample
    assert reads["big-after"]["hmget"] <= 200 + 5  # the evaluation's sample
    assert full["small"] >= 610 and full["big"] >= 2410


def test_above_the_cap_the_training_set_is_the_new_labels_and_a_seeded_sample(r, settings):
    """Up to retrain.max_train_items every labeled item trains; beyond, exactly that many:
    every new one and distinct older ones, the same for the same seed."""
    crowd = Crowd(r, settings, redundancy=1)
    crowd.add(100)
    labeled = r.zrange(K.labeled_key("p"), 0, -1)
    assert len(labeled) == 100 and _bounded_ids(r, "p", labeled[-5:], 100, 0) == labeled
    crowd.add(200)
    recent = sorted(r.smembers(K.relabeled_key("p")))[:12]
    ids = _bounded_ids(r, "p", recent, 100, seed=7)
    assert len(ids) == len(set(ids)) == 100 and ids[:12] == recent
    assert set(ids) <= set(r.zrange(K.labeled_key("p"), 0, -1))
    assert ids == _bounded_ids(r, "p", recent, 100, seed=7)
    assert ids != _bounded_ids(r, "p", recent, 100, seed=8)
    assert len(_bounded_ids(r, "p", sorted(r.smembers(K.relabeled_key("p"))), 100, 1)) == 100


def test_cross_validation_is_skipped_while_a_retrain_waits(r, settings, run_jobs):
    """Under a stream of labels a retrain always waits: the current version's evaluation
    is skipped (it would hold the worker from that retrain); the last one is evaluated."""
    _, truth = features_project(r, every=10**6)
    run_jobs()
    _label_next(r, settings, truth, 20)
    enqueue_retrain(r, settings, "p")
    run_jobs()
    r.set(K.retrain_pending_key("p"), "retrain-00000000-70")
    job_id = enqueue_evaluation(r, "p", 1)
    run_jobs()
    assert Job.fetch(job_id, connection=connect_rq(settings)).return_value() == {
        "skipped": "a retrain waits to replace model v1"}
