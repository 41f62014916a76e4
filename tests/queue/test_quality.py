"""Exploration labels: LABEL queues them, a retrain scores the model in use on them, and
``GET /model``'s exploration block pools the results."""

from __future__ import annotations

import json

import numpy as np
import pytest

from taskrank.queue import keys as K
from taskrank.queue import tasks
from taskrank.queue.after_label import after_label
from taskrank.queue.experts import load_expert, put_expert
from taskrank.queue.items import ingest
from taskrank.queue.models import current_ranker, model_info
from taskrank.queue.projects import create_project, get_project, update_project
from taskrank.queue.quality import CV_BASIS, EXPLORATION_BASIS, exploration_curve
from taskrank.queue.retrain import enqueue_retrain
from taskrank.queue.scoring import model_inputs, stored_item
from tests.pools import NO_CHECKS


def _setup(r, n=200, seed=0):
    """Project 'p' over 2-d items whose true class is the sign of x0 + x1; expert 'e'."""
    create_project(r, {"id": "p", "labels": ["a", "b"], "strategy": {
        "retrain": {"every_labels": 1000, "min_labels": 10}, **NO_CHECKS}})
    X = np.random.default_rng(seed).normal(size=(n, 2))
    ingest(r, get_project(r, "p"), [{"id": f"i{i}", "features": X[i].round(4).tolist()}
                                    for i in range(n)])
    put_expert(r, "e", {"skills": {}, "capacity": 1000})
    return {f"i{i}": int(X[i].sum() > 0) for i in range(n)}


def _claim(r, explore=False):
    """Lease the next task to 'e'; ``explore`` marks it as CLAIM marks exploration leases."""
    task = tasks.claim(r, get_project(r, "p"), load_expert(r, "e"), depth=32)
    if explore:
        r.hset(K.task_key("p", task["id"]), "ex", 1)
    return task


def _label(r, task, label, **kwargs):
    return tasks.submit_label(r, get_project(r, "p"), task["id"], label, 1.0, **kwargs)


def _train(r, settings, run_jobs, truth, count=30):
    """Label ``count`` items truthfully (no exploration) and train model v1 on them."""
    for _ in range(count):
        task = _claim(r)
        assert _label(r, task, "ab"[truth[task["item_id"]]])[0] == 201
    _retrain(r, settings, run_jobs)
    assert model_info(r, "p")["version"] == 1


def _retrain(r, settings, run_jobs):
    enqueue_retrain(r, settings, "p")
    run_jobs()


def _predict(r, ids):
    """The current model's class index for each item."""
    model = current_ranker(r, get_project(r, "p"))
    items = [stored_item(iid, *r.hmget(K.item_key("p", iid), "p", "f")) for iid in ids]
    X = model_inputs(items, model.models, model.n_features, model.n_classes)
    return [int(c) for c in model.ranker.predict(X)]


def _queued(r):
    return r.lrange(K.explore_labels_key("p"), 0, -1)


def _records(r):
    return [json.loads(entry) for entry in r.lrange(K.explore_results_key("p"), 0, -1)]


def test_label_queues_only_counted_exploration_labels(r):
    """Counted exploration labels are queued once; ordinary, late, repeated and replayed
    labels are not."""
    _setup(r)
    ordinary, explored, late = _claim(r), _claim(r, explore=True), _claim(r, explore=True)
    replayed = _claim(r, explore=True)
    assert _label(r, ordinary, "a")[0] == 201
    assert _label(r, explored, "b")[0] == 201
    assert _label(r, explored, "a")[0] == 409  # already labeled
    expiry = float(r.hget(K.task_key("p", late["id"]), "exp"))
    assert _label(r, late, "a", now=expiry + 1)[0] == 409  # recorded, not counted
    for _ in range(2):
        assert _label(r, replayed, "a", idempotency_key="k1")[0] == 201
    assert _queued(r) == [explored["item_id"], replayed["item_id"]]


def test_retrain_scores_the_model_in_use_on_exploration_labels(r, settings, run_jobs):
    """v1 is scored on 10 exploration labels given after it was trained, chosen so that it
    gets exactly 7 right; the record and the pooled estimate say so."""
    _train(r, settings, run_jobs, _setup(r))
    explored = [_claim(r, explore=True) for _ in range(10)]
    predicted = _predict(r, [task["item_id"] for task in explored])
    for n, (task, guess) in enumerate(zip(explored, predicted, strict=True)):
        assert _label(r, task, "ab"[guess if n < 7 else 1 - guess])[0] == 201
    _retrain(r, settings, run_jobs)
    [record] = _records(r)
    assert record.pop("at") > 0
    assert record == {"version": 1, "n": 10, "correct": 7, "n_labels": 30}
    assert _queued(r) == []
    info = model_info(r, "p")
    assert info["version"] == 2 and info["metrics_basis"] == CV_BASIS
    assert info["exploration"] == {"accuracy": 0.7, "std_error": 0.1281, "n": 10,
                                   "window": 100, "versions": [1], "mean_n_labels": 30.0,
                                   "basis": EXPLORATION_BASIS}
    assert exploration_curve(r, "p") == [{"n_labels": 30.0, "accuracy": 0.7,
                                          "std_error": pytest.approx(0.1281, abs=1e-4),
                                          "n": 10}]


def test_unfinished_exploration_item_waits_for_its_aggregated_label(r, settings, run_jobs):
    """An exploration label on an item that wants a second label goes back on the list,
    and is scored (by the model in use, which never saw it) once the item is finished."""
    _train(r, settings, run_jobs, _setup(r))
    update_project(r, "p", {"redundancy": 2})
    ingest(r, get_project(r, "p"), [{"id": "wide", "features": [3.0, 3.0], "boost": 1e6}])
    first = _claim(r, explore=True)
    assert first["item_id"] == "wide" and _label(r, first, "b")[0] == 201
    _retrain(r, settings, run_jobs)
    assert _queued(r) == ["wide"] and _records(r) == []
    put_expert(r, "e2", {"skills": {}, "capacity": 10})
    second = tasks.claim(r, get_project(r, "p"), load_expert(r, "e2"), depth=32)
    status, answer = _label(r, second, "b")
    assert second["item_id"] == "wide" and status == 201
    after_label(r, get_project(r, "p"), answer, settings)
    _retrain(r, settings, run_jobs)
    [record] = _records(r)
    assert (record["version"], record["n"], record["correct"]) == (2, 1, 1)


def test_before_any_model_exploration_labels_are_left_to_training(r, settings, run_jobs):
    """With no model yet, a retrain takes the queued labels without scoring them: the
    first model trains on them instead."""
    truth = _setup(r)
    for _ in range(12):
        task = _claim(r, explore=True)
        _label(r, task, "ab"[truth[task["item_id"]]])
    assert len(_queued(r)) == 12
    _retrain(r, settings, run_jobs)
    assert _queued(r) == [] and _records(r) == []
    assert model_info(r, "p")["exploration"]["n"] == 0


def test_model_info_before_training_has_an_empty_exploration_block(r):
    """Before training: version null, exploration accuracy and error null, n 0."""
    _setup(r)
    info = model_info(r, "p")
    assert info["version"] is None and info["metrics"] == {}
    assert info["metrics_basis"] == CV_BASIS
    assert info["exploration"] == {"accuracy": None, "std_error": None, "n": 0,
                                   "window": 100, "versions": [], "mean_n_labels": None,
                                   "basis": EXPLORATION_BASIS}


def test_real_exploration_claims_feed_the_unbiased_estimate(r, settings, run_jobs):
    """With strategy.explore.share 1, every claim after the first model is drawn by CLAIM
    itself (no test marking): its labels reach GET /model's exploration block."""
    truth = _setup(r)
    update_project(r, "p", {"strategy": {"explore": {"share": 1.0}, **NO_CHECKS}})
    _train(r, settings, run_jobs, truth)
    explored = []
    for _ in range(12):
        task = _claim(r)
        explored.append(task["exploration"])
        assert _label(r, task, "ab"[truth[task["item_id"]]])[0] == 201
    assert all(explored)
    _retrain(r, settings, run_jobs)
    estimate = model_info(r, "p")["exploration"]
    assert estimate["n"] == 12 and estimate["versions"] == [1]
    assert 0.0 <= estimate["accuracy"] <= 1.0
