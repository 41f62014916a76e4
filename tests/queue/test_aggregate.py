"""Aggregation in the store: weighted vote per label, Dawid–Skene over the project."""

from __future__ import annotations

import random

from taskrank.queue import keys as K
from taskrank.queue import tasks
from taskrank.queue.after_label import after_label
from taskrank.queue.aggregate import reaggregate_project
from taskrank.queue.experts import load_expert, put_expert
from taskrank.queue.items import ingest
from taskrank.queue.projects import create_project, get_project
from tests.cluster import both_backends

pytestmark = both_backends  # on the single Redis and on the Redis Cluster


def test_dawid_skene_beats_majority_vote_on_planted_experts(r, settings):
    """With two reliable and three near-random experts (all declaring the same level),
    Dawid–Skene over the project recovers more true labels than a plain majority vote and
    about as many as the running accuracy-weighted vote; a gold item is a check, never
    aggregated.  (No gate and no hold-back: every expert labels until the pool is done.)"""
    create_project(r, {"id": "p", "labels": ["a", "b"], "redundancy": 3, "strategy": {
        "qa": {"qualify": {"min_accuracy": 0.0}}, "routing": {"holdback_seconds": 0}}})
    project = get_project(r, "p")
    rng = random.Random(3)
    truth = {f"i{i}": rng.choice("ab") for i in range(120)}
    ingest(r, project, [{"id": iid, "predictions": {"m": [0.5, 0.5]},
                         **({"gold": truth[iid]} if iid == "i0" else {})} for iid in truth])
    accuracy = {"e0": 0.95, "e1": 0.95, "e2": 0.55, "e3": 0.55, "e4": 0.55}
    for eid in accuracy:
        put_expert(r, eid, {"skills": {}, "capacity": 1})
    progress = True
    while progress:
        progress = False
        for eid in rng.sample(list(accuracy), 5):
            task = tasks.claim(r, project, load_expert(r, eid), depth=64)
            if task:
                progress = True
                right = rng.random() < accuracy[eid]
                answer = truth[task["item_id"]] if right else "ba"[
                    "ab".index(truth[task["item_id"]])]
                _, body = tasks.submit_label(r, project, task["id"], answer, 1.0)
                after_label(r, project, body, settings)

    def correct():
        return sum(r.hget(K.item_key("p", iid), "al") == truth[iid] for iid in truth)

    def majority(iid):
        votes = [entry.split("\t")[1] for entry in r.lrange(K.item_labels_key("p", iid), 0, -1)]
        return max("ab", key=votes.count)

    majority_correct = sum(majority(iid) == truth[iid] for iid in truth)
    running_vote = correct()
    result = reaggregate_project(r, project)
    assert result["items"] == 119
    assert correct() > majority_correct
    assert correct() >= running_vote - 3
    assert r.hget(K.item_key("p", "i0"), "st") == "gold"
    assert r.zscore(K.labeled_key("p"), "i0") is None


def test_single_label_items_keep_their_label_on_imbalanced_classes(r, settings):
    """At one label per item, re-aggregation leaves every label as its expert gave it: on
    a 70/30 pool, Dawid-Skene's class prevalence used to turn them all into 'a'."""
    create_project(r, {"id": "p", "labels": ["a", "b"]})
    project = get_project(r, "p")
    rng = random.Random(0)
    truth = {f"i{i}": "a" if rng.random() < 0.7 else "b" for i in range(60)}
    ingest(r, project, [{"id": iid, "predictions": {"m": [0.5, 0.5]}} for iid in truth])
    for eid, level in (("e0", 0.7), ("e1", 0.6), ("e2", 0.65)):
        put_expert(r, eid, {"skills": {"x": level}, "capacity": 100})
    given = {}
    for turn in range(60):
        task = tasks.claim(r, project, load_expert(r, f"e{turn % 3}"), depth=64)
        answer = truth[task["item_id"]] if rng.random() < 0.8 else rng.choice("ab")
        _, body = tasks.submit_label(r, project, task["id"], answer, 1.0)
        after_label(r, project, body, settings)
        given[task["item_id"]] = answer
    result = reaggregate_project(r, project)
    assert result["changed"] == 0
    assert {iid: r.hget(K.item_key("p", iid), "al") for iid in given} == given
    assert set(given.values()) == {"a", "b"}
