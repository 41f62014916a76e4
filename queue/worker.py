"""The RQ worker process, plus the periodic upkeep every worker does (lease sweeps, labels
whose follow-up failed, webhook outboxes left undrained, jobs abandoned by dead workers)."""

from __future__ import annotations

import logging
import os
import signal
import threading

import redis
from rq import Queue, SimpleWorker, Worker
from threadpoolctl import threadpool_limits

from taskrank.queue.abandoned import reap_abandoned, worker_name
from taskrank.queue.connection import connect, connect_rq
from taskrank.queue.processes import forks_die_with_this_process
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
    """The RQ queue taskrank's jobs go to (on the RQ Redis: ``connection.rq_redis``)."""
    return Queue(settings.queue_name, connection=connection or connect_rq(settings))


def low_queue(settings: Settings, connection=None) -> Queue:  # noqa: ANN001 - a redis client
    """The queue of work nobody waits for (the tail of a re-score, cross-validation): a
    worker takes its jobs only while ``task_queue`` is empty."""
    return Queue(f"{settings.queue_name}-low", connection=connection or connect_rq(settings))


def task_queues(settings: Settings, connection=None) -> list[Queue]:  # noqa: ANN001
    """Every queue a worker serves, in the order it serves them."""
    connection = connection or connect_rq(settings)
    return [task_queue(settings, connection), low_queue(settings, connection)]


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
    be_nice(settings.worker_nice)
    # The work horse and the scheduler RQ forks die with this process, even by SIGKILL: a
    # job killed with its worker is abandoned (queue/abandoned.py), never run twice.
    forks_die_with_this_process(signal.SIGKILL)
    connection = connect_rq(settings)
    queues = task_queues(settings, connection)
    _reap(queues)  # the jobs of workers that died before this one started
    stop = threading.Event()
    if not burst:
        upkeep = threading.Thread(target=_upkeep_loop, args=(settings, stop), daemon=True)
        upkeep.start()
    try:
        # Named after host, pid and start time: its death can be told from /proc.
        # RQ takes a job from the first queue that has one: the low queue waits.
        worker = TaskWorker(queues, name=worker_name(), connection=connection)
        worker.work(burst=burst, with_scheduler=not burst, logging_level=settings.log_level)
    finally:
        stop.set()


def be_nice(niceness: int) -> None:
    """Run this process (and the work horses it forks) at ``niceness``, never higher in
    priority than it already is: under ``taskrank serve`` the worker shares the cores with
    gunicorn and Redis, and a request waiting behind a re-score costs an expert's time."""
    current_niceness = os.getpriority(os.PRIO_PROCESS, 0)
    if niceness > current_niceness:
        os.setpriority(os.PRIO_PROCESS, 0, niceness)


def _upkeep_loop(settings: Settings, stop: threading.Event) -> None:
    """Return expired leases to the pool even when no request touches a project; finish the
    follow-up of labels whose own failed; deliver webhook events whose drain job was never
    queued (queue/events.py); hand the jobs of dead workers to RQ's cleanup."""
    from taskrank.queue.after_label import drain_followups
    from taskrank.queue.delivery import drain_all
    from taskrank.queue.tasks import sweep_all_projects

    r = connect(settings)  # the data store (the queue may live on another Redis)
    queues = task_queues(settings)
    while not stop.wait(settings.sweep_interval):
        upkeep = ((sweep_all_projects, "lease sweep"),
                  (lambda client: drain_followups(client, settings), "label follow-up"),
                  (drain_all, "webhook drain"))
        for task, what in upkeep:
            try:
                task(r)
            except Exception:  # the loop must survive a Redis restart; the error is logged
                log.exception("%s failed; retrying in %s s", what, settings.sweep_interval)
        _reap(queues)


def _reap(queues: list[Queue]) -> None:
    """``reap_abandoned``, logged; Redis unavailable: the next try (or worker) does it."""
    try:
        reaped = reap_abandoned(*queues)
    except redis.RedisError as error:
        log.warning("could not look for abandoned jobs: %s", error)
        return
    if reaped:
        log.warning("jobs abandoned by a dead worker, retried or failed: %s", reaped)
