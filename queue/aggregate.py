"""After each counted label: the item's aggregated label and the experts' accuracy counts."""

from __future__ import annotations

import numpy as np
import redis

from taskrank.learning.aggregation import weighted_vote
from taskrank.queue import keys as K
from taskrank.queue.experts import GENERAL, load_expert, record_agreement


def aggregate_item(r: redis.Redis, project: dict, iid: str) -> tuple[str, float]:
    """Store the item's accuracy-weighted vote; on completion, learn from agreement."""
    pid = project["id"]
    pipe = r.pipeline()
    pipe.lrange(K.item_labels_key(pid, iid), 0, -1)
    pipe.hmget(K.item_key(pid, iid), "s", "g", "st")
    entries, (tags, gold, status) = pipe.execute()
    tags = tags.split(",") if tags else []
    votes = [entry.split("\t", 1) for entry in entries]
    label, confidence = vote(r, project, votes, tags)
    pipe = r.pipeline()
    pipe.hset(K.item_key(pid, iid), mapping={"al": label, "ac": confidence})
    if status == "labeled":
        pipe.zadd(K.labeled_key(pid), {iid: 0})  # score 0: ordered by id for export cursors
        pipe.hsetnx(K.item_key(pid, iid), "learned", 1)
    *_, first_completion = pipe.execute()
    if status == "labeled" and first_completion:
        _learn_from(r, votes, tags, gold or None, label)
    return label, confidence


def vote(r: redis.Redis, project: dict, votes: list[list[str]],
         tags: list[str]) -> tuple[str, float]:
    """Accuracy-weighted vote over ``[(expert, label)]`` with each expert's fit on ``tags``."""
    labels = project["labels"]
    experts = sorted({eid for eid, _ in votes})
    accuracy = np.array([_fit(load_expert(r, eid), tags) for eid in experts])
    index, confidence = weighted_vote(
        np.zeros(len(votes), dtype=int), np.array([experts.index(e) for e, _ in votes]),
        np.array([labels.index(lab) for _, lab in votes]), np.clip(accuracy, 0.01, 0.99),
        n_items=1, n_classes=len(labels))
    return labels[int(index[0])], round(float(confidence[0]), 6)


def _learn_from(r: redis.Redis, votes: list[list[str]], tags: list[str], gold: str | None,
                label: str) -> None:
    # A single label agrees with itself and says nothing about its expert: learn only from
    # gold items or from items labeled by at least two experts.
    if gold is None and len(votes) < 2:
        return
    truth = gold or label
    record_agreement(r, [(eid, tags, given == truth) for eid, given in votes])


def _fit(expert: dict, tags: list[str]) -> float:
    accuracy = expert["accuracy"]
    return float(np.mean([accuracy.get(tag, accuracy[GENERAL])["mean"] for tag in tags
                          or [GENERAL]]))
