"""This web process's HTTP request metrics: buffered in memory, flushed to Redis in batches.

Gunicorn runs several web processes; per-process counters would disagree between scrapes,
so every process adds its counts to one Redis hash (``queue/metrics.py`` owns its format
and renders it).  Each process buffers its request observations and one background thread
per process flushes them (a single MULTI/EXEC) at most once a second, or as soon as 100
requests are buffered: a request never waits on Redis for its metrics.  What a process
buffered in its last second is lost if it is SIGKILLed.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from collections import Counter, defaultdict

import redis

from taskrank.queue import metrics

log = logging.getLogger(__name__)

FLUSH_EVERY = 100  # buffered requests that wake the flusher before its second is up
FLUSH_SECONDS = 1.0


class RequestRecorder:
    """One web app's buffer of request observations, flushed to Redis in batches."""

    def __init__(self, r: redis.Redis, flush_every: int = FLUSH_EVERY) -> None:
        self.r = r
        self.flush_every = flush_every
        self._lock = threading.Lock()  # guards the buffers
        self._flushing = threading.Lock()  # one flush at a time (flusher thread or a scrape)
        self._ints: Counter[str] = Counter()
        self._floats: defaultdict[str, float] = defaultdict(float)
        self._rejected: Counter[str] = Counter()  # project id -> labels refused with a 422
        self._buffered = 0
        self._failing = False
        self._pid = os.getpid()
        _recorders.add(self)

    def observe(self, method: str, route: str, status: int, seconds: float,
                rejected_project: str | None = None) -> None:
        """Count one answered request (in memory only)."""
        count, bucket, total = metrics.request_fields(method, route, status, seconds)
        with self._lock:
            self._adopt_after_fork()
            self._ints[count] += 1
            self._ints[bucket] += 1
            self._floats[total] += seconds
            if rejected_project:
                self._rejected[rejected_project] += 1
            self._buffered += 1
            full = self._buffered >= self.flush_every
        _ensure_flusher()
        if full:
            _wake.set()

    def _adopt_after_fork(self) -> None:
        # A forked child must not flush what its parent buffered (the parent will).
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._ints.clear()
            self._floats.clear()
            self._rejected.clear()
            self._buffered = 0

    def flush(self) -> bool:
        """Write the buffered observations to Redis; False (kept for later) when it fails."""
        with self._flushing:
            with self._lock:
                self._adopt_after_fork()
                ints, floats, rejected = self._ints, self._floats, self._rejected
                buffered = self._buffered
                self._ints, self._floats, self._rejected = Counter(), defaultdict(float), Counter()
                self._buffered = 0
            try:
                if rejected:
                    metrics.count_rejected(self.r, rejected)
                    rejected = Counter()
                if ints:
                    metrics.add_requests(self.r, ints, floats)
            except redis.RedisError as error:
                self._keep(ints, floats, rejected, buffered)
                if not self._failing:  # once per outage, not once per second
                    log.warning("metrics not flushed to Redis (kept for the next try): %s",
                                error)
                self._failing = True
                return False
            self._failing = False
            return True

    def _keep(self, ints: Counter, floats: dict[str, float], rejected: Counter,
              buffered: int) -> None:
        with self._lock:
            self._ints.update(ints)
            for field, value in floats.items():
                self._floats[field] += value
            self._rejected.update(rejected)
            self._buffered += buffered


# One flusher thread per process serves every recorder alive in it (tests build many apps).
_recorders: weakref.WeakSet[RequestRecorder] = weakref.WeakSet()
_wake = threading.Event()
_flusher_pid: int | None = None
_flusher_lock = threading.Lock()


def _ensure_flusher() -> None:
    global _flusher_pid
    if _flusher_pid == os.getpid():
        return
    with _flusher_lock:
        if _flusher_pid == os.getpid():
            return
        first = _flusher_pid is None
        _flusher_pid = os.getpid()
        threading.Thread(target=_flush_loop, name="taskrank-metrics", daemon=True).start()
        if first:  # atexit handlers are inherited by forked children
            atexit.register(flush_all, at_exit=True)


def _flush_loop() -> None:
    while True:
        _wake.wait(FLUSH_SECONDS)
        _wake.clear()
        flush_all()


def flush_all(at_exit: bool = False) -> None:
    """Flush every recorder of this process that holds something."""
    for recorder in list(_recorders):
        if recorder._buffered and recorder._pid == os.getpid():
            if at_exit:
                recorder._failing = True  # its Redis may be gone by now: no warning
            recorder.flush()
