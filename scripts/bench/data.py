"""Benchmark state in Redis: projects, experts, and pools pre-filled through the queue layer."""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Iterable

import redis
from tqdm import tqdm

from taskrank.queue.connection import connect
from taskrank.queue.experts import put_expert
from taskrank.queue.items import ingest
from taskrank.queue.projects import create_project, get_project
from taskrank.queue.settings import Settings
from taskrank.scripts.bench.items import BATCH, LABELS, SEED, make_items

IN_PROCESS_BELOW = 25_000


def new_project(r: redis.Redis, pid: str, **extra: object) -> dict:
    """A k=5 project with the default strategy (redundancy 1 unless ``extra`` says)."""
    return create_project(r, {"id": pid, "labels": LABELS, **extra})


def declare_experts(r: redis.Redis, ids: Iterable[str], capacity: int = 5) -> None:
    """Experts without skill tags (every item is untagged), default cost."""
    for eid in ids:
        put_expert(r, eid, {"skills": {}, "capacity": capacity})


def _ingest_range(settings: Settings, pid: str, first: int, stop: int, seed: int) -> int:
    """Child process: ingest items ``first .. stop-1`` through the queue layer."""
    r = connect(settings, socket_timeout=120.0)
    project = get_project(r, pid)
    stored = 0
    for start in range(first, stop, BATCH):
        answer = ingest(r, project, make_items(start, min(BATCH, stop - start), seed),
                        settings=settings)
        stored += answer["created"] + answer["updated"]
    return stored


def prefill(settings: Settings, pid: str, start: int, stop: int, processes: int = 2,
            seed: int = SEED) -> int:
    """Store items ``start .. stop-1`` with ``taskrank.queue.items.ingest`` in batches of
    1,000, from ``processes`` processes so scoring overlaps with Redis's Lua work (small
    fills stay in this process: a spawned child spends seconds importing scikit-learn)."""
    if stop <= start:
        return 0
    if processes == 1 or stop - start < IN_PROCESS_BELOW:
        return _ingest_range(settings, pid, start, stop, seed)
    slices = _slices(start, stop, processes * 8)
    context = multiprocessing.get_context("spawn")
    stored = 0
    with context.Pool(processes) as pool, tqdm(total=stop - start, unit="item", leave=False,
                                               desc=f"prefill {pid}", file=sys.stderr) as bar:
        jobs = [pool.apply_async(_ingest_range, (settings, pid, a, b, seed))
                for a, b in slices]
        for job in jobs:
            done = job.get(timeout=3600)
            stored += done
            bar.update(done)
    return stored


def _slices(start: int, stop: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous ranges of whole batches covering ``start .. stop-1``."""
    batches = list(range(start, stop, BATCH))
    per = max(1, -(-len(batches) // parts))
    return [(batches[i], min(stop, batches[i] + per * BATCH)) for i in range(0, len(batches), per)]
