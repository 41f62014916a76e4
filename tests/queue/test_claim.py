"""The claim's early stop leases exactly the item a full scan of the candidates would."""

from __future__ import annotations

import random

import pytest

from taskrank.learning.routing import best_item
from taskrank.queue import tasks
from taskrank.queue.backfill import set_priorities
from taskrank.queue.experts import load_expert, put_expert
from taskrank.queue.items import ingest
from taskrank.queue.projects import create_project, get_project
from tests.cluster import both_backends
from tests.routing_oracle import rate_pool

pytestmark = both_backends  # on the single Redis and on the Redis Cluster

TAGS = ["a", "b", "c"]


def _best_by_full_scan(r, project, expert) -> str | None:
    """The eligible pending item of highest value by learning.routing, every item read."""
    rated = rate_pool(r, project, expert)
    best = best_item(rated.value, rated.candidate)
    return None if best < 0 else rated.ids[best]


@pytest.mark.parametrize("seed", range(4))
def test_claim_takes_the_item_a_full_scan_would(r, seed):
    """Random priorities (some negative), tags and skill levels: each claim in turn leases
    the best eligible item by value, though the script stops reading early."""
    rng = random.Random(seed)
    # No hold-back: the scan is under test, and what the hold-back turns away depends on
    # how fresh its cached view of the working experts is (wall time).
    create_project(r, {"id": "p", "labels": ["x", "y"], "redundancy": 2,
                       "strategy": {"routing": {"fit_exponent": rng.choice([0.0, 1.0, 3.0]),
                                                "holdback_seconds": 0}}})
    project = get_project(r, "p")
    ingest(r, project, [{"id": f"i{i}", "predictions": {"m": [0.5, 0.5]},
                         "skills": rng.sample(TAGS, rng.randint(0, 2))} for i in range(40)])
    set_priorities(r, "p", [(f"i{i}", round(rng.uniform(-1, 3), 6)) for i in range(40)])
    for j in range(3):
        put_expert(r, f"e{j}", {"skills": {tag: rng.uniform(0.3, 0.99)
                                           for tag in rng.sample(TAGS, rng.randint(1, 3))},
                                "capacity": 100})
    claimed = 0
    for _ in range(30):
        expert = load_expert(r, f"e{rng.randrange(3)}")
        expected = _best_by_full_scan(r, project, expert)
        task = tasks.claim(r, project, expert, depth=64)
        assert (task["item_id"] if task else None) == expected
        claimed += task is not None
    assert claimed > 10
