"""Honest model quality: score model versions on exploration labels they never trained on.

CLAIM hands out a share of leases as exploration (items drawn uniformly from the expert's
eligible pending pool, whatever the model thinks); LABEL queues the item of each counted
exploration label on ``explore_labels_key``.  Each retrain, before it fits, scores the model
in use on those items (progressive validation) and records one batch on
``explore_results_key``.  Pooled over the newest batches, that is an unbiased estimate of
the accuracy of the versions in use, unlike cross-validation on the labeled items, which
the model itself picked.  It is measured against the aggregated expert label, so expert
mistakes count against the model.

Why no evaluated model ever trained on an item it is scored on (no leakage):
- a retrain reads its training set *before* it takes the queued items (``retrain`` calls
  ``evaluate_exploration`` after ``_training_set``), and every take empties the list;
- the model to evaluate is loaded *before* the take, so its own take came earlier still;
- an item enters the list only while it is not in the labeled set (LABEL checks, and a
  push-back here checks under WATCH), and the labeled set only grows.
So an item in the list when a retrain takes it was not labeled when the evaluated model
read its training set.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import redis

from taskrank.learning.quality import binned_accuracy, pooled_accuracy
from taskrank.queue import keys as K
from taskrank.queue.scoring import model_inputs, stored_item

if TYPE_CHECKING:
    from taskrank.queue.models import LoadedModel

# About 100 labels give a standard error near 0.04 at 80 % accuracy, yet stay recent
# enough that the estimate follows the model as it improves (older versions drop out).
WINDOW = 100
RESULTS_KEPT = 500  # evaluation batches kept, for the web page's learning curve
CURVE_POINT = 20  # labels pooled per point of the learning curve
EXPLORATION_BASIS = ("unbiased: accuracy of the model versions in use on exploration items "
                     "(drawn uniformly from the pending pool, independent of the model) "
                     "labeled after those versions were trained")
CV_BASIS = ("cross-validation on all labels: optimistic or pessimistic, the labels were "
            "picked by the model (selection bias)")


def evaluate_exploration(r: redis.Redis, project: dict,
                         load_model: Callable[[], LoadedModel | None]) -> dict | None:
    """Score the model in use on the queued exploration labels; the recorded batch or None.

    ``load_model()`` returns the current ``LoadedModel`` (or None): it is called before the
    take, see the module docstring.  Items without an aggregated label yet go back on the
    list for a later retrain.  Dying between the take and the record loses that batch of
    evaluations only (never a label: those are in the label stream and item hashes).
    """
    pid = project["id"]
    if not r.llen(K.explore_labels_key(pid)):
        return None  # the common case costs one LLEN, no model load
    model = load_model()
    ready = _labeled_only(r, pid, _take(r, pid))
    if model is None or not ready:
        return None  # no model yet: the first one trains on these labels instead
    record = _score(r, project, model, ready)
    if record is None:
        return None
    with r.pipeline() as pipe:
        pipe.lpush(K.explore_results_key(pid), json.dumps(record))
        pipe.ltrim(K.explore_results_key(pid), 0, RESULTS_KEPT - 1)
        pipe.execute()
    return record


def _take(r: redis.Redis, pid: str) -> list[str]:
    """Every queued item id, removed in one transaction (a label pushed meanwhile stays)."""
    with r.pipeline(transaction=True) as pipe:
        pipe.lrange(K.explore_labels_key(pid), 0, -1)
        pipe.delete(K.explore_labels_key(pid))
        ids, _ = pipe.execute()
    return list(dict.fromkeys(ids))  # two exploration labels of one item: score it once


def _labeled_only(r: redis.Redis, pid: str, ids: list[str]) -> list[str]:
    """The ids in the labeled set; the others go back on the list, checked and pushed in
    one transaction so that none is pushed back after it joined a training set."""
    if not ids:
        return []
    with r.pipeline() as pipe:
        while True:
            try:
                pipe.watch(K.labeled_key(pid))
                scores = pipe.zmscore(K.labeled_key(pid), ids)
                waiting = [iid for iid, score in zip(ids, scores, strict=True) if score is None]
                pipe.multi()
                if waiting:
                    pipe.rpush(K.explore_labels_key(pid), *waiting)
                pipe.execute()
                return [iid for iid, score in zip(ids, scores, strict=True)
                        if score is not None]
            except redis.WatchError:
                continue  # an item finished meanwhile: check again


def _score(r: redis.Redis, project: dict, model: LoadedModel, ids: list[str]) -> dict | None:
    """How many of ``ids`` the model predicts as their aggregated label."""
    pid, labels = project["id"], project["labels"]
    pipe = r.pipeline()
    for iid in ids:
        pipe.hmget(K.item_key(pid, iid), "p", "f", "al")
    items, truth = [], []
    for iid, (preds, feats, label) in zip(ids, pipe.execute(), strict=True):
        item = stored_item(iid, preds, feats)
        if label in labels and model.accepts(item):
            items.append(item)
            truth.append(labels.index(label))
    if not items:
        return None
    X = model_inputs(items, model.models, model.n_features, model.n_classes)
    correct = int(np.sum(model.ranker.predict(X) == np.asarray(truth)))
    return {"version": model.version, "n": len(items), "correct": correct,
            "n_labels": _trained_size(r, pid, model.version), "at": time.time()}


def _trained_size(r: redis.Redis, pid: str, version: int) -> int | None:
    """Labels the version was trained on, from the model history (None once pruned)."""
    for entry in r.lrange(K.model_history_key(pid), 0, -1):
        record = json.loads(entry)
        if record["version"] == version:
            return int(record["n_labels"])
    return None


def _results(r: redis.Redis, pid: str, count: int) -> list[dict]:
    """The newest ``count`` evaluation batches, newest first."""
    return [json.loads(entry) for entry in r.lrange(K.explore_results_key(pid), 0, count - 1)]


def exploration_estimate(r: redis.Redis, pid: str) -> dict:
    """The ``exploration`` block of ``GET /model``: accuracy pooled over the newest
    ``WINDOW`` exploration labels, its standard error, and which versions it covers."""
    batches = _results(r, pid, WINDOW)  # a batch holds >= 1 label: WINDOW batches suffice
    estimate = pooled_accuracy(np.array([b["correct"] for b in batches], dtype=int),
                               np.array([b["n"] for b in batches], dtype=int), WINDOW)
    pooled = batches[:estimate["batches"]]
    sized = [b for b in pooled if b.get("n_labels") is not None]
    mean_labels = (round(sum(b["n"] * b["n_labels"] for b in sized)
                         / sum(b["n"] for b in sized), 1) if sized else None)
    return {"accuracy": estimate["accuracy"], "std_error": estimate["std_error"],
            "n": estimate["n"], "window": WINDOW,
            "versions": sorted({b["version"] for b in pooled}),
            "mean_n_labels": mean_labels, "basis": EXPLORATION_BASIS}


def exploration_curve(r: redis.Redis, pid: str) -> list[dict]:
    """Learning-curve points of the exploration accuracy, oldest first, each pooling about
    ``CURVE_POINT`` labels: ``n_labels`` (mean trained on), ``accuracy``, ``std_error``, ``n``."""
    batches = [b for b in reversed(_results(r, pid, RESULTS_KEPT))
               if b.get("n_labels") is not None]
    points = binned_accuracy(np.array([b["n_labels"] for b in batches], dtype=float),
                             np.array([b["correct"] for b in batches], dtype=int),
                             np.array([b["n"] for b in batches], dtype=int), CURVE_POINT)
    return [{"n_labels": float(x), "accuracy": float(p), "std_error": float(se), "n": int(n)}
            for x, p, se, n in zip(points["n_labels"], points["accuracy"],
                                   points["std_error"], points["n"], strict=True)]
