"""Re-score the pool after a new model, strategy or pool map: its top first, the tail after.

A run cuts every pool set (the untagged one and one per tag) into score ranges, as they are
when it starts, and groups them in chunks, one RQ job each (``rescore_chunk``):

- the **top**: the first ``top_items`` of every set, the part claims read.  Its chunks go to
  the main queue; once they are all done the queue is *re-ranked*: ``reranked_at`` in the
  run's progress (``reranked`` in ``GET /v1/jobs/{run}`` and in ``GET /model``), the
  ``queue.reranked`` event, and the lease counts of diversity start afresh.  Before that,
  the claim window of every set (what one claim can read of it) is checked: an item still
  holding a score from before the run that the new scores let into it is re-scored too
  (``settle_windows``).
- the **tail**: the rest, in ranges of ``TASKRANK_RESCORE_CHUNK`` items, on the low queue,
  which a worker serves only while the main queue is empty.  Between batches a tail chunk
  stops when a job waits on the main queue (a retrain, another run's top) and goes on
  later from where it stopped, so the tail never holds up the next re-rank; a newer run
  supersedes it (its chunks stop without scoring: the newer run re-scores every item).
  Until its chunk runs, a tail item keeps the score it had: it stays in the pool, ranked
  as before, and moves when its turn comes.

Every range is captured (a snapshot in score order) when the run starts; a chunk then
writes the scores of the items still pending.  An item that kept its score is in exactly
one snapshot, so it is scored once and never missed.
"""

from __future__ import annotations

import json
import time

import redis
from rq import Queue

from taskrank.queue import keys as K
from taskrank.queue import lua
from taskrank.queue.connection import same_server
from taskrank.queue.enqueue import JOB_TIMEOUT, RETRY, job_redis, new_job_id
from taskrank.queue.projects import get_project
from taskrank.queue.rerank import mark_reranked, top_items
from taskrank.queue.rescore_items import RESCORE_BATCH, rescore_items
from taskrank.queue.settings import Settings, current
from taskrank.queue.worker import low_queue, task_queue


def enqueue_rescore(r: redis.Redis, pid: str, reason: str, settings: Settings | None = None,
                    chunk: int | None = None, run: str | None = None,
                    clusters: bool = False, top: int | None = None) -> str:
    """Cut every pool set into score ranges and queue their chunks, the top ones on the
    main queue, the tail on the low queue; returns the run's job id (``run`` when given).
    ``clusters``: a new pool map, so every item's cluster is recomputed too (a run that
    supersedes such a run before it finished does it too).  ``top``: items of each set in
    the top step (default ``top_items``)."""
    settings = settings or current()
    chunk = chunk or settings.rescore_chunk
    run = run or new_job_id("rescore", pid)
    clusters = _supersede(r, pid, run) or clusters
    tags = [""] + sorted(r.smembers(K.tags_key(pid)))  # "" stands for the untagged set
    top_layout, tail_layout, items = _chunk_layout(r, pid, tags, top or top_items(settings),
                                                   chunk)
    layout = top_layout + tail_layout
    progress = K.rescore_progress_key(pid, run)
    r.hset(progress, mapping={
        "total_items": items, "chunks": len(layout), "top_chunks": len(top_layout),
        "chunk_size": chunk, "reason": reason, "tags": json.dumps(tags),
        "layout": json.dumps(layout), "started_at": time.time(), "clusters": int(clusters)})
    r.expire(progress, 7 * 86400)
    # Each chunk is captured, then queued: the top first, so a second worker starts on it
    # while the tail is captured (1M items take ~1 s), and the tail in one round trip.
    for index in range(len(top_layout)):
        _capture(r, pid, run, tags, index, top_layout[index])
        enqueue_chunks(r, settings, pid, run, [index], chunk)
    for index in range(len(top_layout), len(layout)):
        _capture(r, pid, run, tags, index, layout[index])
    enqueue_chunks(r, settings, pid, run, range(len(top_layout), len(layout)), chunk)
    return run


def _capture(r: redis.Redis, pid: str, run: str, tags: list[str], index: int,
             segments: list) -> None:
    """Snapshot the items of each segment of chunk ``index``.

    An item re-scored meanwhile (by a chunk of the top, on another worker) may have moved
    into a range captured later and be scored twice, with the same result; an item not
    yet re-scored keeps its score, so it is never missed.
    """
    for number, (part, high, low) in enumerate(segments):
        key = K.rescore_snapshot_key(pid, run, index, number)
        r.zrangestore(key, K.pool_set_key(pid, tags[part]), high, low, byscore=True,
                      desc=True)
        r.expire(key, 86400)


def _supersede(r: redis.Redis, pid: str, run: str) -> bool:
    """Make ``run`` the newest of the project (older runs' tails stop); True when the run
    it supersedes recomputes clusters and has not finished, so this one must."""
    previous = r.set(K.rescore_latest_key(pid), run, get=True)
    if not previous:
        return False
    clusters, finished = r.hmget(K.rescore_progress_key(pid, previous), "clusters",
                                 "finished_at")
    return clusters == "1" and finished is None


Layout = list[list[tuple[int, str, str]]]


def _chunk_layout(r: redis.Redis, pid: str, tags: list[str], top: int,
                  chunk: int) -> tuple[Layout, Layout, int]:
    """The segments (part, highest score, lowest score) of each chunk of the top and of the
    tail, as ZRANGE BYSCORE bounds, and about how many items they hold in all.

    A segment is a score range of one set holding about ``chunk`` items or fewer, so its
    snapshot is one short call (one ``ZRANGESTORE`` of a whole 1M-item set holds Redis
    ~1.7 s).  Ranges partition the scores, so every item that keeps its score is in exactly
    one segment (ties all go to one).  The tail takes the sets' ranges in turn, highest
    scores first; consecutive small ranges (small tag sets, the ends of sets) share a
    chunk, since every chunk job forks a work horse.
    """
    per_part = [[(part, *bounds) for bounds in
                 _score_ranges(r, K.pool_set_key(pid, tag), top, chunk)]
                for part, tag in enumerate(tags)]
    in_turn = [ranges[index] for index in range(max(map(len, per_part)))
               for ranges in per_part if index < len(ranges)]
    top_ranges = [entry for entry in in_turn if entry[4]]
    tail_ranges = [entry for entry in in_turn if not entry[4]]
    items = sum(entry[3] for entry in in_turn)
    return _grouped(top_ranges, chunk) or [[]], _grouped(tail_ranges, chunk), items


def _grouped(ranges: list[tuple], chunk: int) -> Layout:
    """Consecutive ranges grouped into chunks of about ``chunk`` items or fewer."""
    layout: Layout = []
    size = chunk
    for part, high, low, count, _ in ranges:
        if not layout or size + count > chunk:
            layout.append([])
            size = 0
        layout[-1].append((part, high, low))
        size += count
    return layout  # an empty run has one top chunk without segments


def _score_ranges(r: redis.Redis, pool: str, top: int,
                  chunk: int) -> list[tuple[str, str, int, bool]]:
    """(high, low, about how many items, whether in the top) of a set's ranges, highest
    first: its first ``top`` items in ranges of ``chunk`` or fewer, then the rest in ranges
    of ``chunk``; high inclusive."""
    size = r.zcard(pool)
    if not size:
        return []
    ranks = [rank for rank in [*range(chunk, top, chunk), top, *range(top + chunk, size, chunk)]
             if rank < size]
    pipe = r.pipeline(transaction=False)
    for rank in ranks:
        pipe.zrevrange(pool, rank, rank, withscores=True)
    cuts: list[tuple[int, float]] = []  # (rank, score); ties collapse into one cut
    for rank, rows in zip(ranks, pipe.execute(), strict=True):
        if rows and (not cuts or rows[0][1] < cuts[-1][1]):
            cuts.append((rank, rows[0][1]))
    starts = [0] + [rank for rank, _ in cuts]
    ends = [rank for rank, _ in cuts] + [size]
    highs = ["+inf"] + [repr(score) for _, score in cuts]
    lows = [f"({score!r}" for _, score in cuts] + ["-inf"]
    return [(high, low, end - start, start < top)
            for high, low, start, end in zip(highs, lows, starts, ends, strict=True)]


def enqueue_chunks(r: redis.Redis, settings: Settings, pid: str, run: str, indexes: object,
                   chunk: int) -> None:
    """Queue the chunks ``indexes`` of ``run`` (again, for a resumed run): the top ones on
    the main queue, the tail on the low queue, each under its current job id."""
    binary = same_server(r, decode_responses=False)
    queues = (task_queue(settings, binary), low_queue(settings, binary))
    fields = r.hgetall(K.rescore_progress_key(pid, run))
    top = int(fields.get("top_chunks", 0))
    jobs: dict[Queue, list] = {queue: [] for queue in queues}
    for index in indexes:
        queue = queues[index >= top]
        jobs[queue].append(queue.prepare_data(
            rescore_chunk, (pid, run, index, chunk), job_id=chunk_job_id(fields, run, index),
            retry=RETRY, timeout=JOB_TIMEOUT))
    for queue, batch in jobs.items():
        if batch:
            queue.enqueue_many(batch)  # one round trip for a run's many chunks


def chunk_job_id(progress: dict, run: str, index: int) -> str:
    """The id of the job that works chunk ``index`` now (a tail chunk that stopped to let
    the main queue go first goes on under another id); ``progress`` as stored."""
    return progress.get(f"job:{index}") or f"{run}-c{index}"


def rescore_chunk(pid: str, run: str, index: int, chunk: int) -> dict:
    """Re-score one chunk of a run; only items still pending are updated."""
    r = job_redis()
    progress = K.rescore_progress_key(pid, run)
    if r.hexists(progress, f"done:{index}"):
        result = {"skipped": "chunk already done"}  # a retry after the work was stored
    else:
        result = _work_chunk(r, get_project(r, pid), run, index, chunk)
    # Also on a retry: the killed attempt may have stopped before.
    mark_reranked(r, pid, run)
    _finish_run(r, pid, run)
    return result


def _work_chunk(r: redis.Redis, project: dict, run: str, index: int, chunk: int) -> dict:
    """Capture the chunk's segments, score them batch by batch (a tail chunk from where it
    stopped, and stopping again when superseded or when the main queue has a job)."""
    pid, progress = project["id"], K.rescore_progress_key(project["id"], run)
    tags, layout, clusters, top, at, updated = r.hmget(
        progress, "tags", "layout", "clusters", "top_chunks", f"at:{index}", f"upd:{index}")
    tags, segments = json.loads(tags), json.loads(layout)[index]
    tail = index >= int(top or 0)
    main = task_queue(current(), same_server(r, decode_responses=False))
    position, updated, stop = 0, int(updated or 0), None
    for number, (part, high, low) in enumerate(segments):
        key = K.rescore_snapshot_key(pid, run, index, number)
        ids = _captured(r, key, K.pool_set_key(pid, tags[part]), high, low)
        for start in range(0, len(ids), RESCORE_BATCH):
            if position < int(at or 0):  # done before this chunk last stopped
                position += min(RESCORE_BATCH, len(ids) - start)
                continue
            # A tail chunk yields only after a batch of its own, so it always advances.
            stop = tail and _stop_reason(r, pid, run, main, position > int(at or 0))
            if stop:
                return _stopped(r, project, run, index, chunk, position, updated, stop)
            batch = ids[start:start + RESCORE_BATCH]
            updated += rescore_items(r, project, batch, tag=tags[part], clusters=bool(int(
                clusters or 0)))
            position += len(batch)
    # Atomic and counted once: a work horse killed here leaves the chunk both done and
    # counted, or neither (then its retry redoes it from where it last stopped).
    lua.run(r, "finish_chunk", pid, [progress], [index, updated, position])
    return {"items": position, "updated": updated}


def _captured(r: redis.Redis, key: str, pool: str, high: str, low: str) -> list[str]:
    """A segment's item ids in score order, highest first, as the run captured them; a
    segment without a snapshot (the run stopped while capturing, or it expired before a
    resume) is captured now: an item not re-scored since kept its score and range."""
    if not r.exists(key):
        r.zrangestore(key, pool, high, low, byscore=True, desc=True)
        r.expire(key, 86400)
    return r.zrange(key, 0, -1, desc=True)


def _stop_reason(r: redis.Redis, pid: str, run: str, main: Queue,
                 may_yield: bool) -> str | None:
    """Why a tail chunk should stop before its next batch, if it should."""
    newest = r.get(K.rescore_latest_key(pid))
    if newest and newest != run:
        return "superseded"
    return "yielded" if may_yield and main.count else None


def _stopped(r: redis.Redis, project: dict, run: str, index: int, chunk: int,
             position: int, updated: int, why: str) -> dict:
    """End a tail chunk early: superseded, it is done (its items are the newer run's);
    yielding to the main queue, it goes on later from ``position`` under a new job id."""
    pid, progress = project["id"], K.rescore_progress_key(project["id"], run)
    if why == "superseded":
        r.hset(progress, "superseded_by", r.get(K.rescore_latest_key(pid)) or "")
        lua.run(r, "finish_chunk", pid, [progress], [index, updated, position])
    else:
        job_id = f"{run}-c{index}-{position}"
        r.hset(progress, mapping={f"at:{index}": position, f"upd:{index}": updated,
                                  f"job:{index}": job_id})
        low_queue(current(), same_server(r, decode_responses=False)).enqueue(
            rescore_chunk, pid, run, index, chunk, job_id=job_id, retry=RETRY,
            job_timeout=JOB_TIMEOUT, at_front=True)  # before the run's later chunks
    return {"items": position, "updated": updated, why: True}


def _finish_run(r: redis.Redis, pid: str, run: str) -> None:
    """Once every chunk is done: the run is finished and its snapshots are freed."""
    progress = K.rescore_progress_key(pid, run)
    done, chunks, finished, layout = r.hmget(progress, "chunks_done", "chunks", "finished_at",
                                             "layout")
    if finished is None and int(done or 0) >= int(chunks):
        r.hset(progress, "finished_at", time.time())
        keys = snapshot_keys(pid, run, layout)
        if keys:
            r.unlink(*keys)  # freed off Redis's main thread


def snapshot_keys(pid: str, run: str, layout: str) -> list[str]:
    """The snapshot key of every segment of a run's ``layout`` (as stored, JSON)."""
    return [K.rescore_snapshot_key(pid, run, index, segment)
            for index, segments in enumerate(json.loads(layout))
            for segment in range(len(segments))]


def rescore_progress(r: redis.Redis, pid: str, run: str) -> dict | None:
    """How far run ``run`` is (chunks and items done of all; whether the queue is
    re-ranked, i.e. its top is done), None when it is unknown."""
    fields = r.hgetall(K.rescore_progress_key(pid, run))
    if not fields:
        return None
    return {"chunks": int(fields["chunks"]), "chunks_done": int(fields.get("chunks_done", 0)),
            "top_chunks": int(fields.get("top_chunks", 0)),
            "items": int(fields["total_items"]), "items_done": int(fields.get("items_done", 0)),
            "reranked": "reranked_at" in fields, "finished": "finished_at" in fields,
            "window_stale": int(fields.get("window_stale", 0)),
            "superseded_by": fields.get("superseded_by"), "reason": fields.get("reason")}
