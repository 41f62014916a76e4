"""Item and queue views: live priorities from the sets, breakdowns brought up to date on read."""

from __future__ import annotations

import json

from taskrank.queue import keys as K
from taskrank.queue import tasks
from taskrank.queue.aggregate import aggregate_item
from taskrank.queue.backfill import set_priorities
from taskrank.queue.experts import load_expert
from taskrank.queue.items import get_item, ranked_queue
from taskrank.queue.models import current_ranker
from taskrank.queue.projects import get_project, update_project
from taskrank.queue.rescore_items import rescore_items
from taskrank.queue.retrain import enqueue_retrain
from taskrank.queue.scoring import score_items, stored_item
from tests.cluster import both_backends
from tests.invariants import pooled
from tests.pools import tagged_project

pytestmark = both_backends  # on the single Redis and on the Redis Cluster


def _project(r, n: int = 80) -> dict:
    return tagged_project(r, n, seed=5)


def test_queue_merges_every_set_without_duplicates(r):
    """Without a skill the queue is the global top over the untagged and every tag set
    (an x+y item once), ranked by live score; with a skill, that set's top."""
    _project(r)
    project = _reweigh(r)  # live scores now differ from the stored 'pr'
    rescore_items(r, project, sorted(pooled(r, "p")))
    live = pooled(r, "p")
    queue = ranked_queue(r, project, 25, None)
    ids = [entry["id"] for entry in queue]
    assert len(set(ids)) == 25
    assert ids == sorted(live, key=lambda iid: (live[iid], iid), reverse=True)[:25]
    assert [entry["priority"] for entry in queue] == [live[iid] for iid in ids]
    assert {tuple(entry["skills"]) for entry in queue} == {(), ("x",), ("y",), ("x", "y")}
    tagged = ranked_queue(r, project, 100, "x")
    assert {entry["id"] for entry in tagged} == {iid for iid in live if int(iid[1:]) % 4 in
                                                 (1, 3)}


def test_breakdown_is_recomputed_on_read_after_a_new_model(r, settings, run_jobs):
    """A re-score stores no breakdown; the item and queue views compute it with the current
    model and say so, and the priority shown is the live one."""
    _project(r)
    _label(r, 24)
    enqueue_retrain(r, settings, "p")
    run_jobs()
    project = get_project(r, "p")
    ranker = current_ranker(r, project)
    assert ranker is not None and ranker.version == 1
    iid = ranked_queue(r, project, 1, None)[0]["id"]
    assert r.hget(K.item_key("p", iid), "mv") == "0"  # stored at ingest, before the model
    fields = r.hgetall(K.item_key("p", iid))
    _, (expected,) = score_items([stored_item(iid, fields["p"], fields["f"], fields["b"])],
                                 project["strategy"], 2, ranker)
    for view in (get_item(r, project, iid), ranked_queue(r, project, 1, None)[0]):
        assert view["model_version"] == 1
        assert {name: term["value"] for name, term in view["breakdown"].items()} == \
            json.loads(expected)
        assert view["priority"] == pooled(r, "p")[iid]


def test_breakdown_follows_a_strategy_change(r):
    """A strategy change (no model) also makes the stored breakdown stale: shown anew."""
    _project(r)
    before = get_item(r, get_project(r, "p"), "i0")["breakdown"]
    project = _reweigh(r)
    after = get_item(r, project, "i0")["breakdown"]
    assert after["density"]["weight"] == 0.9 and after != before


def test_external_priorities_are_shown_as_stored(r, settings, run_jobs):
    """set_priorities (backfill --from) records the current model version: its
    {"external": p} breakdown is shown as is, at the priority given."""
    _project(r)
    _label(r, 24)
    enqueue_retrain(r, settings, "p")
    run_jobs()
    pending = sorted(pooled(r, "p"))[0]
    assert set_priorities(r, "p", [(pending, 42.0)])["updated"] == 1
    view = get_item(r, get_project(r, "p"), pending)
    assert view["breakdown"] == {"external": {"value": 42.0, "weight": 0.0}}
    assert (view["priority"], view["model_version"]) == (42.0, 1)


def test_item_view_of_a_leased_item_shows_the_priority_it_was_claimed_at(r):
    """Once claimed the item is in no set; its view shows the score it was leased at."""
    project = _project(r)
    project = _reweigh(r)
    rescore_items(r, project, sorted(pooled(r, "p")))
    top = max(pooled(r, "p").values())
    task = tasks.claim(r, project, load_expert(r, "e1"), 8)
    view = get_item(r, project, task["item_id"])
    assert (view["status"], view["priority"]) == ("leased", top)


def _reweigh(r) -> dict:
    update_project(r, "p", {"strategy": {"weights": {"uncertainty": 0.1,
                                                     "disagreement": 0.0, "density": 0.9}}})
    return get_project(r, "p")


def _label(r, count: int) -> None:
    project, expert = get_project(r, "p"), load_expert(r, "e1")
    for _ in range(count):
        task = tasks.claim(r, project, expert, 8)
        x = json.loads(r.hget(K.item_key("p", task["item_id"]), "f"))
        status, _ = tasks.submit_label(r, project, task["id"], "ab"[int(sum(x) > 0)], 1.0)
        assert status == 201
        aggregate_item(r, project, task["item_id"])
