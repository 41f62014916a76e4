"""When a retrain may start: not sooner than ``strategy.retrain.min_interval_seconds`` after
the previous one started.

Labels ask for a retrain every ``retrain.every_labels`` (``queue/after_label.py``).  Within
the floor the retrain is queued to start when the floor has passed: it waits in RQ's
scheduled registry, which the scheduler of every non-burst worker (``taskrank worker``,
``taskrank serve``'s) checks once a second, and later labels merge into that one waiting
job (its pending mark).  So under a stream of labels a project retrains at most once per
floor, and a label waits at most the floor (plus a second) for the retrain that learns
from it to start.  If the waiting job is lost, or no scheduler queues it, the workers'
upkeep queues it (``late_retrain``).
"""

from __future__ import annotations

import contextlib
import datetime
import math

import redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import ScheduledJobRegistry

from taskrank.queue import keys as K
from taskrank.queue.clock import now as clock_now

STARTED_FIELD = "retrain_at"  # in the project's counters: when the last retrain started
LATE_SECONDS = 5.0  # a scheduled retrain this far past its time has no scheduler to run it
GONE = (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED)


def retrain_started(r: redis.Redis, pid: str, now: float | None = None) -> None:
    """A retrain begins: labels counted from now on queue the next one (its pending mark
    is cleared), which waits for the floor from now."""
    pipe = r.pipeline(transaction=False)
    pipe.delete(K.retrain_pending_key(pid))
    pipe.hset(K.counters_key(pid), STARTED_FIELD, clock_now() if now is None else now)
    pipe.execute()


def start_time(r: redis.Redis, pid: str, min_interval: float,
               now: float | None = None) -> datetime.datetime | None:
    """When a retrain asked for now may start: None for at once, else the first whole
    second at least ``min_interval`` after the previous retrain started (RQ schedules by
    whole seconds and would otherwise start it up to a second early)."""
    now = clock_now() if now is None else now
    last = r.hget(K.counters_key(pid), STARTED_FIELD) if min_interval > 0 else None
    if last is None or float(last) + min_interval <= now:
        return None
    return datetime.datetime.fromtimestamp(math.ceil(float(last) + min_interval), datetime.UTC)


def late_retrain(r: redis.Redis, queue: Queue, pid: str, now: float | None = None) -> str | None:
    """The workers' upkeep: what became of the retrain the project's pending mark names.

    ``"lost"`` when its job is gone or ended without starting (the mark is cleared: the
    caller queues a new one); ``"late"`` when it waited ``LATE_SECONDS`` past its time in
    the scheduled registry (no scheduler runs: it is queued now); else None.
    """
    mark = K.retrain_pending_key(pid)
    job_id = r.get(mark)
    if job_id is None:
        return None
    job = _job(queue, job_id)
    if job is None or job.get_status(refresh=False) in GONE:
        # Only if it still names that job: the retrain that started meanwhile cleared it,
        # and a label after it may have set a new mark, which must stay.
        _clear(r, mark, job_id)
        return "lost"
    due = _scheduled_at(queue, job)
    if due is None or (clock_now() if now is None else now) < due + LATE_SECONDS:
        return None
    queue_now(queue, job.id)
    return "late"


def queue_now(queue: Queue, job_id: str) -> bool:
    """Move a job waiting in the scheduled registry to its queue now (what RQ's scheduler
    does when it is due); False when it waits there no more."""
    job = _job(queue, job_id)
    if job is None or ScheduledJobRegistry(queue=queue).remove(job.id) == 0:
        return False  # the scheduler (or another caller) took it
    queue.enqueue_job(job)
    return True


def _clear(r: redis.Redis, mark: str, job_id: str) -> None:
    """Delete ``mark`` if it still names ``job_id``."""
    with r.pipeline() as pipe, contextlib.suppress(redis.WatchError):
        pipe.watch(mark)
        if pipe.get(mark) == job_id:
            pipe.multi()
            pipe.delete(mark)
            pipe.execute()


def _job(queue: Queue, job_id: str) -> Job | None:
    try:
        return Job.fetch(job_id, connection=queue.connection)
    except NoSuchJobError:
        return None


def _scheduled_at(queue: Queue, job: Job) -> float | None:
    if job.get_status(refresh=False) != JobStatus.SCHEDULED:
        return None
    return ScheduledJobRegistry(queue=queue).get_scheduled_time(job).timestamp()
