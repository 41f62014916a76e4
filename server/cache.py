"""Per-process caches, each entry kept at most ``TASKRANK_CACHE_SECONDS``: a known token's
principal (every route), and the project and the expert document (next task, label).

They spare the two busiest requests three Redis round trips.  What they cost is staleness:
a change made through another web process (a PATCHed project, a re-declared expert, a
revoked token, an expert's accuracy learned from a label answered elsewhere) reaches this
process within that time.  A change made through this process is seen at once: its view
drops the entry.  The caches live on the app object, so a new app starts empty.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import TypeVar

T = TypeVar("T")
MAX_ENTRIES = 10_000  # bounded memory: past it the cache starts over


class TtlCache:
    """``get(key, load)``: the value ``load()`` gave at most ``seconds`` ago; values are
    shared between requests, so callers must not change them."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.clock = clock
        self._entries: dict[Hashable, tuple[float, object]] = {}
        self._lock = threading.Lock()  # threaded workers share the app

    def get(self, key: Hashable, load: Callable[[], T]) -> T:
        if self.seconds <= 0:
            return load()
        now = self.clock()
        hit = self._entries.get(key)
        if hit is not None and now - hit[0] < self.seconds:
            return hit[1]
        value = load()  # an exception (e.g. no such project) is not cached
        with self._lock:
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[key] = (now, value)
        return value

    def forget(self, key: Hashable) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


class HotCaches:
    """The caches of one app: principals by token hash, projects and experts by id."""

    def __init__(self, seconds: float) -> None:
        self.principals = TtlCache(seconds)
        self.projects = TtlCache(seconds)
        self.experts = TtlCache(seconds)
