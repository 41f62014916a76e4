"""Jobs abandoned by a dead worker, handed to RQ's own cleanup as soon as the death is known.

RQ calls a job *abandoned* when the worker running it stopped sending heartbeats: its
``StartedJobRegistry.cleanup`` then retries the job (if it has retries left) or moves it to
the failed registry (``AbandonedJobError``).  Left to RQ, that happens once the heartbeat has
expired (up to 90 s after the death) *and* a worker runs its maintenance (at start, then
every 10 minutes): until then ``GET /v1/jobs/{id}`` says ``started``.

A taskrank worker is named ``host.pid.start-time`` (``worker_name``), so on its own host its
death is a fact read from /proc: the pid is gone, or names a process started at another
time.  ``reap_abandoned`` expires the running jobs of such workers at once, removes their
registration (so ``/readyz`` counts only live workers) and runs RQ's cleanup, which also
handles, as RQ would, the expired jobs of workers on other hosts.  It runs when the
supervisor of ``taskrank serve`` sees a worker exit, when a worker starts, and with each
worker's lease sweep.  Workers named otherwise (a plain ``rq worker``) are left to RQ.
"""

from __future__ import annotations

import os
import socket

import redis
from rq import Queue, Worker
from rq.registry import StartedJobRegistry
from rq.utils import as_text

from taskrank.queue.processes import is_alive, started_at


def worker_name(pid: int | None = None) -> str:
    """The RQ worker name of process ``pid`` (default this one): host, pid, start time."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}.{pid}.{started_at(pid)}"


def dead_here(name: str) -> bool:
    """Worker ``name`` ran on this host and its process is gone; False when it cannot tell
    (another host, a name not made by ``worker_name``, no /proc)."""
    parts = name.rsplit(".", 2)
    if len(parts) != 3 or parts[0] != socket.gethostname() or not (
            parts[1].isdigit() and parts[2].isdigit()):
        return False
    pid, born = int(parts[1]), int(parts[2])
    if born == 0 or not os.path.isdir("/proc/self"):
        return False
    return not is_alive(pid, born)


def live_workers(queue: Queue) -> list[Worker]:
    """The workers registered on ``queue`` that are not known dead."""
    return [worker for worker in Worker.all(queue=queue) if not dead_here(worker.name)]


def reap_abandoned(*queues: Queue) -> list[str]:
    """Hand the jobs of the dead workers of ``queues`` (one worker serves them all) to RQ's
    cleanup now; answer their ids."""
    connection: redis.Redis = queues[0].connection
    registries = [StartedJobRegistry(queue.name, connection=connection) for queue in queues]
    reaped: list[str] = []
    dead = {worker.name: worker for queue in queues for worker in Worker.all(queue=queue)
            if dead_here(worker.name)}
    for worker in dead.values():
        running = [as_text(entry) for entry in connection.smembers(worker.executions_key)]
        if running:  # expired now, as a missed heartbeat would make them later
            for registry in registries:  # each entry is in its own queue's registry only
                connection.zadd(registry.key, dict.fromkeys(running, 0), xx=True)
            reaped += [entry.split(":", 1)[0] for entry in running]  # job id:execution id
        worker.register_death()
    for queue, registry in zip(queues, registries, strict=True):
        # Under RQ's own maintenance lock: two cleanups at once could both re-queue a job.
        # Held elsewhere, the holder's cleanup or the next reap handles what was expired here.
        if queue.acquire_maintenance_lock():
            try:
                registry.cleanup()
            finally:
                queue.release_maintenance_lock()
    return reaped
