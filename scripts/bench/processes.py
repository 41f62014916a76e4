"""The real processes a benchmark runs against, from the one process stack.

Each is a context manager that starts the process(es), waits until they answer, and stops
them (and only them) on the way out, whatever happened in between.  Children get the
benchmark's settings and none of the caller's TASKRANK_* variables.
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import redis

from taskrank.queue.connection import DataClient, connect
from taskrank.queue.embedded import free_port
from taskrank.queue.local_cluster import LocalCluster
from taskrank.queue.settings import Settings
from taskrank.scripts.stack import WEB_APP, Child, Stack, Web, clean_environ


@contextlib.contextmanager
def fresh_redis(fsync: str = "always", tcp: bool = False) -> Iterator[tuple[Settings,
                                                                           redis.Redis]]:
    """A new embedded Redis (AOF on, ``appendfsync`` = ``fsync``) in a temporary directory,
    on its unix socket (with ``tcp``: on a loopback port, as a cluster's nodes are)."""
    with tempfile.TemporaryDirectory(prefix="taskrank-bench-") as data_dir:
        stack = Stack(Settings(data_dir=data_dir, redis_fsync=fsync), clean_environ(),
                      redis_stop_timeout=60.0)
        with stack:
            stack.start_redis(Path(data_dir) / "redis", port=free_port() if tcp else None)
            client = connect(stack.settings, socket_timeout=120.0)
            yield stack.settings, client
            client.close()


@contextlib.contextmanager
def fresh_cluster(fsync: str = "always", masters: int = 3, **cluster: int
                  ) -> Iterator[tuple[Settings, DataClient]]:
    """A new local Redis Cluster of ``masters`` masters (AOF on, ``appendfsync`` =
    ``fsync``; ``cluster``: more ``LocalCluster`` arguments) and an embedded Redis for RQ's
    queue, in a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="taskrank-bench-") as data_dir, \
            LocalCluster(Path(data_dir) / "cluster", masters=masters, fsync=fsync,
                         **cluster) as nodes:
        settings = Settings(redis_url=nodes.nodes_url, redis_cluster=True, data_dir=data_dir,
                            redis_fsync=fsync)
        with Stack(settings, clean_environ(), redis_stop_timeout=60.0) as stack:
            stack.start_redis(queue_only=True)
            client = connect(stack.settings, socket_timeout=120.0)
            yield stack.settings, client
            client.close()


@contextlib.contextmanager
def gunicorn(settings: Settings, app: str = WEB_APP, workers: int = 2,
             extra_args: tuple[str, ...] = ()) -> Iterator[Web]:
    """``gunicorn -w workers`` serving ``app`` on a free loopback port, answering."""
    with Stack(settings.replace(host="127.0.0.1"), clean_environ()) as stack:
        yield stack.start_web(app, workers, port=0, args=extra_args).wait_ready()


@contextlib.contextmanager
def rq_workers(settings: Settings, count: int) -> Iterator[list[Child]]:
    """``count`` ``taskrank worker`` processes on the benchmark's Redis (quiet), each
    registered on the queue (so their start-up is not timed), at niceness 0: no request
    runs beside them here, and on a shared machine a niced worker would measure the
    machine's other load (``bench shipped`` runs them as shipped, niced)."""
    with Stack(settings, clean_environ(), stdout=subprocess.DEVNULL) as stack:
        workers = stack.start_workers(count, TASKRANK_LOG_LEVEL="WARNING",
                                      TASKRANK_WORKER_NICE="0")
        stack.wait_workers(count)
        yield workers
