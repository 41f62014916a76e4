"""The pool map job, the cold-start order it gives, and the claim's exploration and
diversity, against a real Redis and RQ."""

from __future__ import annotations

import numpy as np

from taskrank.queue import keys as K
from taskrank.queue import tasks
from taskrank.queue.backfill import set_priorities
from taskrank.queue.experts import load_expert, put_expert
from taskrank.queue.items import ingest
from taskrank.queue.pool_map import NO_CLUSTER, current_pool_map, fit_project_map
from taskrank.queue.projects import create_project, get_project
from taskrank.queue.rescore import enqueue_rescore

CENTERS = np.array([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0], [20.0, 20.0]])


def _blob_items(sizes, start=0, seed=0):
    """Items of 2-d features in well-separated blobs; the blob of each item."""
    rng = np.random.default_rng(seed)
    items, blobs = [], []
    for blob, n in enumerate(sizes):
        for row in CENTERS[blob] + rng.normal(size=(n, 2)):
            items.append({"id": f"i{start + len(items):04d}", "features": row.round(4).tolist()})
            blobs.append(blob)
    return items, dict(zip([item["id"] for item in items], blobs, strict=True))


def _project(r, strategy=None, pid="p"):
    create_project(r, {"id": pid, "labels": ["a", "b"], "strategy": {
        "retrain": {"every_labels": 10**6}, **(strategy or {})}})
    return get_project(r, pid)


def _expert(r, eid="e1"):
    put_expert(r, eid, {"skills": {"x": 0.9}, "capacity": 1000})
    return load_expert(r, eid)


def _claims(r, project, expert, n):
    return [tasks.claim(r, project, expert, depth=32) for _ in range(n)]


def test_cold_start_covers_every_cluster_of_the_pool(r, run_jobs):
    """The first claims take one item of each blob, the small ones included, though the
    big blob was ingested first and alone in its batches."""
    project = _project(r, {"coverage": {"clusters": 4}})
    items, blob_of = _blob_items([300, 100, 30, 10])
    for start in range(0, len(items), 100):
        ingest(r, project, items[start:start + 100])
    run_jobs()  # the pool map, then the re-score it queues
    assert current_pool_map(r, "p").pool_map.n_clusters == 4
    first = _claims(r, project, _expert(r), 4)
    assert sorted(blob_of[task["item_id"]] for task in first) == [0, 1, 2, 3]


def test_before_the_map_the_order_is_fixed_by_item_id_not_by_batch(r):
    """Without a map, cold priorities are a uniform draw per item id: ingesting the same
    items in other batches gives the same priorities, and no cluster."""
    items, _ = _blob_items([20, 20])
    priorities = []
    for pid, batches in (("p", [items]), ("q", [items[:7], items[7:]])):
        project = _project(r, pid=pid)
        for batch in batches:
            ingest(r, project, batch)
        priorities.append([r.zscore(K.pool_untagged_key(pid), item["id"]) for item in items])
        assert r.hget(K.item_key(pid, items[0]["id"]), "cl") == str(NO_CLUSTER)
    assert priorities[0] == priorities[1]


def test_items_ingested_after_the_map_join_their_cluster_at_once(r, run_jobs):
    """An item ingested once the map exists gets its cluster and coverage place without
    another job."""
    project = _project(r, {"coverage": {"clusters": 2}})
    items, _ = _blob_items([30, 30])
    ingest(r, project, items)
    run_jobs()
    cluster_of_blob = {blob: r.hget(K.item_key("p", items[blob * 30]["id"]), "cl")
                       for blob in (0, 1)}
    assert cluster_of_blob[0] != cluster_of_blob[1]
    ingest(r, project, [{"id": "late", "features": [20.1, 0.2]}])
    assert r.hget(K.item_key("p", "late"), "cl") == cluster_of_blob[1]
    assert 0 < r.zscore(K.pool_untagged_key("p"), "late") <= 1


def test_the_map_is_refitted_once_the_pool_has_doubled(r, run_jobs):
    """A pool grown by refit_growth queues a new fit; a smaller growth does not."""
    project = _project(r)
    items, _ = _blob_items([40, 40])
    ingest(r, project, items[:20])
    run_jobs()
    ingest(r, project, items[20:39])  # 39 < 2 x 20
    assert not r.exists(K.pool_map_pending_key("p"))
    ingest(r, project, items[39:])  # 80 >= 2 x 20
    assert r.exists(K.pool_map_pending_key("p"))
    run_jobs()
    assert r.hget(K.pool_map_key("p"), "version") == "2"


def _warm_project(r, factor, share=0.0):
    """Supplied predictions (so the committee scores at once), two clusters, priorities
    set by hand: blob 0 holds the four best items, blob 1 the next four."""
    project = _project(r, {"coverage": {"clusters": 2}, "diversity": {"factor": factor},
                           "explore": {"share": share}})
    items, blob_of = _blob_items([20, 20])
    for item in items:
        item["predictions"] = {"m": [0.5, 0.5]}
    ingest(r, project, items)
    return project, items, blob_of


def test_diversity_spreads_claims_between_re_ranks(r, run_jobs):
    """With factor 0.5 a second claim goes to the other cluster's best item (value 0.9 >
    1.0 x 0.5); with factor 1 it stays in the first cluster."""
    for pid_factor in (0.5, 1.0):
        r.flushdb()
        project, items, blob_of = _warm_project(r, pid_factor)
        run_jobs()
        ids = [item["id"] for item in items]
        set_priorities(r, "p", [(iid, 1.0 - 0.01 * i if blob_of[iid] == 0 else 0.9 - 0.01 * i)
                                for i, iid in enumerate(ids)])
        first, second = _claims(r, project, _expert(r), 2)
        assert blob_of[first["item_id"]] == 0
        assert blob_of[second["item_id"]] == (1 if pid_factor < 1 else 0)


def test_a_finished_re_rank_clears_the_cluster_counts(r, run_jobs):
    """Leases count per cluster only until the next re-score run finishes."""
    project, _, _ = _warm_project(r, 0.5)
    run_jobs()
    _claims(r, project, _expert(r), 2)
    assert r.hlen(K.claimed_clusters_key("p")) > 0
    enqueue_rescore(r, "p", "test")
    run_jobs()
    assert not r.exists(K.claimed_clusters_key("p"))


def test_no_exploration_before_the_project_has_a_model(r, run_jobs):
    """The cold-start order already covers the pool: share 1 explores nothing yet."""
    project, _, _ = _warm_project(r, 1.0, share=1.0)
    run_jobs()
    assert not any(task["exploration"] for task in _claims(r, project, _expert(r), 5))


def test_exploration_takes_its_share_evenly_and_marks_the_task(r, run_jobs):
    """Share 0.5 with a model: every other claim is an exploration, marked 'ex' on the
    task and in the answer; the other claims follow the priority order."""
    project, items, _ = _warm_project(r, 1.0, share=0.5)
    run_jobs()
    r.hset(K.counters_key("p"), "mv", 1)  # what storing a model version writes
    set_priorities(r, "p", [(item["id"], float(i)) for i, item in enumerate(items)])
    claimed = _claims(r, project, _expert(r), 10)
    explored = [task["exploration"] for task in claimed]
    assert sum(explored) == 5 and explored[0::2] != explored[1::2]
    for task in claimed:
        marked = r.hget(K.task_key("p", task["id"]), "ex") == "1"
        assert marked == task["exploration"]
        assert task["reason"].startswith("exploration") == task["exploration"]
    by_priority = [task["priority"] for task in claimed if not task["exploration"]]
    assert by_priority == sorted(by_priority, reverse=True)


def test_exploration_draws_are_reproducible_and_spread(r, run_jobs):
    """Two identical projects explore the same items; draws are not the top items."""
    picks = []
    for _ in range(2):
        r.flushdb()
        project, items, _ = _warm_project(r, 1.0, share=1.0)
        run_jobs()
        r.hset(K.counters_key("p"), "mv", 1)
        set_priorities(r, "p", [(item["id"], float(i)) for i, item in enumerate(items)])
        picks.append([task["item_id"] for task in _claims(r, project, _expert(r), 8)])
    assert picks[0] == picks[1]
    top8 = {item["id"] for item in items[-8:]}
    assert len(set(picks[0]) - top8) >= 4


def test_items_without_the_maps_inputs_are_placed_without_it(r, run_jobs):
    """A map fitted on features, then a batch whose items carry only predictions (found
    by the API fuzzer as a 500): stored, no cluster, the id-fixed cold order."""
    create_project(r, {"id": "p", "labels": ["a", "b"]})
    items, _ = _blob_items([20, 20])
    ingest(r, get_project(r, "p"), items)
    run_jobs()
    assert current_pool_map(r, "p") is not None
    answer = ingest(r, get_project(r, "p"), [
        {"id": "only-preds", "predictions": {"m": [0.4, 0.6]}}])
    assert answer["created"] == 1 and not answer["rejected"]
    assert r.hget(K.item_key("p", "only-preds"), "cl") == str(NO_CLUSTER)


def test_no_map_without_features_or_supplied_models(r, run_jobs):
    """Nothing to cluster by: the job skips, ingest goes on."""
    create_project(r, {"id": "p", "labels": ["a", "b"]})
    assert fit_project_map(r, get_project(r, "p")) is None
