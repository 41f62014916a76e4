"""Supervision of the process stack: what exits on its own is restarted while the rest
keeps running (``Stack.supervise``, the main loop of ``taskrank serve``).

A child, or the embedded Redis, that exited is restarted after 0.5 s, then after twice as
long for each exit in a row, up to 30 s (``Backoff``); one that ran 30 s starts afresh.
When Redis is back, children that were waiting (they may have died for want of it) start
at once.  When an RQ worker exits, the jobs it was running are handed to RQ's cleanup at
once (``taskrank.queue.abandoned``): retried or failed, not ``started`` for minutes.

Restarts happen in the thread that runs ``supervise``, which must be the one that started
the stack: a child's lifeline is tied to the thread that forked it.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

import redis

from taskrank.queue.abandoned import reap_abandoned
from taskrank.queue.connection import connect_rq
from taskrank.queue.worker import task_queues

if TYPE_CHECKING:
    from taskrank.scripts.stack import Stack

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2  # how often the supervisor looks at the processes
WORKER_MODULE = "taskrank.scripts.worker"


class Backoff:
    """When to restart a process that exited: ``first`` seconds after an exit, doubling for
    each exit in a row up to ``cap``; a process that ran ``cap`` seconds starts afresh."""

    def __init__(self, first: float = 0.5, cap: float = 30.0) -> None:
        self.first, self.cap = first, cap
        self.exits = 0  # in a row
        self.started = time.monotonic()
        self.due: float | None = None  # when the restart is due, once an exit is noticed

    def started_now(self) -> None:
        self.started, self.due = time.monotonic(), None

    def exited(self) -> float:
        """Note an exit; answer the seconds to wait before the restart."""
        now = time.monotonic()
        self.exits = 1 if now - self.started >= self.cap else self.exits + 1
        delay = min(self.cap, self.first * 2 ** (self.exits - 1))
        self.due = now + delay
        return delay

    def is_due(self) -> bool:
        return self.due is not None and time.monotonic() >= self.due


class Supervisor:
    """Restarts what of ``stack`` exits: its children and its embedded Redis."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.backoffs: dict[object, Backoff] = {}  # by child (or the EmbeddedRedis)
        self.restarts: Counter[object] = Counter()

    def backoff(self, process: object) -> Backoff:
        return self.backoffs.setdefault(process, Backoff())

    def run(self, stopping: Sequence[int]) -> None:
        """Until ``stopping`` holds a signal, ``heal`` every POLL_SECONDS."""
        while not stopping:
            self.heal()
            time.sleep(POLL_SECONDS)

    def heal(self) -> None:
        """One look at the processes: note what exited, restart what is due."""
        server = self.stack.redis
        if server is not None and not server.running() and \
                self._due(server, "embedded Redis", server.process) and \
                self._restart_redis():
            for child in self.stack.children:  # they may have died for want of Redis
                if self.backoff(child).due is not None:
                    self.backoff(child).due = time.monotonic()
        for child in self.stack.children:
            if child.running():
                continue
            noticed = self.backoff(child).due is None
            if self._due(child, child.name, child.process):
                child.start()
                self.backoff(child).started_now()
                self.restarts[child] += 1
                log.warning("restarted %s (pid %d)", child.name, child.pid)
            elif noticed and child.name == WORKER_MODULE:
                self.reap_abandoned()

    def _due(self, process: object, name: str, popen: object) -> bool:
        """Whether an exited process's restart is due; its exit is logged when first seen."""
        backoff = self.backoff(process)
        if backoff.due is None:
            delay = backoff.exited()
            pid = getattr(popen, "pid", "?")
            code = popen.poll() if popen is not None else None
            log.warning("%s (pid %s) exited with %s; restarting in %.1f s", name, pid, code,
                        delay)
        return backoff.is_due()

    def _restart_redis(self) -> bool:
        server = self.stack.redis
        try:
            server.start(self.stack.redis_start_timeout)
        except (RuntimeError, OSError) as error:
            log.warning("embedded Redis did not restart: %s", error)
            self.backoff(server).exited()
            return False
        self.backoff(server).started_now()
        self.restarts[server] += 1
        log.warning("restarted the embedded Redis (pid %d) from its append-only file",
                    server.process.pid)
        return True

    def reap_abandoned(self) -> list[str]:
        """Hand the jobs of dead workers to RQ's cleanup; with Redis unavailable, the next
        worker to start does it."""
        connection = connect_rq(self.stack.settings)
        try:
            return reap_abandoned(*task_queues(self.stack.settings, connection))
        except redis.RedisError as error:
            log.warning("could not hand abandoned jobs to RQ: %s", error)
            return []
        finally:
            connection.close()
