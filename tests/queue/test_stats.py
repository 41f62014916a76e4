"""Counts by status, kept by the Lua scripts in the counters hash (there is no global pool)."""

from __future__ import annotations

from taskrank.queue import tasks
from taskrank.queue.experts import load_expert, put_expert
from taskrank.queue.items import ingest
from taskrank.queue.metrics import render
from taskrank.queue.projects import create_project, get_project
from taskrank.queue.stats import project_stats
from tests.cluster import both_backends
from tests.invariants import check_store

pytestmark = both_backends  # on the single Redis and on the Redis Cluster

START = 1_700_000_000.0


def _items(ids: list[str], p: float = 0.6) -> list[dict]:
    return [{"id": iid, "predictions": {"m": [p, round(1 - p, 4)]}} for iid in ids]


def _counts(r) -> tuple[int, int, int, int]:
    items = project_stats(r, get_project(r, "p"))["items"]
    return items["total"], items["pending"], items["leased"], items["labeled"]


def test_counts_follow_claim_label_expiry_and_upsert(r):
    """Every status change moves the counts; an upsert of a known item moves nothing."""
    create_project(r, {"id": "p", "labels": ["a", "b"], "lease_seconds": 60})
    put_expert(r, "e1", {"skills": {}, "capacity": 10})
    ingest(r, get_project(r, "p"), _items([f"i{n}" for n in range(5)]))
    assert _counts(r) == (5, 5, 0, 0)
    project, expert = get_project(r, "p"), load_expert(r, "e1")
    first = tasks.claim(r, project, expert, 8, now=START)
    second = tasks.claim(r, project, expert, 8, now=START)
    assert _counts(r) == (5, 3, 2, 0)
    assert tasks.submit_label(r, project, first["id"], "a", 1.0, now=START + 1)[0] == 201
    assert _counts(r) == (5, 3, 1, 1)
    assert tasks.sweep(r, "p", now=START + 61) == 1  # the second lease expired
    assert _counts(r) == (5, 4, 0, 1)
    ingest(r, project, _items([first["item_id"], second["item_id"], "new"], p=0.7))
    assert _counts(r) == (6, 5, 0, 1)
    released = tasks.claim(r, project, expert, 8, now=START + 70)
    tasks.release(r, project, released["id"], now=START + 71)
    assert _counts(r) == (6, 5, 0, 1)
    check_store(r, "p")


def test_metrics_report_the_counts(r):
    """/metrics' per-status gauges read the same counters."""
    create_project(r, {"id": "p", "labels": ["a", "b"]})
    put_expert(r, "e1", {"skills": {}, "capacity": 10})
    ingest(r, get_project(r, "p"), _items(["i0", "i1", "i2"]))
    tasks.claim(r, get_project(r, "p"), load_expert(r, "e1"), 8)
    text = render(r)
    assert 'taskrank_queue_pending{project="p"} 2' in text
    assert 'taskrank_items{project="p",status="leased"} 1' in text
    assert 'taskrank_items{project="p",status="labeled"} 0' in text
