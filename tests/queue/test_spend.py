"""Spend accounting: leases reserve their predicted cost, labels charge rate x seconds (late
ones too), and the project's budget and the expert's daily hours refuse the next task."""

from __future__ import annotations

import time

from taskrank.queue import keys as K
from taskrank.queue import tasks
from taskrank.queue.clock import utc_day
from taskrank.queue.experts import load_expert, put_expert
from taskrank.queue.items import ingest
from taskrank.queue.projects import create_project, get_project, update_project
from taskrank.queue.spend import hours_on_day, project_spend, spend_totals
from tests.cluster import both_backends
from tests.invariants import check_store

pytestmark = both_backends  # on the single Redis and on the Redis Cluster

DAY = 86400


def _project(r, n_items: int = 12, **settings) -> dict:
    """A project whose items alternate between skill 'cardio' and no skill."""
    create_project(r, {"id": "p", "labels": ["a", "b"], **settings})
    ingest(r, get_project(r, "p"), [
        {"id": f"i{n}", "predictions": {"m": [0.6, 0.4]}, "skills": ["cardio"] if n % 2 else []}
        for n in range(n_items)])
    return get_project(r, "p")


def _pc(r, task: dict) -> float:
    """The predicted cost the lease reserved (the CLAIM script's item_cost)."""
    return float(r.hget(K.task_key("p", task["id"]), "pc"))


def _tags(r, task: dict) -> list[str]:
    return (r.hget(K.item_key("p", task["item_id"]), "s") or "_general").split(",")


def test_spend_totals_and_breakdowns_count_every_charged_label(r):
    """Counted and late labels are charged rate x seconds into the totals and the
    breakdowns by expert, skill and day; a released or expired lease gives its
    reservation back, so nothing stays reserved once every lease is closed."""
    project = _project(r, lease_seconds=2 * DAY)
    put_expert(r, "e1", {"skills": {"cardio": 0.9}, "cost_per_hour": 120, "capacity": 10})
    put_expert(r, "e2", {"skills": {}, "cost_per_hour": 60, "capacity": 10})
    e1, e2 = load_expert(r, "e1"), load_expert(r, "e2")
    now = time.time()
    stale = tasks.claim(r, project, e2, 8, now=now - 3 * DAY)  # expired a day ago
    held = [tasks.claim(r, project, e1, 8, now=now), tasks.claim(r, project, e2, 8, now=now),
            tasks.claim(r, project, e1, 8, now=now), tasks.claim(r, project, e1, 8, now=now)]
    assert all(_pc(r, task) > 0 for task in held)
    # The claims swept the stale lease: only the four open ones are reserved.
    assert spend_totals(r, "p")[1] == round(sum(_pc(r, task) for task in held), 6)
    charged = [  # (task, expert, rate, seconds, when, status)
        (held[0], "e1", 120, 300, now + 10, 201), (held[1], "e2", 60, 600, now + 10, 201),
        (stale, "e2", 60, 60, now + 10, 409), (held[3], "e1", 120, 180, now + DAY, 201)]
    for task, _, _, seconds, when, status in charged:
        assert tasks.submit_label(r, project, task["id"], "a", seconds, now=when)[0] == status
    tasks.release(r, project, held[2]["id"], now=now + 20)
    spend = project_spend(r, get_project(r, "p"))
    assert spend["reserved_usd"] == 0 and spend["budget_usd"] is None
    assert spend["remaining_usd"] is None
    assert spend["spent_usd"] == 10 + 10 + 1 + 6
    assert (spend["labels"], spend["hours"]) == (4, round(1140 / 3600, 6))
    expected = {"by_expert": {}, "by_skill": {}, "by_day": {}}
    for task, eid, rate, seconds, when, _ in charged:
        for kind, name in [("by_expert", eid), ("by_day", utc_day(when)),
                           *[("by_skill", tag) for tag in _tags(r, task)]]:
            entry = expected[kind].setdefault(name, {"usd": 0.0, "seconds": 0, "labels": 0})
            entry["usd"] += rate * seconds / 3600
            entry["seconds"] += seconds
            entry["labels"] += 1
    for kind, entries in expected.items():
        assert spend[kind] == {name: {"usd": round(entry["usd"], 6),
                                      "hours": round(entry["seconds"] / 3600, 6),
                                      "labels": entry["labels"]}
                               for name, entry in sorted(entries.items())}, kind
    check_store(r, "p")


def test_open_leases_count_against_the_budget_until_they_close(r):
    """With one lease open, a second one that would pass the budget is refused, naming
    the dollars reserved; releasing the first makes room for it."""
    project = _project(r)
    put_expert(r, "e1", {"skills": {}, "cost_per_hour": 90, "capacity": 10})
    expert = load_expert(r, "e1")
    first = tasks.claim(r, project, expert, 8)
    pc = _pc(r, first)  # every untagged item costs this expert the same
    project, _ = update_project(r, "p", {"budget_usd": round(1.5 * pc, 6)})
    refused = tasks.lease_task(r, project, expert, 8)
    assert refused == tasks.NoTask(
        "budget_exhausted", f"project budget_usd {1.5 * pc:.2f} reached: spent 0.00, "
                            f"reserved {pc:.2f}, the best item left would cost {pc:.2f}")
    assert r.zcard(K.leases_key("p")) == 1  # the refusal wrote no lease
    tasks.release(r, project, first["id"])
    assert spend_totals(r, "p") == (0, 0)
    assert tasks.claim(r, project, expert, 8) is not None
    check_store(r, "p")


def test_budget_reached_by_labels_refuses_before_reading_the_pool(r):
    """Once the dollars spent reach the budget, the claim is refused whatever the next
    item would cost (reported as 0: none was chosen)."""
    project = _project(r)
    put_expert(r, "e1", {"skills": {"cardio": 1.0}, "cost_per_hour": 100, "capacity": 10})
    expert = load_expert(r, "e1")
    task = tasks.claim(r, project, expert, 8)
    assert tasks.submit_label(r, project, task["id"], "b", 360)[0] == 201
    project, _ = update_project(r, "p", {"budget_usd": 10})
    assert tasks.lease_task(r, project, expert, 8) == tasks.NoTask(
        "budget_exhausted", "project budget_usd 10.00 reached: spent 10.00, reserved 0.00")


def test_a_replayed_label_counts_its_hours_once_on_its_own_day(r):
    """The expert's day total grows by a counted label's seconds once, on the day it was
    charged, even when the same Idempotency-Key replays it the next day; late labels
    cost money but are not counted hours."""
    project = _project(r, lease_seconds=2 * DAY)
    put_expert(r, "e1", {"skills": {}, "cost_per_hour": 100, "capacity": 10,
                         "max_hours_per_day": 8})
    expert = load_expert(r, "e1")
    now = time.time()
    task = tasks.claim(r, project, expert, 8, now=now)
    for when in (now, now + 1, now + DAY):
        status, body = tasks.submit_label(r, project, task["id"], "a", 1800, "key-1", now=when)
        assert (status, body["day"]) == (201, utc_day(now))
    stale = tasks.claim(r, project, expert, 8, now=now - 3 * DAY)
    assert tasks.submit_label(r, project, stale["id"], "a", 900, now=now)[0] == 409
    assert hours_on_day(r, "e1", now) == (utc_day(now), 0.5)
    assert hours_on_day(r, "e1", now + DAY)[1] == 0
    assert spend_totals(r, "p")[0] == 50 + 25


def test_daily_hours_refuse_tasks_in_every_project(r):
    """Hours counted in one project stop the expert in another once max_hours_per_day is
    reached that UTC day; the next day it is served again."""
    project = _project(r, lease_seconds=2 * DAY)
    create_project(r, {"id": "q", "labels": ["a", "b"]})
    ingest(r, get_project(r, "q"), [{"id": "j0", "predictions": {"m": [0.5, 0.5]}}])
    other = get_project(r, "q")
    put_expert(r, "e1", {"skills": {}, "capacity": 10, "max_hours_per_day": 0.5})
    expert = load_expert(r, "e1")
    now = time.time()
    task = tasks.claim(r, project, expert, 8, now=now)
    assert tasks.submit_label(r, project, task["id"], "a", 1800, now=now)[0] == 201
    assert tasks.lease_task(r, other, expert, 8, now=now) == tasks.NoTask(
        "daily_hours_reached", f"expert e1 max_hours_per_day 0.50 reached: 0.50 hours of "
                               f"counted labels on {utc_day(now)} (UTC)")
    assert tasks.claim(r, other, expert, 8, now=now + DAY) is not None
