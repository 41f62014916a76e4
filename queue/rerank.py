"""When a re-score run has re-ranked the queue: its top is done and the claim windows hold
re-scored items (``queue/rescore.py`` cuts a run into its top and its tail)."""

from __future__ import annotations

import json
import time

import redis

from taskrank.queue import keys as K
from taskrank.queue.events import queue_reranked
from taskrank.queue.projects import get_project
from taskrank.queue.rescore_items import rescore_items
from taskrank.queue.settings import Settings, current
from taskrank.queue.tasks import CLAIM_PAGES

# The top step re-scores this many claim windows of every set.  One claim reads at most
# claim_depth x CLAIM_PAGES candidates of a set (32 x 8 = 256 by default), so the top is
# 10,240 items a set: ~0.3 s of one worker, and the claims made while the tail runs still
# read re-scored items (a 1M-item tail takes two workers ~16 s, in which 8 clients at
# machine speed, ~600 claims/s, take ~10,000 items, all from one set at worst; human
# experts take a few hundred).
TOP_WINDOWS = 40
TOP_JOBS = 2  # jobs a set's top is split in: two workers re-rank in about half the time
SETTLE_ROUNDS = 4  # passes over each claim window before the re-rank is declared


def claim_window(settings: Settings) -> int:
    """The most candidates one claim reads of one pool set."""
    return settings.claim_depth * CLAIM_PAGES


def top_items(settings: Settings) -> int:
    """Items of every pool set that a run re-scores first (``TOP_WINDOWS``)."""
    return claim_window(settings) * TOP_WINDOWS


def mark_reranked(r: redis.Redis, pid: str, run: str) -> bool:
    """After a chunk of ``run``: once its top chunks are all done (or every chunk, for a
    run stored before runs had a top), settle the claim windows and declare the queue
    re-ranked: ``reranked_at``, the lease counts of diversity afresh, ``queue.reranked``.
    True once the run is re-ranked (by this call or before)."""
    progress = K.rescore_progress_key(pid, run)
    done, chunks, top, reranked = r.hmget(progress, "chunks_done", "chunks", "top_chunks",
                                          "reranked_at")
    if reranked is not None:
        return True
    if not (int(done or 0) >= int(chunks) or _top_done(r, progress, int(top or 0))):
        return False
    settle_windows(r, pid, run)
    # Diversity counts leases per cluster since the last re-rank: this is one.
    r.delete(K.claimed_clusters_key(pid))
    queue_reranked(r, pid, run)  # sent once (its marker), also on a retry
    r.hsetnx(progress, "reranked_at", time.time())
    return True


def _top_done(r: redis.Redis, progress: str, top: int) -> bool:
    return bool(top) and None not in r.hmget(progress, [f"done:{i}" for i in range(top)])


def settle_windows(r: redis.Redis, pid: str, run: str) -> None:
    """Before a run is declared re-ranked: re-score the items in each set's claim window
    that still hold a score from before the run, ``SETTLE_ROUNDS`` passes at most.

    The top's new scores can fall below the previous scores just under it (the new model
    is surer of the top): those tail items then rise into the claim window with their
    previous scores.  Each pass re-scores the window's items that were in no set's top
    (only they can be at or below its lowest previous score and not re-scored).  What is left
    (``window_stale`` in the progress: 0 unless the scores moved wholesale, as from the
    cold-start order to the first model) is re-scored by the tail, highest scores first.
    """
    progress = K.rescore_progress_key(pid, run)
    tags, layout, top, clusters = r.hmget(progress, "tags", "layout", "top_chunks",
                                          "clusters")
    tags, layout, top = json.loads(tags), json.loads(layout), int(top or 0)
    # Each set's lowest top bound: "(score", items at or below it were not in the top.
    cuts = {part: low for segments in layout[:top] for part, _, low in segments}
    project, window = get_project(r, pid), claim_window(current())
    risen = stale = 0
    for part, low in cuts.items():
        if low == "-inf":
            continue
        pool, below, seen = K.pool_set_key(pid, tags[part]), float(low[1:]), set()
        for round_ in range(SETTLE_ROUNDS + 1):
            rows = r.zrevrange(pool, 0, window - 1, withscores=True)
            candidates = not_in_top(r, pid, run, layout[:top], [
                iid for iid, score in rows if score <= below and iid not in seen])
            if not candidates or round_ == SETTLE_ROUNDS:
                break
            rescore_items(r, project, candidates, clusters=bool(int(clusters or 0)))
            seen.update(candidates)
            risen += len(candidates)
        stale += len(candidates)
    r.hset(progress, mapping={"risen": risen, "window_stale": stale})


def not_in_top(r: redis.Redis, pid: str, run: str, top_layout: list, ids: list[str],
               before: int | None = None) -> list[str]:
    """``ids`` but those in the run's snapshots of the top of every set (of the sets
    before part ``before`` only, when given), which the top re-scores (``top_layout``:
    the run's top chunks)."""
    keys = [K.rescore_snapshot_key(pid, run, index, number)
            for index, segments in enumerate(top_layout)
            for number, segment in enumerate(segments) if before is None or segment[0] < before]
    if not ids or not keys:
        return ids
    pipe = r.pipeline(transaction=False)
    for key in keys:
        pipe.zmscore(key, ids)
    found = pipe.execute()
    return [iid for n, iid in enumerate(ids) if all(scores[n] is None for scores in found)]
