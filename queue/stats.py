"""Project statistics: counts by status, open leases, labels per hour, model version."""

from __future__ import annotations

import time

import redis

from taskrank.queue import keys as K


def project_stats(r: redis.Redis, project: dict) -> dict:
    pid = project["id"]
    pipe = r.pipeline()
    pipe.scard(K.items_key(pid))
    pipe.zcard(K.leases_key(pid))
    pipe.hgetall(K.counters_key(pid))
    pipe.hgetall(K.model_meta_key(pid))
    total, open_leases, counters, model = pipe.execute()
    # Kept by the Lua scripts as items change status (there is no global pool to count).
    by_status = {status: int(counters.get(f"n:{status}", 0))
                 for status in ("pending", "leased", "labeled", "gold", "withdrawn")}
    return {
        "project_id": pid,
        "items": {"total": total, **by_status},
        "open_leases": open_leases,
        "labels": {"counted": int(counters.get("counted", 0)),
                   "late": int(counters.get("late", 0)),
                   "last_hour": labels_last_hour(r, pid, counters)},
        "model_version": int(model["version"]) if model.get("version") else None,
        "strategy_version": project["strategy_version"],
    }


def labels_last_hour(r: redis.Redis, pid: str, counters: dict[str, str]) -> int:
    """Sum of the last 60 per-minute buckets; older buckets are deleted on the way."""
    minute = int(time.time() // 60)
    total, stale = 0, []
    for field, count in counters.items():
        if field.startswith("m:"):
            age = minute - int(field[2:])
            if age < 60:
                total += int(count)
            else:
                stale.append(field)
    if stale:
        r.hdel(K.counters_key(pid), *stale)
    return total
