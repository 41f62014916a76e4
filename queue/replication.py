"""Acknowledged means replicated: where the data store has replicas (a Redis Cluster's
masters), an answer that promises stored data is sent only once a replica holds the write.

Replication is asynchronous: a master answers a write before its replicas have it, and a
failover right then promotes a replica without it.  ``WAIT n t`` blocks until n replicas
acknowledged the writes *of the connection it is sent on*.  A WAIT after a write sent
through redis-py's cluster client (any pooled connection) would prove nothing, and after an
idempotent replay (a label sent again, which writes nothing) it would return at once while
the original write, sent by another connection, may still be on the master alone.  So
after the write, one round trip on one connection to the project's master sends a tiny
write of its own (INCR of ``keys.replication_fence_key``, in the project's slot) and WAIT:
the fence comes after every write that master propagated before it, so a replica that
acknowledged the fence holds the write being answered, whoever sent it.

The master is pinned *before* the write, from the client's slot map: the fence goes to the
node the write was sent to, never to a successor found meanwhile.  Had that master been
replaced (the write redirected, or lost in a failover), the fence fails there (refused,
MOVED, no replica left) and the answer is a 503, never an acknowledgment that the new
master's other replicas could give for a write they never saw.

    with replicated(r, pid, settings):
        ...  # the write the answer acknowledges
    # a replica holds it here; otherwise NotReplicatedError (a 503, safe to repeat)

A write that raises inside the block is not fenced: nothing is acknowledged.  How many
replicas: ``TASKRANK_REDIS_WAIT_REPLICAS``; 'auto' (the default) waits for one on a cluster
while the master has one online, none on a single Redis (``wanted_replicas``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from redis.cluster import RedisCluster

from taskrank.queue import keys as K
from taskrank.queue.connection import DataClient
from taskrank.queue.exceptions import NotReplicatedError
from taskrank.queue.settings import Settings

log = logging.getLogger(__name__)
ONLINE_SECONDS = 1.0  # how long a process trusts a master's count of its online replicas
_ONLINE_ATTR = "_taskrank_online_replicas"  # on the client: node -> (until, count)


@contextmanager
def replicated(r: DataClient, pid: str, settings: Settings) -> Iterator[None]:
    """Run the block's write, then wait until enough replicas of project ``pid``'s master
    hold it; raises ``NotReplicatedError`` when they do not in time (module docstring)."""
    key = K.replication_fence_key(pid)
    master, name = _master(r, key)
    yield
    # Only the pinned master is asked from here: an error means the write may be lost.
    try:
        replicas = wanted_replicas(r, master, name, settings)
        acknowledged = _fence(master, key, replicas, settings.redis_wait_timeout_ms)
    except redis.RedisError as error:
        log.warning("write not confirmed by a replica (%s: %s)", type(error).__name__, error)
        raise NotReplicatedError(_detail(f"its master could not be asked ({error})")) from error
    if acknowledged < replicas:
        log.warning("write not confirmed by a replica: %d of %d within %d ms", acknowledged,
                    replicas, settings.redis_wait_timeout_ms)
        raise NotReplicatedError(_detail(
            f"{acknowledged} of the {replicas} replicas wanted confirmed it within "
            f"{settings.redis_wait_timeout_ms} ms"))


def wanted_replicas(r: DataClient, master: redis.Redis, name: str,
                    settings: Settings) -> int:
    """Replicas a write to ``master`` must reach before it is acknowledged: the setting;
    for 'auto' on a cluster, 1 while the master has a replica online, else 0.

    A master with no replica online (its replica died, or it is a replica promoted by a
    failover whose old master has not rejoined) cannot have a write replicated: waiting
    would refuse every write of its projects until an operator brings a replica back, so
    'auto' acknowledges them on the master alone (its append-only file) and logs it.  A
    replica that is attached but lagging or stalled still counts: writes then wait for it.
    """
    if settings.redis_wait_replicas is not None:
        return settings.redis_wait_replicas
    if not isinstance(r, RedisCluster):
        return 0
    return min(1, _online_replicas(r, master, name))


def _master(r: DataClient, key: str) -> tuple[redis.Redis, str]:
    """A client on the master of ``key``'s slot as the client's slot map says now, and the
    master's name: pinned before the write (module docstring)."""
    if not isinstance(r, RedisCluster):
        return r, ""
    node = r.get_node_from_key(key)
    return r.get_redis_connection(node), node.name


def _online_replicas(r: RedisCluster, master: redis.Redis, name: str) -> int:
    """The replicas ``master`` streams to (ROLE), asked at most once per ONLINE_SECONDS."""
    known = r.__dict__.setdefault(_ONLINE_ATTR, {})
    until, count = known.get(name, (0.0, None))
    if time.monotonic() < until:
        return count
    role = master.execute_command("ROLE")
    # A node that is no master now: the write is redirected and the fence, sent here,
    # fails (a 503): never an acknowledgment nobody checked.
    online = len(role[2]) if role[0] == "master" else 1
    if online == 0 and count != 0:
        log.warning("Redis master %s has no replica online: writes of its projects are "
                    "acknowledged on it alone until one is back", name)
    known[name] = (time.monotonic() + ONLINE_SECONDS, online)
    return online


def _fence(master: redis.Redis, key: str, replicas: int, timeout_ms: int) -> int:
    """INCR the fence and WAIT for ``replicas``, in one round trip on one connection; how
    many acknowledged (0 wanted: nothing sent)."""
    if replicas == 0:
        return 0
    with master.pipeline(transaction=False) as pipe:
        pipe.incr(key)
        pipe.execute_command("WAIT", replicas, timeout_ms)
        return pipe.execute()[1]


def _detail(why: str) -> str:
    return (f"the request's data is stored on its Redis master but not yet on a replica "
            f"({why}): a failover now could lose it, so it is not acknowledged. The request "
            "is safe to repeat (nothing is stored twice; a label sent again with the same "
            "Idempotency-Key gets the answer of the first): it is answered as usual once a "
            "replica holds the data")
