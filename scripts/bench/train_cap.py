"""The ranking model trained on at most ``retrain.max_train_items`` labels (issue 17): as
good as one trained on every label?  No Redis: the learning layer alone, as a retrain
calls it.

On the bundled generated pools (``learning.datasets``: classes10, hard, 10 classes, 30
features; embeddings384, 8 classes of 384-d vectors) of ``n`` labeled items plus a held-out
pool of ``HELD_OUT``, a ``TaskRanker`` as the default strategy builds it (logistic
regression, 5 members) is fitted on every label and on each capped set (the newest
``every_labels`` items and a uniform sample of the others, as ``queue/retrain.py`` takes
them).  Compared on the held-out pool: accuracy and log loss of the main model, and the
ranking it orders the queue by (margin uncertainty): the share of its ``TOP`` most
uncertain items that the all-labels model also puts there, beside the same share for a
model fitted on 90 % of the labels (how much the top moves anyway as labels come in).
The scikit-learn sets (digits, breast_cancer, wine, iris) hold fewer than 2,000 items, under
any cap: nothing changes for them.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from sklearn.metrics import log_loss

from taskrank.learning.datasets import make_classes10, make_embeddings384
from taskrank.learning.priority import Strategy
from taskrank.learning.ranker import TaskRanker
from taskrank.learning.uncertainty import margin

HELD_OUT = 10_000
TOP = 1000
NEWEST = Strategy().retrain.every_labels
POOLS: dict[str, Callable[[int, int], tuple[np.ndarray, np.ndarray]]] = {
    "classes10": lambda n, seed: make_classes10(n, random_state=seed),
    "embeddings384": lambda n, seed: make_embeddings384(n, random_state=seed)[:2],
}


def run(plan: list[tuple[str, int]], caps: list[int], seeds: list[int]) -> dict:
    """For each (pool, labels) of ``plan`` and seed: the all-labels model against each
    cap below the labels; means over the seeds."""
    out: dict = {"held_out": HELD_OUT, "top": TOP, "seeds": seeds, "runs": {}}
    for name, n in plan:
        trials = [_one(name, n, caps, seed) for seed in seeds]
        out["runs"][f"{name}-{n}"] = {key: _mean([trial[key] for trial in trials])
                                      for key in trials[0]}
    return out


def _one(name: str, n: int, caps: list[int], seed: int) -> dict:
    X, y = POOLS[name](n + HELD_OUT, seed)
    train, test = slice(0, n), slice(n, None)
    k = int(y.max()) + 1
    rng = np.random.default_rng(seed)
    every = _fitted(X[train], y[train], k)
    top = _top(every["model"].predict_proba(X[test]))
    result = {"all": _judged(every, X[test], y[test], top)}
    some = rng.choice(n, int(0.9 * n), replace=False)
    result["90%"] = _judged(_fitted(X[some], y[some], k), X[test], y[test], top)
    for cap in (cap for cap in caps if cap < n):
        rows = np.concatenate([np.arange(n - NEWEST, n),
                               rng.choice(n - NEWEST, cap - NEWEST, replace=False)])
        result[str(cap)] = _judged(_fitted(X[rows], y[rows], k), X[test], y[test], top)
    return result


def _fitted(X: np.ndarray, y: np.ndarray, k: int) -> dict:
    committee = Strategy().committee
    start = time.perf_counter()
    model = TaskRanker(model=committee.model, members=committee.members,
                       classes=list(range(k)), random_state=0).fit(X, y)
    return {"model": model, "fit_seconds": time.perf_counter() - start}


def _top(proba: np.ndarray) -> set[int]:
    """The ``TOP`` items the queue would serve first (most uncertain by margin)."""
    return set(np.argsort(-margin(proba), kind="stable")[:TOP].tolist())


def _judged(fitted: dict, X: np.ndarray, y: np.ndarray, top: set[int]) -> dict:
    proba = fitted["model"].predict_proba(X)
    return {"accuracy": float((proba.argmax(axis=1) == y).mean()),
            "log_loss": float(log_loss(y, proba, labels=list(range(proba.shape[1])))),
            "top_overlap": len(top & _top(proba)) / TOP,
            "fit_seconds": fitted["fit_seconds"]}


def _mean(values: list[dict]) -> dict:
    return {key: round(float(np.mean([value[key] for value in values])), 4)
            for key in values[0]}
