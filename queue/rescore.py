"""Re-score the pool after a new model, strategy or pool map: its top first, the tail after.

A run cuts every pool set (the untagged one and one per tag) into score ranges, as they are
when it starts, and groups them in chunks, one RQ job each (``rescore_chunk``):

- the **top**: the first ``top_items`` of every set, what claims read.  Its chunks go to
  the main queue; once they are all done the queue is *re-ranked* (``queue/rerank.py``):
  the claim windows are settled, ``reranked`` shows in ``GET /v1/jobs/{run}`` and
  ``GET /model``, ``queue.reranked`` is sent and the lease counts of diversity start
  afresh.
- the **tail**: the rest, in ranges of ``TASKRANK_RESCORE_CHUNK`` items, queued then on
  the low queue, which a worker serves only while the main queue is empty.  Between
  batches a tail chunk stops when a job waits on the main queue (a retrain, another run's
  top) and goes on later from where it stopped, so the tail never holds up the next
  re-rank; a newer run supersedes it (its chunks stop without scoring: the newer run
  re-scores every item).  Until its chunk runs, a tail item keeps the score it had: it
  stays in the pool, ranked as before, and moves when its turn comes.

Every range is captured (a snapshot in score order) before any of its items is scored:
the top's when the run starts, the tail's by the first tail chunk to run.  A chunk writes
the scores of the items still pending.  An item that kept its score is in exactly one
snapshot, so it is never missed; an item of the top that moved into the tail's ranges
before they were captured is left out of them, so it is not scored twice.
"""

from __future__ import annotations

import json
import time

import redis
from rq import Queue

from taskrank.queue import keys as K
from taskrank.queue import lua
from taskrank.queue.connection import rq_redis
from taskrank.queue.enqueue import JOB_TIMEOUT, RETRY, job_redis, new_job_id
from taskrank.queue.projects import get_project
from taskrank.queue.rerank import TOP_JOBS, mark_reranked, not_in_top, top_items
from taskrank.queue.rescore_items import RESCORE_BATCH, rescore_items
from taskrank.queue.rescore_layout import chunk_layout
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
    top = top or top_items(settings)
    # The top of a set is split in TOP_JOBS jobs: as many workers share the re-rank.
    top_layout, tail_layout, items = chunk_layout(r, pid, tags, top,
                                                  min(chunk, -(-top // TOP_JOBS)), chunk)
    layout = top_layout + tail_layout
    progress = K.rescore_progress_key(pid, run)
    r.hset(progress, mapping={
        "total_items": items, "chunks": len(layout), "top_chunks": len(top_layout),
        "chunk_size": chunk, "reason": reason, "tags": json.dumps(tags),
        "layout": json.dumps(layout), "started_at": time.time(), "clusters": int(clusters)})
    r.expire(progress, 7 * 86400)
    # The top is captured here (a few 10k items); the tail by its first chunk to run, so
    # this job ends at once and a single worker goes on to the top.  The tail is queued
    # once the top is done (queue_tail): it would only slow the re-rank down.
    for index, segments in enumerate(top_layout):
        _capture(r, pid, run, tags, index, segments)
    enqueue_chunks(r, settings, pid, run, range(len(top_layout)), chunk)
    return run


def top_jobs(r: redis.Redis, pid: str, run: str) -> list[str]:
    """The ids of the jobs of ``run``'s top chunks: work that must not slow the re-rank
    down waits for them (RQ's ``depends_on``)."""
    top = int(r.hget(K.rescore_progress_key(pid, run), "top_chunks") or 0)
    return [f"{run}-c{index}" for index in range(top)]


def _supersede(r: redis.Redis, pid: str, run: str) -> bool:
    """Make ``run`` the newest of the project (older runs' tails stop); True when the run
    it supersedes recomputes clusters and has not finished, so this one must."""
    previous = r.set(K.rescore_latest_key(pid), run, get=True)
    if not previous:
        return False
    clusters, finished = r.hmget(K.rescore_progress_key(pid, previous), "clusters",
                                 "finished_at")
    return clusters == "1" and finished is None


def enqueue_chunks(r: redis.Redis, settings: Settings, pid: str, run: str, indexes: object,
                   chunk: int) -> None:
    """Queue the chunks ``indexes`` of ``run`` (again, for a resumed run) in their order:
    the top ones on the main queue, the tail on the low queue, each under its current
    job id."""
    binary = rq_redis(r, settings)
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


def _capture(r: redis.Redis, pid: str, run: str, tags: list[str], index: int,
             segments: list) -> None:
    """Snapshot the items of each segment of chunk ``index`` that has no snapshot yet."""
    for number, segment in enumerate(segments):
        _snapshot(r, pid, run, tags, index, number, segment)


def _snapshot(r: redis.Redis, pid: str, run: str, tags: list[str], index: int, number: int,
              segment: list) -> str:
    """The snapshot key of segment ``number`` of chunk ``index``, captured unless it was."""
    part, high, low = segment
    key = K.rescore_snapshot_key(pid, run, index, number)
    if not r.exists(key):
        r.zrangestore(key, K.pool_set_key(pid, tags[part]), high, low, byscore=True, desc=True)
        r.expire(key, 86400)
    return key


def rescore_chunk(pid: str, run: str, index: int, chunk: int) -> dict:
    """Re-score one chunk of a run; only items still pending are updated."""
    r = job_redis()
    progress = K.rescore_progress_key(pid, run)
    if r.hexists(progress, f"done:{index}"):
        result = {"skipped": "chunk already done"}  # a retry after the work was stored
    else:
        result = Chunk(r, get_project(r, pid), run, index, chunk).work()
    # Also on a retry: the killed attempt may have stopped before.
    if mark_reranked(r, pid, run):
        queue_tail(r, current(), pid, run)
    _finish_run(r, pid, run)
    return result


def queue_tail(r: redis.Redis, settings: Settings, pid: str, run: str) -> None:
    """Once the run is re-ranked: queue its tail chunks on the low queue, highest scores
    first (once: a retry that finds them queued does nothing)."""
    progress = K.rescore_progress_key(pid, run)
    top, chunks, size, queued = r.hmget(progress, "top_chunks", "chunks", "chunk_size",
                                        "tail_queued")
    if queued is None:
        enqueue_chunks(r, settings, pid, run, range(int(top or 0), int(chunks)), int(size))
        r.hset(progress, "tail_queued", 1)  # after: killed in between, the retry queues it


class Chunk:
    """One chunk of a run at work: its segments, where it stands, when it should stop."""

    def __init__(self, r: redis.Redis, project: dict, run: str, index: int,
                 chunk: int) -> None:
        self.r, self.project, self.run, self.index, self.chunk = r, project, run, index, chunk
        self.pid = project["id"]
        self.progress = K.rescore_progress_key(self.pid, run)
        tags, layout, clusters, top, at, updated, yields = r.hmget(
            self.progress, "tags", "layout", "clusters", "top_chunks", f"at:{index}",
            f"upd:{index}", f"yields:{index}")
        self.tags, self.layout = json.loads(tags), json.loads(layout)
        self.clusters, self.top = bool(int(clusters or 0)), int(top or 0)
        self.tail = index >= self.top
        self.at, self.updated, self.yields = int(at or 0), int(updated or 0), int(yields or 0)
        self.main = task_queue(current(), rq_redis(r))
        self.moved = False  # whether this job did any work yet (it yields only after some)
        self.why = ""

    def work(self) -> dict:
        """Capture the tail if it is not yet, then score the segments batch by batch from
        where the chunk last stopped; a tail chunk stops when superseded or when a job
        waits on the main queue."""
        if self.tail and not self._tail_captured():
            return self._stopped(self.at)
        position = 0
        for number, segment in enumerate(self.layout[self.index]):
            part = segment[0]
            ids = self._ids(number, segment)
            for start in range(0, len(ids), RESCORE_BATCH):
                batch = ids[start:start + RESCORE_BATCH]
                if position + len(batch) <= self.at:  # done before this chunk last stopped
                    position += len(batch)
                    continue
                if self._stop():
                    return self._stopped(position)
                # The top scores each item of the sets' tops once (in the first set whose
                # top holds it); the tail each item once, from its first tag's set.
                self.updated += rescore_items(self.r, self.project, self._not_top(part, batch),
                                              tag=self.tags[part] if self.tail else None,
                                              clusters=self.clusters)
                position += len(batch)
                self.moved = True
        # Atomic and counted once: a work horse killed here leaves the chunk both done and
        # counted, or neither (then its retry redoes it from where it last stopped).
        lua.run(self.r, "finish_chunk", self.pid, [self.progress],
                [self.index, self.updated, position])
        return {"items": position, "updated": self.updated}

    def _ids(self, number: int, segment: list) -> list[str]:
        """A segment's item ids, highest first, as captured (captured now when its snapshot
        is gone: a resumed run's, a day later; an item that kept its score is still in
        its range)."""
        key = _snapshot(self.r, self.pid, self.run, self.tags, self.index, number, segment)
        return self.r.zrange(key, 0, -1, desc=True)

    def _tail_captured(self) -> bool:
        """Capture every tail segment without a snapshot, before any tail item is scored
        (an item scored first could move into a range captured after and be scored
        twice); False when the chunk must stop first."""
        if self.r.hexists(self.progress, "tail_captured"):
            return True
        for index in range(self.top, len(self.layout)):
            if self._stop():
                return False
            _capture(self.r, self.pid, self.run, self.tags, index, self.layout[index])
            self.moved = True
        self.r.hset(self.progress, "tail_captured", 1)
        return True

    def _not_top(self, part: int, ids: list[str]) -> list[str]:
        """``ids`` of a segment of set ``part`` but those another chunk of the top scores:
        a top chunk leaves out what the top of an earlier set holds (an item of several
        tags), a tail chunk what any set's top held (an item of the top may have moved
        into the tail's ranges before they were captured)."""
        return not_in_top(self.r, self.pid, self.run, self.layout[:self.top], ids,
                          before=None if self.tail else part)

    def _stop(self) -> str:
        """Why a tail chunk should stop before its next step ('' if it should not)."""
        if not self.tail:
            return ""
        newest = self.r.get(K.rescore_latest_key(self.pid))
        if newest and newest != self.run:
            self.why = "superseded"
        elif self.moved and self.main.count:  # a job waits: it goes first
            self.why = "yielded"
        return self.why

    def _stopped(self, position: int) -> dict:
        """End the chunk early: superseded, it is done (its items are the newer run's);
        yielding to the main queue, it goes on later from ``position`` under a new id."""
        if self.why == "superseded":
            self.r.hset(self.progress, "superseded_by",
                        self.r.get(K.rescore_latest_key(self.pid)) or "")
            lua.run(self.r, "finish_chunk", self.pid, [self.progress],
                    [self.index, self.updated, position])
        else:
            job_id = f"{self.run}-c{self.index}-y{self.yields + 1}"
            self.r.hset(self.progress, mapping={
                f"at:{self.index}": position, f"upd:{self.index}": self.updated,
                f"yields:{self.index}": self.yields + 1, f"job:{self.index}": job_id})
            low_queue(current(), self.main.connection).enqueue(
                rescore_chunk, self.pid, self.run, self.index, self.chunk, job_id=job_id,
                retry=RETRY, job_timeout=JOB_TIMEOUT, at_front=True)  # before later chunks
        return {"items": position, "updated": self.updated, self.why: True}


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
