"""The one cache policy of a process: an entry is kept at most ``TASKRANK_CACHE_SECONDS``.

Every per-process cache is a ``TtlCache``: the web app's (a token's principal, a project, an
expert; ``server/cache.py``), the best experts per tag that the claim's hold-back reads
(``queue/skills.py``) and the loaded models (``queue/models.py``).  What a cache costs is
staleness: a change made through another process reaches this one within that time.  A change
made through this process is seen at once: whoever makes it drops the entry (``forget``).
A value that never changes once made (a stored model version) is kept by its version
instead: the version is read on every use and a lookup asking for another one reloads, so a
cached model is never one the project has moved past, and an unchanged one is not reloaded
(a random-forest ranker is ~9 MB in Redis and ~47 ms to unpickle).

A cache may also serve a value past its time while it cannot be reloaded (``stale_on``:
the errors of a data store that cannot answer, ``stale_seconds``): on a Redis Cluster the
web tier's tokens and experts are global keys, each on the master of its own slot, and a
master failing over would otherwise stop every project's requests that use them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import TypeVar

from taskrank.queue.settings import current

T = TypeVar("T")
MAX_ENTRIES = 10_000  # bounded memory: past it the cache starts over


class TtlCache:
    """``get(key, load)``: the value ``load()`` gave at most ``seconds`` ago; values are
    shared between callers, so they must not change them.

    ``seconds`` None: this process's ``Settings.cache_seconds`` (``settings.current()``), read
    on every lookup so that the settings a worker or app installs apply to module-level caches.
    """

    def __init__(self, seconds: float | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 stale_on: tuple[type[Exception], ...] = (), stale_seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.clock = clock
        # A load failing with one of ``stale_on`` answers the entry it would have replaced,
        # up to ``stale_seconds`` old (the module docstring).
        self.stale_on, self.stale_seconds = stale_on, stale_seconds
        self._entries: dict[Hashable, tuple[float, Hashable, object]] = {}
        self._lock = threading.Lock()  # threaded workers share the caches

    def get(self, key: Hashable, load: Callable[[], T], version: Hashable = None) -> T:
        """The cached value of ``key`` if it is still valid, else ``load()`` (then cached).

        Without ``version`` an entry is valid for ``seconds``.  With one it is valid while it
        was loaded for that ``version``, whatever its age: the caller reads the current
        version on every use, and what a version names never changes.
        """
        now = self.clock()
        hit = self._entries.get(key)
        if hit is not None and hit[1] == version and (
                version is not None or now - hit[0] < self._seconds()):
            return hit[2]
        try:
            value = load()  # an exception (e.g. no such project) is not cached
        except self.stale_on:
            if hit is not None and hit[1] == version and now - hit[0] < self.stale_seconds:
                return hit[2]
            raise
        if version is None and self._seconds() <= 0:
            return value
        with self._lock:
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[key] = (now, version, value)
        return value

    def _seconds(self) -> float:
        return current().cache_seconds if self.seconds is None else self.seconds

    def forget(self, key: Hashable) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
