"""Redis clients built from settings: the data store (a single Redis or a Redis Cluster) and
the Redis RQ runs on (always a single one: RQ does not support Cluster).

The data store is ``TASKRANK_REDIS_URL``.  Whether it is a cluster is ``TASKRANK_REDIS_CLUSTER``
or, unset, what the server says (``INFO cluster``, asked once per process and URL; the
embedded Redis is started as no cluster, so the default never asks).  RQ runs on
``TASKRANK_RQ_REDIS_URL``, by default on the data store's server when that is no cluster.
Code that holds a data client and queues a job gets its RQ client from ``rq_redis``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import hiredis
import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.connection import parse_url
from redis.exceptions import (
    AskError,
    ClusterError,
    ReadOnlyError,
    RedisClusterUnreachableError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.retry import Retry

from taskrank.queue.settings import Settings, SettingsError, current

log = logging.getLogger(__name__)

_OPTIONS = {"socket_timeout": 5.0, "socket_connect_timeout": 2.0, "health_check_interval": 30}
_detected: dict[str, bool] = {}  # cluster or not, by URL (this process's answers)


class NoRqRedisError(SettingsError):
    """The data store is a Redis Cluster and no single Redis is configured for RQ."""

    def __init__(self) -> None:
        super().__init__(
            "TASKRANK_REDIS_URL is a Redis Cluster, and RQ (the job queue of retrains, "
            "re-scores and webhooks) needs a single Redis: set TASKRANK_RQ_REDIS_URL to one "
            "(every web process and worker the same)")


class ClusterUnreachableError(redis.ConnectionError):
    """No node of the cluster answers, or none serves the slot.  redis-py raises
    ``RedisClusterUnreachableError`` or ``SlotNotCoveredError``, which are no
    ``RedisError``; as a ``ConnectionError`` an outage of the cluster is handled as one of
    a single Redis (a 503, a label's follow-up left to the upkeep...)."""


@contextlib.contextmanager
def _outage_as_connection_error() -> Iterator[None]:
    try:
        yield
    except (RedisClusterUnreachableError, SlotNotCoveredError) as error:
        raise ClusterUnreachableError(str(error)) from error


class ClusterClient(RedisCluster):
    """redis-py's cluster client, with two differences that make it behave as a single
    Redis's client: an unreachable cluster raises ``ClusterUnreachableError``, and pipelines
    are transactions unless told otherwise (redis-py's cluster default is none).  A pipeline
    over one project's keys (one slot) is then MULTI/EXEC on both, and one that spans slots
    (global keys, several projects) must say ``transaction=False``, or it fails at once."""

    def execute_command(self, *args: object, **options: object) -> object:
        with _outage_as_connection_error():
            return super().execute_command(*args, **options)

    def pipeline(self, transaction: bool | None = None, shard_hint: object = None
                 ) -> ClusterPipelineClient:
        pipe = super().pipeline(True if transaction is None else transaction, shard_hint)
        pipe.__class__ = ClusterPipelineClient  # the same pipeline, its outage translated
        return pipe


class ClusterPipelineClient(ClusterPipeline):
    """A ``ClusterPipeline`` whose ``execute`` raises ``ClusterUnreachableError`` on an
    outage (``ClusterClient.pipeline``)."""

    def execute(self, raise_on_error: bool = True) -> list:
        with _outage_as_connection_error():
            return super().execute(raise_on_error)


DataClient = redis.Redis | ClusterClient
# What the data store raises when it cannot answer now (down, loading, a Redis Cluster
# master failing over or unreachable, a write to a node just turned replica): a 503 for
# a request (server/errors.py), the last value for the web tier's caches (server/cache.py).
UNAVAILABLE = (redis.ConnectionError, redis.TimeoutError, ClusterError, TryAgainError,
               AskError, ReadOnlyError, SlotNotCoveredError, RedisClusterUnreachableError)


def connect(settings: Settings, fail_fast: bool = False, **kwargs: object) -> DataClient:
    """A client for the data store: a ``ClusterClient`` when it is a cluster, else a
    ``redis.Redis``; ``settings.redis_url`` must be set by then.  On a cluster, how long a
    call waits out a failover (``cluster_retry``): ``fail_fast`` for the web tier."""
    if not settings.redis_url:
        raise ValueError("no Redis URL: set TASKRANK_REDIS_URL or start the embedded Redis first")
    options = {"decode_responses": True, **_OPTIONS, **kwargs}
    if is_cluster(settings):
        return _cluster_client(settings.redis_url, **cluster_retry(fail_fast), **options)
    return redis.Redis.from_url(settings.redis_url, **options)


def _cluster_client(url: str, **options: object) -> ClusterClient:
    """A cluster client from one node's URL or several, comma-separated: it starts from any
    of them that answers (one is enough to find the others, but a process started while
    the only node it names is down, a failed master say, could not start at all)."""
    first, *others = (part.strip() for part in url.split(","))
    seeds = [ClusterNode(parsed["host"], parsed.get("port", 6379))
             for parsed in map(parse_url, others)]
    return ClusterClient(url=first, startup_nodes=seeds, **options)


def cluster_retry(fail_fast: bool) -> dict[str, object]:
    """Cluster client options for a call that meets a master's failover (redis-py's
    default, 10 retries with a backoff up to 1 s, gives up after about 3 s, and a failover
    takes the cluster's node timeout, 15 s by default, plus a second or two).

    ``fail_fast``, the web tier: the request is answered a 503 (which clients retry)
    within about 0.1 s instead of being held.  One retry is kept, after the topology
    refresh the error asks for, so a web process whose slot map went stale (a master
    replaced while it served other projects) reaches the new master at once; refreshes
    may come every 0.1 s (default 1 s; one CLUSTER SLOTS each).

    Otherwise (RQ jobs, the workers' upkeep, commands): up to 30 retries, about 25 s, so
    that a job rides a failover out as it rides out a restart of a single Redis.
    """
    if fail_fast:
        return {"retry": Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.2), retries=1),
                "topology_refresh_min_interval": 0.1}
    return {"retry": Retry(ExponentialWithJitterBackoff(base=0.1, cap=1.0), retries=30)}


def is_cluster(settings: Settings) -> bool:
    """Whether the data store is a Redis Cluster (``settings.redis_cluster``, else asked).

    A server that cannot be asked (down while this process starts) is taken for a single
    Redis, as before clusters, so that the web tier still starts and answers 503 until it
    is back; the question is asked again by the next client built.
    """
    if settings.redis_cluster is not None:
        return settings.redis_cluster
    url = settings.redis_url
    if url.startswith("unix://"):  # a cluster's nodes talk TCP: no need to ask
        return False
    if "," in url:  # several nodes: a cluster's
        return True
    if url not in _detected:
        try:
            with redis.Redis.from_url(url, **_OPTIONS) as probe:
                _detected[url] = probe.info("cluster").get("cluster_enabled") == 1
        except redis.RedisError as error:
            log.warning("cannot ask %s whether it is a Redis Cluster (%s): taken for a single "
                        "Redis; set TASKRANK_REDIS_CLUSTER to say", url, error)
            return False
    return _detected[url]


def rq_url(settings: Settings) -> str:
    """The URL of the Redis RQ runs on; raises ``NoRqRedisError`` on a cluster without one."""
    if settings.rq_redis_url:
        return settings.rq_redis_url
    if not settings.redis_url:
        raise ValueError("no Redis URL: set TASKRANK_REDIS_URL or start the embedded Redis first")
    if is_cluster(settings):
        raise NoRqRedisError()
    return settings.redis_url


def connect_rq(settings: Settings, **kwargs: object) -> redis.Redis:
    """A client on the Redis RQ runs on, returning bytes (RQ needs raw values)."""
    return redis.Redis.from_url(rq_url(settings), **{"decode_responses": False, **_OPTIONS,
                                                     **kwargs})


def rq_redis(r: DataClient, settings: Settings | None = None) -> redis.Redis:
    """A bytes client on the Redis RQ runs on, for code holding the data client ``r``: the
    RQ Redis of ``settings`` (default this process's) when one is set, else ``r``'s own
    server."""
    settings = settings or current()
    if settings.rq_redis_url:
        return connect_rq(settings)
    if isinstance(r, RedisCluster):
        raise NoRqRedisError()
    return same_server(r, decode_responses=False)


def same_server(client: redis.Redis, decode_responses: bool) -> redis.Redis:
    """Another client on ``client``'s server with the given decoding (RQ hands jobs a bytes
    client; the store reads strings)."""
    pool = client.connection_pool
    kwargs = {**pool.connection_kwargs, "decode_responses": decode_responses}
    other = redis.Redis(connection_pool=redis.ConnectionPool(
        connection_class=pool.connection_class, **kwargs))
    # It owns its pool, so close() (or a with block) closes its sockets: left to the garbage
    # collector (redis-py clients are in reference cycles), a socket may be finalized open.
    other.auto_close_connection_pool = True
    return other


def masters(r: DataClient) -> list[redis.Redis]:
    """A client per server holding data: every master of a cluster, else ``r`` itself (for
    what must hold on each: durability settings, readiness, benchmarks' INFO)."""
    if isinstance(r, RedisCluster):
        return [r.get_redis_connection(node) for node in r.get_primaries()]
    return [r]


def send_many(r: DataClient, commands: list[tuple]) -> list:
    """The replies of ``commands``, sent in one write on one connection.

    A redis-py pipeline spends ~10 µs of pure Python per command (the re-score's 2,000
    HMGETs per batch); here commands are packed by hiredis and the replies parsed by one
    ``hiredis.Reader``: ~2 µs.  Each command still runs on its own in Redis, so a batch
    never holds Redis the way one script would.  Replies are as Redis sends them, without
    redis-py's per-command conversions.  Raises the first error reply.

    On a cluster the connection is one to the master of the first command's key: every key
    must be of that slot (one project's), or its command answers a MOVED error (raised).
    """
    if not commands:
        return []
    pool = _pool_of(r, commands[0][1])
    conn = pool.get_connection()
    try:
        # One buffer packed in C (str as UTF-8, numbers as their repr, as redis-py does).
        conn.send_packed_command([b"".join(map(hiredis.pack_command, commands))])
        replies = _read_replies(conn, len(commands))
    except BaseException:
        conn.disconnect()  # replies may be left unread: the connection cannot be reused
        raise
    finally:
        pool.release(conn)
    for reply in replies:
        if isinstance(reply, hiredis.ReplyError):
            raise redis.ResponseError(str(reply))
    return replies


def _pool_of(r: DataClient, key: str) -> redis.ConnectionPool:
    if isinstance(r, RedisCluster):
        return r.get_redis_connection(r.get_node_from_key(key)).connection_pool
    return r.connection_pool


def _read_replies(conn: redis.connection.Connection, count: int) -> list:
    encoding = conn.encoder.encoding if conn.encoder.decode_responses else None
    reader = hiredis.Reader(encoding=encoding) if encoding else hiredis.Reader()
    replies: list = []
    while len(replies) < count:
        reply = reader.gets()
        if reply is False:  # incomplete: read more (the socket keeps its timeout)
            chunk = conn._sock.recv(1 << 20)
            if not chunk:
                raise redis.ConnectionError("Redis closed the connection mid-reply")
            reader.feed(chunk)
        else:
            replies.append(reply)
    return replies
