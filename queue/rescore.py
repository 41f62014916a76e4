"""Re-score the pool in parallel chunks after a new model or pool map.

A run snapshots every pool set (the untagged one and one per tag) a score range at a time
and fans the ranges out, grouped in chunks, as RQ jobs (``rescore_chunk``); its progress hash
says how far it is.  Each chunk writes only the scores of items still pending.
"""

from __future__ import annotations

import contextlib
import gc
import json
import time
from collections import defaultdict
from collections.abc import Iterator

import redis
from rq import Queue

from taskrank.queue import keys as K
from taskrank.queue import lua
from taskrank.queue.connection import rq_redis, send_many
from taskrank.queue.enqueue import JOB_TIMEOUT, RETRY, job_redis, new_job_id
from taskrank.queue.events import queue_reranked
from taskrank.queue.models import LoadedModel, current_ranker
from taskrank.queue.pool_map import cover, current_pool_map
from taskrank.queue.projects import get_project
from taskrank.queue.scoring import ItemInput, score_items
from taskrank.queue.settings import Settings, current
from taskrank.queue.worker import task_queue

# Items per Redis round trip of a re-score chunk: each call (a pipeline of HMGETs, one
# ZADD per set) then holds Redis for milliseconds, while an RQ chunk stays large (every
# job forks a work horse).
RESCORE_BATCH = 2_000


def enqueue_rescore(r: redis.Redis, pid: str, reason: str, settings: Settings | None = None,
                    chunk: int | None = None, run: str | None = None,
                    clusters: bool = False) -> str:
    """Snapshot every pool set, a chunk at a time, and fan the chunks out as jobs; returns
    the run's job id (``run`` when given).  ``clusters``: a new pool map, so every item's
    cluster is recomputed too (other runs leave clusters as they are)."""
    settings = settings or current()
    chunk = chunk or settings.rescore_chunk
    run = run or new_job_id("rescore", pid)
    tags = [""] + sorted(r.smembers(K.tags_key(pid)))  # "" stands for the untagged set
    layout = _chunk_layout(r, pid, tags, chunk)
    progress = K.rescore_progress_key(pid, run)
    r.hset(progress, mapping={
        "total_items": 0, "chunks": len(layout), "chunk_size": chunk, "reason": reason,
        "tags": json.dumps(tags), "layout": json.dumps(layout), "started_at": time.time(),
        "clusters": int(clusters)})
    r.expire(progress, 7 * 86400)
    # Each chunk goes to the workers as soon as it is captured (1M items take ~1-2 s to
    # capture).  An item re-scored meanwhile may move into a range captured later and be
    # scored twice, with the same result; an item not yet re-scored keeps its score, so
    # it is never missed.
    queue = task_queue(settings, rq_redis(r, settings))
    for index, segments in enumerate(layout):
        captured = sum(_snapshot(r, K.rescore_snapshot_key(pid, run, index, n),
                                 _pool_of(pid, tags[part]), high, low)
                       for n, (part, high, low) in enumerate(segments))
        r.hincrby(progress, "total_items", captured)
        r.hincrby(progress, "captured", 1)  # resume_rescore needs every chunk captured
        _enqueue_chunk(queue, pid, run, index, chunk)
    return run


def _pool_of(pid: str, tag: str) -> str:
    return K.pool_tag_key(pid, tag) if tag else K.pool_untagged_key(pid)


def _chunk_layout(r: redis.Redis, pid: str, tags: list[str],
                  chunk: int) -> list[list[tuple[int, str, str]]]:
    """The segments (part, highest score, lowest score) of each chunk, as ZRANGE BYSCORE
    bounds.

    A segment is a score range of one set holding about ``chunk`` items or fewer, so its
    snapshot is one short call (one ``ZRANGESTORE`` of a whole 1M-item set holds Redis
    ~1.7 s).  Ranges partition the scores, so every item that keeps its score is in exactly
    one segment (ties all go to one).  Range 0 of every set comes first (the top of each
    set is re-scored first); consecutive small ranges (small tag sets, the ends of sets)
    share a chunk, since every chunk job forks a work horse.
    """
    per_part = [[(part, *bounds) for bounds in _score_ranges(r, _pool_of(pid, tag), chunk)]
                for part, tag in enumerate(tags)]
    ranges = [ranges[index] for index in range(max(map(len, per_part)))
              for ranges in per_part if index < len(ranges)]
    layout: list[list[tuple[int, str, str]]] = [[]]
    size = 0
    for part, high, low, count in ranges:
        if layout[-1] and size + count > chunk:
            layout.append([])
            size = 0
        layout[-1].append((part, high, low))
        size += count
    return layout  # an empty run has one chunk without segments


def _score_ranges(r: redis.Redis, pool: str, chunk: int) -> list[tuple[str, str, int]]:
    """(high, low, about how many items) of ranges of ``chunk`` items or fewer, top first;
    high inclusive."""
    size = r.zcard(pool)
    if not size:
        return []
    pipe = r.pipeline(transaction=False)
    for rank in range(chunk, size, chunk):
        pipe.zrevrange(pool, rank, rank, withscores=True)
    cuts = sorted({rows[0][1] for rows in pipe.execute() if rows}, reverse=True)
    highs = ["+inf"] + [repr(score) for score in cuts]
    lows = [f"({score!r}" for score in cuts] + ["-inf"]
    counts = [chunk] * len(cuts) + [size - chunk * len(cuts)]
    return list(zip(highs, lows, counts, strict=True))


def _snapshot(r: redis.Redis, key: str, pool: str, high: str, low: str) -> int:
    """Copy one segment's items (still in score order) aside; returns how many."""
    size = r.zrangestore(key, pool, high, low, byscore=True, desc=True)
    r.expire(key, 86400)
    return size


def enqueue_chunks(r: redis.Redis, settings: Settings, pid: str, run: str, indexes: object,
                   chunk: int) -> None:
    """Queue the chunks ``indexes`` of ``run`` (again, for a resumed run)."""
    queue = task_queue(settings, rq_redis(r, settings))
    for index in indexes:
        _enqueue_chunk(queue, pid, run, index, chunk)


def _enqueue_chunk(queue: Queue, pid: str, run: str, index: int, chunk: int) -> None:
    queue.enqueue(rescore_chunk, pid, run, index, chunk, job_id=f"{run}-c{index}",
                  retry=RETRY, job_timeout=JOB_TIMEOUT)


def rescore_chunk(pid: str, run: str, index: int, chunk: int) -> dict:
    """Re-score one chunk of a run's snapshot; only items still pending are updated."""
    r = job_redis()
    progress = K.rescore_progress_key(pid, run)
    if r.hexists(progress, f"done:{index}"):
        result = {"skipped": "chunk already done"}  # a retry after the work was stored
    else:
        project = get_project(r, pid)
        tags, layout, clusters = (json.loads(value or "0") for value in
                                  r.hmget(progress, "tags", "layout", "clusters"))
        # Chunk 0 holds the top of the untagged set (the workers take chunks in order), so
        # the items experts are about to get are re-scored first.
        items = updated = 0
        for segment, (part, _, _) in enumerate(layout[index]):
            ids = r.zrange(K.rescore_snapshot_key(pid, run, index, segment), 0, -1, desc=True)
            updated += rescore_items(r, project, ids, tag=tags[part], clusters=bool(clusters))
            items += len(ids)
        # Atomic and counted once: a work horse killed here leaves the chunk both done and
        # counted, or neither (then its retry redoes it).
        lua.run(r, "finish_chunk", pid, [progress], [index, updated, items])
        result = {"items": items, "updated": updated}
    _finish_run(r, pid, run)  # also on a retry: the killed attempt may have stopped before
    return result


def _finish_run(r: redis.Redis, pid: str, run: str) -> None:
    progress = K.rescore_progress_key(pid, run)
    done, chunks, finished, layout = r.hmget(progress, "chunks_done", "chunks", "finished_at",
                                             "layout")
    if finished is None and int(done or 0) >= int(chunks):
        r.hset(progress, "finished_at", time.time())
        # Diversity counts leases per cluster since the last re-rank: this was one.
        r.delete(K.claimed_clusters_key(pid))
        keys = snapshot_keys(pid, run, layout)
        if keys:
            r.unlink(*keys)  # freed off Redis's main thread
    if int(done or 0) >= int(chunks):  # also on a retry: sent once (its marker)
        queue_reranked(r, pid, run)


def snapshot_keys(pid: str, run: str, layout: str) -> list[str]:
    """The snapshot key of every segment of a run's ``layout`` (as stored, JSON)."""
    return [K.rescore_snapshot_key(pid, run, index, segment)
            for index, segments in enumerate(json.loads(layout))
            for segment in range(len(segments))]


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


def rescore_progress(r: redis.Redis, pid: str, run: str) -> dict | None:
    """How far run ``run`` is (chunks and items done of all), None when it is unknown."""
    fields = r.hgetall(K.rescore_progress_key(pid, run))
    if not fields:
        return None
    return {"chunks": int(fields["chunks"]), "chunks_done": int(fields.get("chunks_done", 0)),
            "items": int(fields["total_items"]), "items_done": int(fields.get("items_done", 0)),
            "finished": "finished_at" in fields, "reason": fields.get("reason")}
