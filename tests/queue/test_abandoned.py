"""Jobs abandoned by a dead worker (queue/abandoned.py): handed to RQ's cleanup as soon as
the worker's death is known on its host, retried or failed as RQ does; nothing else is
touched."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from rq import Queue, Retry, Worker
from rq.job import Job

from taskrank.queue.abandoned import dead_here, live_workers, reap_abandoned, worker_name
from taskrank.queue.connection import connect_rq
from taskrank.queue.processes import started_at
from taskrank.queue.worker import TaskWorker, task_queue, task_queues

HOST = socket.gethostname()
FOREIGN = "8bcd514c91024594849b16975d5267d9"  # RQ's own kind of name (plain `rq worker`)


def _exited_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _running(queue: Queue, name: str, retry: Retry | None = None) -> Job:
    """A job that worker ``name`` has started, as RQ's worker marks it before it forks."""
    job = queue.enqueue("time.sleep", 60, retry=retry)
    worker = TaskWorker([queue], name=name, connection=queue.connection)
    worker.register_birth()
    dequeued, _ = Queue.dequeue_any([queue], None, connection=queue.connection)
    assert dequeued.id == job.id
    worker.prepare_execution(dequeued)
    worker.prepare_job_execution(dequeued)
    assert job.get_status() == "started"
    return job


def test_a_worker_is_dead_here_only_when_this_host_shows_it():
    """Host, pid and start time name a worker: this process lives; an exited pid, or this
    pid with another start time (a reused pid), is dead; another host's worker or a name
    not made by worker_name cannot be told, so it is not called dead."""
    me = os.getpid()
    assert worker_name() == f"{HOST}.{me}.{started_at(me)}" and not dead_here(worker_name())
    gone = _exited_pid()
    assert dead_here(f"{HOST}.{gone}.{started_at(me)}")
    assert dead_here(f"{HOST}.{me}.{started_at(me) + 1}")
    assert not dead_here(f"elsewhere.{gone}.{started_at(me)}")
    assert not dead_here(FOREIGN)
    assert not dead_here(f"{HOST}.{gone}.0")


def test_jobs_of_a_dead_worker_are_retried_or_failed_and_others_left_alone(settings, r):
    """A dead worker's job with a retry left is queued again, one without is failed with
    AbandonedJobError, and the dead workers are deregistered; a live worker's job and a
    foreign-named worker's job stay started."""
    queue = task_queue(settings, connect_rq(settings))
    dead = [f"{HOST}.{_exited_pid()}.{started_at(os.getpid())}" for _ in range(2)]
    retried = _running(queue, dead[0], Retry(max=1))
    failed = _running(queue, dead[1])
    alive = _running(queue, worker_name())
    foreign = _running(queue, FOREIGN)
    assert {w.name for w in live_workers(queue)} == {worker_name(), FOREIGN}

    assert sorted(reap_abandoned(queue)) == sorted([retried.id, failed.id])

    retried.refresh()
    assert retried.get_status() == "queued" and retried.retries_left == 0
    assert failed.get_status() == "failed"
    assert "AbandonedJobError" in failed.latest_result().exc_string
    assert alive.get_status() == "started" and foreign.get_status() == "started"
    assert not set(dead) & {w.name for w in Worker.all(queue=queue)}
    assert reap_abandoned(queue) == []


def test_the_cleanup_waits_for_rq_maintenance_held_elsewhere(settings, r):
    """While another worker holds RQ's maintenance lock, a dead worker's job is expired but
    left to that cleanup (two at once could re-queue a job twice); the next reap does it."""
    queue = task_queue(settings, connect_rq(settings))
    job = _running(queue, f"{HOST}.{_exited_pid()}.{started_at(os.getpid())}")
    assert queue.acquire_maintenance_lock()
    assert reap_abandoned(queue) == [job.id] and job.get_status() == "started"
    queue.release_maintenance_lock()
    reap_abandoned(queue)
    assert job.get_status() == "failed"


def test_a_dead_workers_job_from_the_low_queue_is_handed_to_rq_too(settings, r):
    """A worker serves the main and the low queue: a tail job it was running when it died
    is retried on the low queue like any other."""
    main, low = task_queues(settings, connect_rq(settings))
    job = low.enqueue("time.sleep", 60, retry=Retry(max=1))
    worker = TaskWorker([main, low], name=f"{HOST}.{_exited_pid()}.{started_at(os.getpid())}",
                        connection=main.connection)
    worker.register_birth()
    dequeued, _ = Queue.dequeue_any([main, low], None, connection=main.connection)
    worker.prepare_execution(dequeued)
    worker.prepare_job_execution(dequeued)
    assert reap_abandoned(main, low) == [job.id]
    job.refresh()
    assert job.get_status() == "queued" and low.job_ids == [job.id]
