"""Re-score runs (queue/rescore.py): chunks, progress, and writes only to the sorted sets
(``ZADD XX`` per set), with what that must keep true."""

from __future__ import annotations

import json
import threading

from taskrank.queue import keys as K
from taskrank.queue import tasks
from taskrank.queue.aggregate import aggregate_item
from taskrank.queue.backfill import set_priorities
from taskrank.queue.experts import load_expert
from taskrank.queue.items import ingest
from taskrank.queue.models import current_ranker, model_info
from taskrank.queue.projects import create_project, get_project, update_project
from taskrank.queue.rescore import enqueue_rescore, rescore_progress
from taskrank.queue.rescore_items import rescore_items
from taskrank.queue.retrain import enqueue_retrain
from taskrank.queue.worker import task_queue
from tests.cluster import both_backends
from tests.invariants import check_store, not_rescored, pooled
from tests.pools import features_project, tagged_project

pytestmark = both_backends  # on the single Redis and on the Redis Cluster

START = 1_700_000_000.0


def _project(r, n: int = 120, redundancy: int = 1) -> dict:
    return tagged_project(r, n, seed=3, redundancy=redundancy, lease_seconds=60)


def _train(r, settings, run_jobs, labels: int = 24) -> None:
    """Label items by the sign of x0 + x1, then run the retrain job and its re-score."""
    project, expert = get_project(r, "p"), load_expert(r, "e1")
    for _ in range(labels):
        task = tasks.claim(r, project, expert, 8)
        features = r.hget(K.item_key("p", task["item_id"]), "f")
        label = "ab"[int(sum(map(float, features.strip("[]").split(","))) > 0)]
        status, _ = tasks.submit_label(r, project, task["id"], label, 1.0)
        assert status == 201
        aggregate_item(r, project, task["item_id"])
    enqueue_retrain(r, settings, "p")
    run_jobs()


def _reweigh(r) -> dict:
    """A strategy change moves every priority without a model (then re-scored by hand)."""
    update_project(r, "p", {"strategy": {"weights": {"uncertainty": 0.1,
                                                     "disagreement": 0.0, "density": 0.9}}})
    return get_project(r, "p")


def test_rescore_moves_only_sorted_set_scores(r, settings, run_jobs):
    """After a retrain the live scores are the new model's, in every set of an item, while
    the item hashes keep what ingest wrote (no per-item hash write on a re-score)."""
    _project(r)
    stored = {iid: r.hmget(K.item_key("p", iid), "pr", "bd", "mv", "sv")
              for iid in r.smembers(K.items_key("p"))}
    _train(r, settings, run_jobs)
    project = get_project(r, "p")
    assert current_ranker(r, project) is not None
    run = model_info(r, "p")["rescore_job_id"]  # how an HTTP client knows the queue is fresh
    assert run and rescore_progress(r, "p", run)["finished"]
    live = pooled(r, "p")
    assert not not_rescored(r, project, sorted(live))
    assert sum(abs(live[iid] - float(stored[iid][0])) > 1e-6 for iid in live) > len(live) / 2
    for iid in live:
        assert r.hmget(K.item_key("p", iid), "pr", "bd", "mv", "sv") == stored[iid]
    check_store(r, "p")


def test_item_with_several_tags_is_rescored_once(r, settings, run_jobs):
    """An item in the x and y sets is in two snapshots but scored once (from its first
    tag's), and its new score is written to both sets."""
    project = _project(r)
    run = enqueue_rescore(r, "p", reason="test", settings=settings, chunk=7)
    run_jobs()
    progress = r.hgetall(K.rescore_progress_key("p", run))
    updated = sum(int(value) for name, value in progress.items() if name.startswith("done:"))
    assert updated == len(pooled(r, "p")) == 120
    assert int(progress["total_items"]) == 120 + 30  # the 30 x+y items sit in two sets
    assert rescore_progress(r, "p", run)["finished"]
    assert not list(r.scan_iter(K.rescore_snapshot_key("p", run, 0, 0)[:-3] + "*"))  # gone
    project = _reweigh(r)
    rescore_items(r, project, sorted(pooled(r, "p")))
    assert not not_rescored(r, project, sorted(pooled(r, "p")))
    check_store(r, "p")  # among others: one score per item across its sets


def test_chunks_are_score_ranges_and_ties_stay_together(r, settings, run_jobs):
    """Items of equal priority all fall in one chunk; every item is re-scored exactly once
    whatever the chunk size."""
    create_project(r, {"id": "p", "labels": ["a", "b"]})
    ingest(r, get_project(r, "p"), [{"id": f"i{i}", "predictions": {"m": [0.3, 0.7]}}
                                    for i in range(10)]
           + [{"id": f"j{i}", "predictions": {"m": [0.1 + i / 100, 0.9 - i / 100]}}
              for i in range(10)])
    # Ties as a platform's own priorities make them (the cold start's coverage has none).
    set_priorities(r, "p", [(f"i{i}", 0.5) for i in range(10)]
                   + [(f"j{i}", 0.1 * i) for i in range(10)])
    run = enqueue_rescore(r, "p", reason="test", settings=settings, chunk=3)
    segments = _segments(r, run)
    assert sorted(iid for segment in segments for iid in segment) == sorted(r.smembers(
        K.items_key("p")))
    assert any({f"i{i}" for i in range(10)} <= segment for segment in segments)
    run_jobs()
    progress = r.hgetall(K.rescore_progress_key("p", run))
    updated = [int(value) for name, value in progress.items() if name.startswith("done:")]
    assert sum(updated) == int(progress["total_items"]) == 20
    assert rescore_progress(r, "p", run)["finished"]


def test_small_sets_share_chunks(r, settings, run_jobs):
    """Twelve one-item tag sets and the untagged set make 3 chunks of up to 5 items, not
    13 jobs; every item is re-scored once."""
    create_project(r, {"id": "p", "labels": ["a", "b"]})
    ingest(r, get_project(r, "p"), [
        {"id": f"i{i}", "skills": [f"t{i}"] if i < 12 else [],
         "predictions": {"m": [0.1 + i / 40, 0.9 - i / 40]}} for i in range(15)])
    run = enqueue_rescore(r, "p", reason="test", settings=settings, chunk=5)
    assert rescore_progress(r, "p", run)["chunks"] == 3
    assert sorted(iid for segment in _segments(r, run) for iid in segment) == sorted(
        r.smembers(K.items_key("p")))
    run_jobs()
    progress = r.hgetall(K.rescore_progress_key("p", run))
    assert sum(int(v) for n, v in progress.items() if n.startswith("done:")) == 15
    assert rescore_progress(r, "p", run)["finished"]


def _segments(r, run: str) -> list[set[str]]:
    """The item ids captured in each segment of each chunk of ``run``."""
    layout = json.loads(r.hget(K.rescore_progress_key("p", run), "layout"))
    return [set(r.zrange(K.rescore_snapshot_key("p", run, index, segment), 0, -1))
            for index, segments in enumerate(layout) for segment in range(len(segments))]


def test_claimed_then_expired_item_returns_with_its_latest_score(r):
    """A re-score moves an item's score past its stored 'pr'; claimed, then expired, it
    comes back at the latest score, not at the one ingest stored."""
    _project(r)
    project = _reweigh(r)
    rescore_items(r, project, sorted(pooled(r, "p")))
    live = pooled(r, "p")
    stored = {iid: float(r.hget(K.item_key("p", iid), "pr")) for iid in live}
    task = tasks.claim(r, project, load_expert(r, "e1"), 8, now=START)
    iid = task["item_id"]
    latest = live[iid]
    assert abs(latest - stored[iid]) > 1e-6, "the re-score moved it past its stored 'pr'"
    assert float(r.hget(K.item_key("p", iid), "pr")) == latest
    assert abs(task["priority"] - latest) < 1e-9  # the answer shows 14 digits
    assert iid not in pooled(r, "p")
    assert tasks.sweep(r, "p", now=START + 61) == 1
    assert pooled(r, "p")[iid] == latest
    check_store(r, "p")


def test_label_of_a_still_pending_item_keeps_its_live_score(r):
    """With 2 labels wanted, an item stays pending after one claim; a re-score between the
    claim and the label moves it, and the label leaves it at that newer score."""
    _project(r, redundancy=2)
    project = get_project(r, "p")
    task = tasks.claim(r, project, load_expert(r, "e1"), 8, now=START)
    project = _reweigh(r)
    rescore_items(r, project, sorted(pooled(r, "p")))
    moved = pooled(r, "p")[task["item_id"]]
    assert abs(moved - task["priority"]) > 1e-6
    status, body = tasks.submit_label(r, project, task["id"], "a", 1.0, now=START + 1)
    assert status == 201 and body["item_status"] == "pending"
    assert pooled(r, "p")[task["item_id"]] == moved


def test_rescore_never_readds_a_claimed_item(r):
    """ZADD XX only updates members: re-scoring ids of items claimed since leaves them out."""
    _project(r)
    project, expert = get_project(r, "p"), load_expert(r, "e1")
    claimed = {tasks.claim(r, project, expert, 8)["item_id"] for _ in range(10)}
    rescore_items(r, _reweigh(r), sorted(r.smembers(K.items_key("p"))))
    assert not claimed & set(pooled(r, "p"))
    check_store(r, "p")


def test_rescore_never_returns_a_claimed_item_to_the_pool(r, settings):
    """A re-score running while experts claim items never puts a claimed item back."""
    features_project(r, n=400)
    project = get_project(r, "p")
    for round_ in range(5):
        ids = sorted(pooled(r, "p"))
        expert = load_expert(r, "e")
        worker = threading.Thread(target=rescore_items, args=(r, project, ids))
        worker.start()
        for _ in range(20):
            tasks.claim(r, project, expert, depth=8)
        worker.join()
        in_pool = set(pooled(r, "p"))
        pipe = r.pipeline()
        for iid in in_pool:
            pipe.hget(K.item_key("p", iid), "st")
        assert set(pipe.execute()) <= {"pending"}, f"round {round_}: a leased item is queued"
    assert r.zcard(K.leases_key("p")) == 100


def test_rescore_run_reports_progress_and_uses_current_model(r, settings, run_jobs):
    """A re-score run fans out in chunks, reports progress, and ends finished."""
    features_project(r, n=250)
    run = enqueue_rescore(r, "p", reason="test", settings=settings, chunk=100)
    assert len([j for j in task_queue(settings).job_ids if j.startswith(run)]) == 3
    run_jobs()
    progress = rescore_progress(r, "p", run)
    assert progress["finished"] and progress["chunks_done"] == 3
    assert progress["items_done"] == 250
    assert current_ranker(r, get_project(r, "p")) is None
