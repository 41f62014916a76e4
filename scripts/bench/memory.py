"""Redis memory per item (k=5, 2 models, no features; DESIGN §7 budget <= 1 KB).

Two figures: ``MEMORY USAGE`` of a sample of item hashes plus each item's share of the
untagged pool sorted set (the items have no skill tags, and there is no global pool) and
the item-id set, and the honest one, the growth of ``INFO memory``
``used_memory`` divided by the number of items.
"""

from __future__ import annotations

import random

import redis

from taskrank.queue import keys as K
from taskrank.scripts.bench.data import new_project, prefill
from taskrank.scripts.bench.items import SEED
from taskrank.scripts.bench.processes import fresh_redis

SAMPLE = 500


def run(n: int, fsync: str = "always") -> dict:
    """Fill a fresh Redis with ``n`` pending items and measure what they cost."""
    with fresh_redis(fsync) as (settings, r):
        new_project(r, "mem")
        before = _used_memory(r)
        prefill(settings, "mem", 0, n)
        after = _used_memory(r)
        hashes = _sampled_hash_bytes(r, "mem", n)
        shared = _shared_bytes(r, "mem")
        config = r.config_get("hash-max-*")
        encoding = r.object("encoding", K.item_key("mem", "item-0000000"))
    per_item_shared = {name: round(size / n, 1) for name, size in shared.items()}
    keys_per_item = hashes["mean"] + sum(per_item_shared.values())
    return {"items": n, "used_memory_delta_bytes": after - before,
            "bytes_per_item_used_memory": round((after - before) / n, 1),
            "item_hash_bytes": hashes, "shared_bytes_per_item": per_item_shared,
            "bytes_per_item_memory_usage": round(keys_per_item, 1),
            "item_hash_encoding": encoding, "redis_hash_config": config}


def _used_memory(r: redis.Redis) -> int:
    return int(r.info("memory")["used_memory"])


def _sampled_hash_bytes(r: redis.Redis, pid: str, n: int) -> dict:
    """``MEMORY USAGE`` (exact: SAMPLES 0) of up to ``SAMPLE`` seeded-random item hashes."""
    rng = random.Random(SEED)
    indexes = rng.sample(range(n), min(SAMPLE, n))
    pipe = r.pipeline()
    for index in indexes:
        pipe.memory_usage(K.item_key(pid, f"item-{index:07d}"), samples=0)
    sizes = [size for size in pipe.execute() if size]
    return {"sampled": len(sizes), "mean": round(sum(sizes) / len(sizes), 1),
            "min": min(sizes), "max": max(sizes)}


def _shared_bytes(r: redis.Redis, pid: str) -> dict:
    """Whole-pool structures an item also lives in (its share is size / n)."""
    names = {"pool_untagged": K.pool_untagged_key(pid), "items_set": K.items_key(pid)}
    return {name: int(r.memory_usage(key, samples=0) or 0) for name, key in names.items()}
