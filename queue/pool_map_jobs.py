"""The RQ job of the pool map (``queue/pool_map.py``): refit it as the pool grows, then
re-score the pool so that every pending item gets its coverage priority and cluster."""

from __future__ import annotations

import time

import redis

from taskrank.queue import keys as K
from taskrank.queue.enqueue import enqueue_once, job_redis
from taskrank.queue.pool_map import fit_project_map, needs_map
from taskrank.queue.projects import get_project
from taskrank.queue.rescore import enqueue_rescore
from taskrank.queue.settings import Settings


def enqueue_pool_map(r: redis.Redis, settings: Settings, pid: str) -> str:
    """Queue a refit of the pool map unless one is already waiting (ingest bursts merge)."""
    return enqueue_once(r, settings, K.pool_map_pending_key(pid), "poolmap", map_pool, pid)


def maybe_map_pool(r: redis.Redis, settings: Settings, project: dict) -> str | None:
    """After an ingest: refit the pool map when the pool has none or outgrew it."""
    return enqueue_pool_map(r, settings, project["id"]) if needs_map(r, project) else None


def map_pool(pid: str) -> dict:
    """Fit the pool map on the pending pool, then re-score it: every pending item gets its
    coverage priority (the cold-start order) and its cluster."""
    r = job_redis()
    r.delete(K.pool_map_pending_key(pid))  # items ingested from now on ask for a new fit
    started = time.perf_counter()
    loaded = fit_project_map(r, get_project(r, pid))
    if loaded is None:
        return {"skipped": "fewer than 2 pending items with the map's inputs"}
    run = enqueue_rescore(r, pid, f"pool map v{loaded.version}", clusters=True)
    return {"version": loaded.version, "clusters": loaded.pool_map.n_clusters,
            "n_items": loaded.n_items, "fit_seconds": round(time.perf_counter() - started, 4),
            "rescore_job_id": run}
