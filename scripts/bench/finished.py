"""Finished items written straight into Redis, for the retrain benchmark: what ingest, two
counted labels each and their aggregation leave behind (the item hash as UPSERT_ITEMS and
LABEL write it, its labels, the labeled set, the counters), in pipelines instead of a Lua
call per label, so a project of 1M finished items takes about a minute to build.

The labels come from ``EXPERTS``, one-coin experts of planted accuracies, two distinct
ones per item, so Dawid–Skene has real disagreements to weigh; each item's aggregated label
starts as its more accurate expert's answer (the weighted vote of two).  Not written: the
items' expert sets and the label stream (the retrain reads neither).
"""

from __future__ import annotations

import json
import time

import numpy as np
import redis

from taskrank.queue import keys as K
from taskrank.queue.experts import put_expert
from taskrank.scripts.bench.items import LABELS, SEED, make_items

EXPERTS = {f"expert-{i}": accuracy
           for i, accuracy in enumerate((0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6))}
CHUNK = 5000  # items per pipeline


def declare_crowd(r: redis.Redis) -> None:
    """The experts of ``EXPERTS``, declaring no skill."""
    for eid in EXPERTS:
        put_expert(r, eid, {"skills": {}, "capacity": 5})


def fill_finished(r: redis.Redis, pid: str, start: int, stop: int, seed: int = SEED) -> None:
    """Items ``start .. stop-1`` of ``make_items``, finished with two labels each."""
    for first in range(start, stop, CHUNK):
        _write_chunk(r, pid, first, min(CHUNK, stop - first), seed)


def crowd_labels(first: int, n: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """(experts (n, 2) as indexes of ``EXPERTS``, labels (n, 2)) of items ``first ..``."""
    rng = np.random.default_rng([seed, first, 1])
    accuracy, k = np.array(list(EXPERTS.values())), len(LABELS)
    who = np.argsort(rng.random((n, len(EXPERTS))), axis=1)[:, :2]  # two distinct experts
    truth = rng.integers(0, k, n)
    wrong = (truth[:, None] + rng.integers(1, k, (n, 2))) % k
    return who, np.where(rng.random((n, 2)) < accuracy[who], truth[:, None], wrong)


def _write_chunk(r: redis.Redis, pid: str, first: int, n: int, seed: int) -> None:
    items, (who, given) = make_items(first, n, seed), crowd_labels(first, n, seed)
    names, accuracy, now = list(EXPERTS), np.array(list(EXPERTS.values())), time.time()
    better = np.argmax(accuracy[who], axis=1)
    pipe = r.pipeline(transaction=False)
    for i, item in enumerate(items):
        winner = int(better[i])
        pipe.hset(K.item_key(pid, item["id"]), mapping={
            "p": json.dumps(item["predictions"], separators=(",", ":")), "f": "",
            "pl": json.dumps(item["payload"]), "s": "", "b": 0, "g": "", "pr": 0, "bd": "{}",
            "mv": 0, "sv": 1, "cl": -1, "ua": now, "ca": now, "out": 0, "done": 2, "want": 2,
            "st": "labeled", "learned": 1, "al": LABELS[given[i, winner]],
            "ac": float(accuracy[who[i, winner]])})
        pipe.rpush(K.item_labels_key(pid, item["id"]),
                   *[f"{names[who[i, j]]}\t{LABELS[given[i, j]]}" for j in range(2)])
    ids = [item["id"] for item in items]
    pipe.zadd(K.labeled_key(pid), dict.fromkeys(ids, 0))
    pipe.sadd(K.items_key(pid), *ids)
    pipe.hincrby(K.counters_key(pid), "n:labeled", n)
    pipe.hincrby(K.counters_key(pid), "counted", 2 * n)
    pipe.execute()
