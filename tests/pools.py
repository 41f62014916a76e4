"""Small projects shared by the queue tests: items in every skill pattern (the pool-set
tests), items whose class is the sign of x0 + x1 (the retrain and re-score tests), items
labeled by a simulated crowd (the re-aggregation tests)."""

from __future__ import annotations

import random

import numpy as np

from taskrank.queue import keys as K
from taskrank.queue.experts import put_expert
from taskrank.queue.items import ingest
from taskrank.queue.label_import import finish_import, import_labels
from taskrank.queue.projects import create_project, get_project

SKILLS = [[], ["x"], ["y"], ["x", "y"]]

# A project whose labels all go where the test sends them: no spot checks, no gate, no
# hold-back (tests that count labels or retrains).
NO_CHECKS = {"qa": {"review_rate": 0.0, "qualify": {"min_accuracy": 0.0}},
             "routing": {"holdback_seconds": 0.0}}


def tagged_project(r, n: int, seed: int, **settings: object) -> dict:
    """Project 'p' (labels a, b; retrains only when asked) with ``n`` items of 2-d features
    and one supplied model, a quarter in each skill pattern of ``SKILLS``; experts e1 and
    e2 hold both skills."""
    create_project(r, {"id": "p", "labels": ["a", "b"], **settings, "strategy": {
        "retrain": {"every_labels": 10**6, "min_labels": 10}}})
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2)).round(4)
    ingest(r, get_project(r, "p"), [
        {"id": f"i{i}", "features": X[i].tolist(), "skills": SKILLS[i % 4],
         "predictions": {"m": [round(float(p), 4), round(1 - round(float(p), 4), 4)]}}
        for i, p in enumerate(rng.uniform(0.05, 0.95, n))])
    put_expert(r, "e1", {"skills": {"x": 0.9, "y": 0.9}, "capacity": 100})
    put_expert(r, "e2", {"skills": {"x": 0.8, "y": 0.8}, "capacity": 100})
    return get_project(r, "p")


def _features_pool(n: int, seed: int = 0) -> tuple[list[dict], dict[str, int]]:
    """Items with 2-d features; the true class is the sign of x0 + x1."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    truth = {f"i{i}": int(X[i].sum() > 0) for i in range(n)}
    items = [{"id": f"i{i}", "features": X[i].round(4).tolist()} for i in range(n)]
    return items, truth


def features_project(r, n: int = 300, every: int = 10, min_labels: int = 10,
                     seed: int = 0) -> tuple[list[dict], dict[str, int]]:
    """Project 'p' (labels a, b; a retrain every ``every`` labels) with ``n`` items of 2-d
    features, whose true class is the sign of x0 + x1, and expert 'e' (no skills, capacity
    1000); returns the items and the true class of each."""
    create_project(r, {"id": "p", "labels": ["a", "b"], "strategy": {
        "retrain": {"every_labels": every, "min_labels": min_labels}, **NO_CHECKS}})
    items, truth = _features_pool(n, seed)
    for start in range(0, n, 1000):
        ingest(r, get_project(r, "p"), items[start:start + 1000])
    put_expert(r, "e", {"skills": {}, "capacity": 1000})
    return items, truth


LETTERS = ["a", "b", "c"]
# Planted accuracy of each expert per skill: some good at one skill only.
PLANTED = {"e0": {"x": 0.95, "y": 0.6}, "e1": {"x": 0.6, "y": 0.9},
           "e2": {"x": 0.85, "y": 0.8}, "e3": {"x": 0.7, "y": 0.65}, "e4": {"x": 0.75, "y": 0.95}}


class Crowd:
    """A project whose items get labels from simulated one-coin experts (per skill), brought
    in without leases in batches, each batch followed up as the server does."""

    def __init__(self, r, settings, redundancy: int, pid: str = "p", skills=("x", "y"),
                 seed: int = 0, **retrain: int):
        self.r, self.settings, self.pid, self.skills = r, settings, pid, skills
        self.rng = random.Random(seed)
        create_project(r, {"id": pid, "labels": LETTERS, "redundancy": redundancy,
                           "strategy": {"retrain": {"every_labels": 10**6, **retrain}}})
        for eid in PLANTED:
            put_expert(r, eid, {"skills": {skill: 0.7 for skill in skills}, "capacity": 5})
        self.redundancy, self.truth, self.count = redundancy, {}, 0

    @property
    def project(self) -> dict:
        return get_project(self.r, self.pid)

    def add(self, n: int) -> list[str]:
        """``n`` new items, each labeled by ``redundancy`` distinct experts."""
        first, self.count = self.count, self.count + n
        ids = [f"i{i:05d}" for i in range(first, self.count)]
        items = [{"id": iid, "predictions": {"m": self._prediction()},
                  "skills": [self.skills[i % len(self.skills)]]} for i, iid in enumerate(ids)]
        for start in range(0, n, 1000):
            ingest(self.r, self.project, items[start:start + 1000])
        records = []
        for item in items:
            truth = self.truth[item["id"]] = self.rng.choice(LETTERS)
            for eid in self.rng.sample(sorted(PLANTED), self.redundancy):
                right = self.rng.random() < PLANTED[eid][item["skills"][0]]
                wrong = self.rng.choice([c for c in LETTERS if c != truth])
                records.append({"item_id": item["id"], "expert_id": eid,
                                "label": truth if right else wrong})
        for start in range(0, len(records), 1000):
            result = import_labels(self.r, self.project, records[start:start + 1000])
            finish_import(self.r, self.project, result, self.settings)
        return ids

    def _prediction(self) -> list[float]:
        first = round(self.rng.uniform(0.2, 0.6), 4)
        second = round((1.0 - first) * self.rng.random(), 4)
        return [first, second, round(1.0 - first - second, 4)]

    def labels(self) -> dict[str, str]:
        pipe = self.r.pipeline()
        for iid in self.truth:
            pipe.hget(K.item_key(self.pid, iid), "al")
        return dict(zip(self.truth, pipe.execute(), strict=True))

    def accuracies(self) -> dict[tuple[str, str], float]:
        """What routing learned from Dawid–Skene: right / (right + wrong) per (expert, skill)."""
        out = {}
        for eid in PLANTED:
            fields = self.r.hgetall(K.expert_skill_key(self.pid, eid))
            for skill in self.skills:
                right, wrong = float(fields[f"a:{skill}"]), float(fields[f"d:{skill}"])
                out[(eid, skill)] = right / (right + wrong)
        return out
