"""The RQ worker process, plus the periodic upkeep every worker does (lease sweeps, webhook
outboxes left undrained)."""

from __future__ import annotations

import logging
import threading

from rq import Queue, SimpleWorker, Worker
from threadpoolctl import threadpool_limits

from taskrank.queue.connection import connect, connect_binary
from taskrank.queue.settings import Settings, install

log = logging.getLogger(__name__)


# RQ listens for worker commands on a pub/sub thread that wakes every 60 s, and redis-py 8
# joins that thread without a timeout when RQ stops it: every worker's teardown (each burst,
# each graceful stop) could stall up to two minutes.  Waking every second keeps it short.
PUBSUB_POLL_SECONDS = 1.0


class _PromptListener:
    """RQ's command listener, waking every ``PUBSUB_POLL_SECONDS``."""

    def subscribe(self) -> None:
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(
            sleep_time=PUBSUB_POLL_SECONDS, daemon=True,
            exception_handler=self._pubsub_exception_handler)


class TaskWorker(_PromptListener, Worker):
    """taskrank's RQ worker: a work horse forked per job."""


class InProcessWorker(_PromptListener, SimpleWorker):
    """Works jobs in this process (``taskrank backfill``'s private queue, tests)."""


def task_queue(settings: Settings, connection=None) -> Queue:  # noqa: ANN001 - a redis client
    """The RQ queue taskrank's jobs go to."""
    return Queue(settings.queue_name, connection=connection or connect_binary(settings))


def run_worker(settings: Settings, burst: bool = False) -> None:
    """Work jobs with ``settings`` until stopped (or until the queue is empty with ``burst``)."""
    logging.basicConfig(level=settings.log_level)
    # Installed before RQ forks a work horse per job: every job inherits these settings
    # instead of reading the environment (queue/settings.py).
    install(settings)
    # Imported before RQ forks a work horse per job; otherwise every job re-imports
    # scikit-learn (~1 s per re-score chunk; `taskrank bench rescore` 2.1x faster with it).
    import taskrank.queue.pool_map_jobs  # noqa: F401
    import taskrank.queue.retrain  # noqa: F401

    # One BLAS thread per worker: models are small, and idle-spinning BLAS threads of two
    # workers fight over the cores (a retrain on 85 labels: 3-8 s, with this 0.6 s).
    threadpool_limits(1)
    connection = connect_binary(settings)
    stop = threading.Event()
    if not burst:
        upkeep = threading.Thread(target=_upkeep_loop, args=(settings, stop), daemon=True)
        upkeep.start()
    try:
        worker = TaskWorker([task_queue(settings, connection)], connection=connection)
        worker.work(burst=burst, with_scheduler=not burst, logging_level=settings.log_level)
    finally:
        stop.set()


def _upkeep_loop(settings: Settings, stop: threading.Event) -> None:
    """Return expired leases to the pool even when no request touches a project, and
    deliver webhook events whose drain job was never queued (queue/events.py)."""
    from taskrank.queue.delivery import drain_all
    from taskrank.queue.tasks import sweep_all_projects

    r = connect(settings)
    while not stop.wait(settings.sweep_interval):
        for task, what in ((sweep_all_projects, "lease sweep"), (drain_all, "webhook drain")):
            try:
                task(r)
            except Exception:  # the loop must survive a Redis restart; the error is logged
                log.exception("%s failed; retrying in %s s", what, settings.sweep_interval)
