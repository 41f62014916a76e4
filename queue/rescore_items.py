"""Score pending items again by id and write their new priorities to their pool sets.

What a re-score chunk does to each batch of its snapshot (``queue/rescore.py``), and what
the re-rank's check of the claim windows does to items that rose into them
(``queue/rerank.py``).  Only the sorted-set scores move (``ZADD XX``): an item claimed
meanwhile has left its sets and is never put back; nothing else of the item is written.
"""

from __future__ import annotations

import contextlib
import gc
import json
from collections import defaultdict
from collections.abc import Iterator

import redis

from taskrank.queue import keys as K
from taskrank.queue.connection import send_many
from taskrank.queue.models import LoadedModel, current_ranker
from taskrank.queue.pool_map import cover, current_pool_map
from taskrank.queue.scoring import ItemInput, score_items

# Items per Redis round trip of a re-score chunk: each call (a pipeline of HMGETs, one
# ZADD per set) then holds Redis for milliseconds, while an RQ chunk stays large (every
# job forks a work horse).
RESCORE_BATCH = 2_000


def rescore_items(r: redis.Redis, project: dict, ids: list[str], tag: str | None = None,
                  clusters: bool = True) -> int:
    """Score ``ids`` with the current committee and store the priorities of those still
    pending; returns how many were pending.

    ``tag`` names the set ``ids`` were read from ("" for the untagged one): an item with
    several tags is in several snapshots and is re-scored only from its first tag's.
    ``clusters``: also bring each item's pool-map cluster up to date.
    """
    ranker = current_ranker(r, project)
    return sum(_rescore_batch(r, project, ranker, ids[start:start + RESCORE_BATCH], tag,
                              clusters)
               for start in range(0, len(ids), RESCORE_BATCH))


def _rescore_batch(r: redis.Redis, project: dict, ranker: LoadedModel | None, ids: list[str],
                   tag: str | None, clusters: bool) -> int:
    """One Redis round trip to read, one to write: each call holds Redis for milliseconds.

    The pool map is consulted only when it matters: a new map (``clusters``), no model yet
    (coverage ranks every item then), or items without supplied predictions.
    """
    pid, prefix = project["id"], K.item_prefix(project["id"])
    replies = send_many(r, [("HMGET", prefix + iid, "p", "f", "b", "s", "st", "cl")
                            for iid in ids])
    rows = [(iid, row) for iid, row in zip(ids, replies, strict=True)
            if row[4] == "pending" and (tag is None or row[3].partition(",")[0] == tag)]
    if not rows:
        return 0
    pool_map = current_pool_map(r, pid)
    with _gc_paused():
        items = _decode_items(rows)
        coverage, assigned = None, None
        if clusters or ranker is None or not all(item.predictions for item in items):
            coverage, assigned = cover(items, pool_map)
        priorities, _ = score_items(
            items, project["strategy"], len(project["labels"]), ranker, breakdown=False,
            coverage=coverage, reference=pool_map.pool_map.reference if pool_map else None)
    # A new pool map moves items between clusters; only the changed ones are written.
    moved = [] if not clusters else [
        ("HSET", prefix + iid, "cl", cluster) for (iid, row), cluster
        in zip(rows, assigned.tolist(), strict=True) if row[5] != str(cluster)]
    # XX: only members still there. A claimed item has left its sets, so a re-score never
    # puts it back (no read-then-write race); nothing else of the item is written.
    by_set: dict[str, list] = defaultdict(list)
    keys_of: dict[str, list[str]] = {}
    for (iid, row), priority in zip(rows, priorities.tolist(), strict=True):
        tags = row[3] or ""
        if tags not in keys_of:
            keys_of[tags] = K.pool_keys(pid, tags.split(",") if tags else [])
        for key in keys_of[tags]:
            by_set[key] += (priority, iid)
    send_many(r, [("ZADD", key, "XX", *args) for key, args in by_set.items()] + moved)
    return len(rows)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a batch's ~10^4 small objects are built: with
    scikit-learn loaded, the collections they trigger cost more than the decoding itself
    (they hold no cycles; reference counting frees them)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _decode_items(rows: list[tuple[str, list]]) -> list[ItemInput]:
    """Items to score from their HMGET rows; all JSON decoded in two ``json.loads`` calls
    (one per field) instead of one per item."""
    predictions = json.loads("[" + ",".join(row[0] or "{}" for _, row in rows) + "]")
    features = json.loads("[" + ",".join(row[1] or "null" for _, row in rows) + "]")
    return [ItemInput(iid, preds, feats, [], None, float(row[2] or 0), None)
            for (iid, row), preds, feats in zip(rows, predictions, features, strict=True)]
