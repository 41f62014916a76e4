"""What taskrank's RQ jobs share: their ids, retry policy and time limit, the rule that queues
a job once per pending mark, and the Redis client a running job uses."""

from __future__ import annotations

import datetime
import math
import secrets
import time

import redis
from rq import Retry, get_current_job

from taskrank.queue.connection import DataClient, connect, rq_redis, same_server
from taskrank.queue.settings import Settings, current
from taskrank.queue.worker import task_queue

RETRY = Retry(max=3)  # immediate re-queue: no scheduler needed
JOB_TIMEOUT = 600
PENDING_SECONDS = 3600  # a job's pending mark outlives its start by this much at most


def job_redis() -> DataClient:
    """A decoded client on the data store for the running job: the configured one when RQ
    has a Redis of its own, else the job's own server (RQ hands the job a bytes client)."""
    settings = current()
    if settings.rq_redis_url:
        return connect(settings)
    return same_server(get_current_job().connection, decode_responses=True)


def new_job_id(kind: str, pid: str) -> str:
    """``kind-<random>-<hex of pid>``: RQ ids allow only letters, digits, _ and -."""
    return f"{kind}-{secrets.token_hex(4)}-{pid.encode().hex()}"


def job_project(job_id: str, kind: str) -> str | None:
    """The project of a ``new_job_id(kind, pid)`` id, else None."""
    prefix, _, rest = job_id.partition("-")
    token, _, pid_hex = rest.partition("-")
    if prefix != kind or len(token) != 8 or not pid_hex:
        return None
    try:
        return bytes.fromhex(pid_hex).decode()
    except ValueError:
        return None


def enqueue_once(r: redis.Redis, settings: Settings, pending: str, kind: str, job: object,
                 pid: str, at: datetime.datetime | None = None) -> str:
    """Queue ``job(pid)`` unless the ``pending`` mark names one still waiting; its id.
    With ``at``, the job waits in RQ's scheduled registry until then (a non-burst worker's
    scheduler queues it).

    The job clears the mark when it starts, so what arrives later queues the next one; the
    mark expires so that a job lost before it started cannot block its kind forever.
    """
    job_id = new_job_id(kind, pid)
    wait = 0 if at is None else max(0, math.ceil(at.timestamp() - time.time()))
    if not r.set(pending, job_id, nx=True, ex=PENDING_SECONDS + wait):
        return r.get(pending) or job_id
    queue = task_queue(settings, rq_redis(r, settings))
    options = {"job_id": job_id, "retry": RETRY, "job_timeout": JOB_TIMEOUT,
               "description": f"{kind} {pid}"}
    if at is not None:
        queue.enqueue_at(at, job, pid, **options)
    else:
        queue.enqueue(job, pid, **options)
    return job_id
