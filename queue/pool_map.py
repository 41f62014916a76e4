"""The project's pool map: k-means clusters of the whole pending pool, refitted as it grows.

An RQ job (:func:`map_pool`) fits ``learning.coverage.PoolMap`` on a reference sample of
the pending items, stores it, then re-scores the pool so every pending item gets its
coverage priority (the cold-start order) and its cluster id (``cl`` in the item hash, read
by the claim for diversity).  Items ingested later are placed with the stored map at once.
"""

from __future__ import annotations

import base64
import hashlib
import pickle
import time
from dataclasses import dataclass

import numpy as np
import redis

from taskrank.learning.coverage import PoolMap, coverage, fit_pool_map
from taskrank.queue import keys as K
from taskrank.queue.scoring import ItemInput, model_inputs, stored_item

NO_CLUSTER = -1
MIN_ITEMS = 2  # fewer pending items than this: nothing to cover yet


@dataclass
class LoadedPoolMap:
    """A fitted pool map with the inputs it was fitted on."""

    pool_map: PoolMap
    models: list[str]  # supplied models, in input order (when fitted on predictions)
    n_features: int  # 0 when fitted on predictions
    n_classes: int
    version: int
    n_items: int  # items in the project when it was fitted

    def inputs(self, items: list[ItemInput]) -> tuple[np.ndarray, np.ndarray]:
        """Rows of ``items`` in the map's input space, and which items have them."""
        if self.n_features:
            ok = np.array([item.features is not None and len(item.features) == self.n_features
                           for item in items], dtype=bool)
        else:
            ok = np.array([bool(item.predictions) for item in items], dtype=bool)
        chosen = [item for item, good in zip(items, ok, strict=True) if good]
        if not chosen:
            return np.zeros((0, self.pool_map.center.shape[0])), ok
        X = model_inputs(chosen, [] if self.n_features else self.models,
                         self.n_features, self.n_classes)
        return X, ok


def cover(items: list[ItemInput], loaded: LoadedPoolMap | None) -> tuple[np.ndarray, np.ndarray]:
    """Coverage priority (n,) and cluster id (n,) of ``items``.

    Without a map (or for an item lacking the map's inputs) the priority is a uniform draw
    fixed by the item's id, so the order never depends on which batch an item came in,
    and the cluster is ``NO_CLUSTER``; half the scale of a mapped item's, so the map's
    picks come first once it exists.
    """
    priority = np.array([0.5 * _id_uniform(item.id) for item in items])
    clusters = np.full(len(items), NO_CLUSTER, dtype=int)
    if loaded is not None and items:
        X, ok = loaded.inputs(items)
        if ok.any():
            priority[ok], clusters[ok] = coverage(loaded.pool_map, X)
    return priority, clusters


def _id_uniform(iid: str) -> float:
    digest = hashlib.blake2b(iid.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


# pid -> (stamp, map): reloaded when the stored version moves.
_cache: dict[str, tuple[str, LoadedPoolMap]] = {}


def current_pool_map(r: redis.Redis, pid: str) -> LoadedPoolMap | None:
    """The project's pool map, cached per process; None before the first fit."""
    stamp = r.hget(K.pool_map_key(pid), "stamp")
    if stamp is None:
        return None
    cached = _cache.get(pid)
    if cached is None or cached[0] != stamp:
        blob = r.hget(K.pool_map_key(pid), "map")
        if blob is None:
            return None
        cached = _cache[pid] = (stamp, pickle.loads(base64.b64decode(blob)))
    return cached[1]


def needs_map(r: redis.Redis, project: dict) -> bool:
    """Whether the pool grew enough since the map was fitted (or has none yet)."""
    pid = project["id"]
    fitted_on = r.hget(K.pool_map_key(pid), "n_items")
    n_items = r.scard(K.items_key(pid))
    if n_items < MIN_ITEMS:
        return False
    if fitted_on is None:
        return True
    growth = project["strategy"]["coverage"]["refit_growth"]
    return n_items >= int(fitted_on) * (1.0 + growth)


def fit_project_map(r: redis.Redis, project: dict) -> LoadedPoolMap | None:
    """Fit and store a new map on a sample of the pending pool; None when too few items."""
    pid, rule = project["id"], project["strategy"]["coverage"]
    n_items = r.scard(K.items_key(pid))
    ids = _reference_ids(r, pid, rule["sample_size"])
    items = _pending_items(r, pid, ids)
    n_features = project.get("n_features") or 0
    if n_features and not any(item.features for item in items):
        n_features = 0
    loaded = LoadedPoolMap(None, list(project.get("models") or []), n_features,
                           len(project["labels"]), 0, n_items)
    if not n_features and not loaded.models:
        return None  # nothing to place items by
    chosen = [item for item in items if (item.features if n_features else item.predictions)]
    if len(chosen) < MIN_ITEMS:  # (none at all: model_inputs cannot shape an empty batch)
        return None
    X = model_inputs(chosen, [] if n_features else loaded.models, n_features,
                     loaded.n_classes)
    loaded.pool_map = fit_pool_map(X, rule["clusters"], random_state=0)
    loaded.version = r.hincrby(K.pool_map_key(pid), "version", 1)
    # Stored as the models are (queue/models.py): a pickle, base64 for text connections.
    blob = base64.b64encode(pickle.dumps(loaded, protocol=pickle.HIGHEST_PROTOCOL)).decode()
    r.hset(K.pool_map_key(pid), mapping={"map": blob, "n_items": n_items,
                                          "stamp": f"{loaded.version}:{time.time()}",
                                          "fitted_at": time.time()})
    return loaded


def _reference_ids(r: redis.Redis, pid: str, size: int) -> list[str]:
    """Every item of a small project (sorted: reproducible), else a random sample."""
    if r.scard(K.items_key(pid)) <= size:
        return sorted(r.smembers(K.items_key(pid)))
    return sorted(r.srandmember(K.items_key(pid), size))


def _pending_items(r: redis.Redis, pid: str, ids: list[str]) -> list[ItemInput]:
    pipe = r.pipeline(transaction=False)
    for iid in ids:
        pipe.hmget(K.item_key(pid, iid), "p", "f", "st")
    return [stored_item(iid, preds, feats) for iid, (preds, feats, status)
            in zip(ids, pipe.execute(), strict=True) if status == "pending"]
