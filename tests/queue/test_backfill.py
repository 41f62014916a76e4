"""Priorities computed outside taskrank (queue/backfill.py ``set_priorities``); resuming a
run is tested through ``taskrank backfill`` (tests/scripts/test_backfill.py)."""

from __future__ import annotations

from taskrank.queue import keys as K
from taskrank.queue.backfill import set_priorities
from tests.cluster import both_backends
from tests.invariants import pooled
from tests.pools import tagged_project

pytestmark = both_backends  # on the single Redis and on the Redis Cluster


def test_priorities_land_on_pending_items_and_the_rest_is_counted(r):
    """Pending items take the given priority in every set they are in; a leased item is
    counted as not pending and an unknown id by its position."""
    tagged_project(r, 8, seed=1)
    r.hset(K.item_key("p", "i1"), "st", "leased")
    r.zrem(K.pool_untagged_key("p"), "i1")
    r.zrem(K.pool_tag_key("p", "x"), "i1")
    answer = set_priorities(r, "p", [("i0", 5.0), ("i1", 4.0), ("nope", 3.0), ("i3", 2.5)])
    assert answer == {"updated": 2, "not_pending": 1, "unknown": [2]}
    live = pooled(r, "p")
    assert (live["i0"], live["i3"]) == (5.0, 2.5) and "i1" not in live
    assert r.zscore(K.pool_tag_key("p", "x"), "i3") == 2.5
    assert r.zscore(K.pool_tag_key("p", "y"), "i3") == 2.5
