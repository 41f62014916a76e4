"""What ``GET /readyz`` reports: whether each part of taskrank works.

- ``redis``: the data store answers, every master of a Redis Cluster (``down`` while one is
  unreachable or still loading its append-only file: its projects cannot be served then).
- ``workers``: RQ workers alive on the taskrank queue (``down`` with none, or while RQ's
  Redis, when it is another one, is unreachable: labels are still taken and tasks served,
  but retrains and re-scores wait).  A worker counts once it has registered, and stops
  counting once it is known dead (``taskrank.queue.abandoned``) or its registration expires.
"""

from __future__ import annotations

import redis
from redis.cluster import RedisCluster
from rq import Queue

from taskrank.queue.abandoned import live_workers
from taskrank.queue.connection import DataClient, rq_redis

OK, DOWN, UNKNOWN = "ok", "down", "unknown"


def readiness(r: DataClient, queue_name: str) -> dict[str, dict]:
    """``{"redis": {"status", "detail"?}, "workers": {"status", "running"?, "detail"?}}``."""
    try:
        _ping_masters(r)
    except redis.BusyLoadingError:
        return _redis_down("loading its append-only file")
    except redis.RedisError as error:
        return _redis_down(f"unreachable: {error}")
    try:
        with rq_redis(r) as connection:
            running = len(live_workers(Queue(queue_name, connection=connection)))
    except redis.RedisError as error:
        return {"redis": {"status": OK}, "workers": {
            "status": DOWN, "detail": f"RQ's Redis is unreachable ({error}): labels are "
                                      "taken, but retrains and re-scores wait for it"}}
    workers: dict = {"status": OK if running else DOWN, "running": running}
    if not running:
        workers["detail"] = ("no RQ worker is running: labels are taken, but retrains and "
                             "re-scores wait for one")
    return {"redis": {"status": OK}, "workers": workers}


def _ping_masters(r: DataClient) -> None:
    """Every master answers PING.  On a cluster, through the cluster client: an error there
    refreshes its slot map, so a failed-over master is replaced by its successor (a PING
    to each master of the map, straight, would keep asking the dead one)."""
    if isinstance(r, RedisCluster):
        r.ping(target_nodes=RedisCluster.PRIMARIES)
    else:
        r.ping()


def _redis_down(detail: str) -> dict[str, dict]:
    return {"redis": {"status": DOWN, "detail": detail},
            "workers": {"status": UNKNOWN, "detail": "unknown while Redis is down"}}
