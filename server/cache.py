"""The web app's per-process caches: a known token's principal (every route), and the project
and the expert document (next task, label).

They spare the two busiest requests three Redis round trips.  They follow the one cache
policy of ``queue/cache.py`` (``TASKRANK_CACHE_SECONDS``): a change made through another web
process (a PATCHed project, a re-declared expert, a revoked token, an expert's accuracy
learned from a label answered elsewhere) reaches this process within that time; one made
through this process is seen at once, as its view drops the entry.  The caches live on the
app object, so a new app starts empty.
"""

from __future__ import annotations

from taskrank.queue.cache import TtlCache
from taskrank.queue.connection import UNAVAILABLE

# While the master holding a token or an expert cannot answer (a Redis Cluster failing
# over: a token or an expert lives in a slot of its own), the last value read is used for
# this long, so that the projects on the other masters keep being served.
STALE_SECONDS = 60.0


class HotCaches:
    """The caches of one app: principals by token hash, projects and experts by id."""

    def __init__(self, seconds: float) -> None:
        self.principals = TtlCache(seconds, stale_on=UNAVAILABLE, stale_seconds=STALE_SECONDS)
        self.projects = TtlCache(seconds)
        self.experts = TtlCache(seconds, stale_on=UNAVAILABLE, stale_seconds=STALE_SECONDS)
