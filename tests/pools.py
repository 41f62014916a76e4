"""Small projects shared by the queue tests: items in every skill pattern (the pool-set
tests), items whose class is the sign of x0 + x1 (the retrain and re-score tests)."""

from __future__ import annotations

import numpy as np

from taskrank.queue.experts import put_expert
from taskrank.queue.items import ingest
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
