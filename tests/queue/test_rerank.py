"""Re-score runs top first (queue/rescore.py, queue/rerank.py): the top of every set on the
main queue declares the queue re-ranked, the tail follows on the low queue, keeps its
previous scores until then, stops for the main queue and for a newer run."""

from __future__ import annotations

import pytest

from taskrank.queue import keys as K
from taskrank.queue import rescore
from taskrank.queue.backfill import set_priorities
from taskrank.queue.connection import connect_rq
from taskrank.queue.models import model_info
from taskrank.queue.rerank import SETTLE_ROUNDS, TOP_JOBS, claim_window
from taskrank.queue.rescore import enqueue_rescore, rescore_progress
from taskrank.queue.settings import current, install
from taskrank.queue.worker import InProcessWorker, low_queue, task_queue, task_queues
from tests.invariants import pooled
from tests.pools import tagged_project

TOP, CHUNK = 10, 10
SETS = {"": 30, "x": 60, "y": 60}  # tagged_project(120): a quarter each of -, x, y, x+y


@pytest.fixture
def window(settings):
    """Claims read 8 candidates of a set (claim_depth 1): the windows are smaller than the
    sets, as they are in a real pool."""
    previous = current()
    install(settings.replace(claim_depth=1))
    yield claim_window(current())
    install(previous)


def _pool(r, run_jobs, shift: float) -> tuple[dict[str, float], dict[str, float]]:
    """120 items at their true scores (what a re-score gives them) and, live, every score
    moved by ``shift`` (as if an older model scored them); (true, previous)."""
    tagged_project(r, 120, seed=3)
    run_jobs()  # the ingest's pool map and its re-score: the scores are the true ones
    true = pooled(r, "p")
    previous = {iid: score + shift for iid, score in true.items()}
    set_priorities(r, "p", list(previous.items()))
    return true, previous


def _work(settings, *queues: str, max_jobs: int | None = None) -> None:
    connection = connect_rq(settings)
    chosen = [queue for queue in task_queues(settings, connection) if queue.name in queues]
    InProcessWorker(chosen, connection=connection).work(burst=True, max_jobs=max_jobs,
                                                         logging_level="WARNING")


def _window_stale(r, previous: dict[str, float], width: int) -> int:
    """Items within a claim's reach of some set that still hold their previous score."""
    stale = 0
    for tag in SETS:
        for iid, score in r.zrevrange(K.pool_set_key("p", tag), 0, width - 1, withscores=True):
            stale += abs(score - previous[iid]) < 1e-12
    return stale


def test_the_top_reranks_first_and_the_tail_keeps_its_scores_until_its_turn(
        r, settings, run_jobs, window):
    """The top chunks alone run on the main queue (the tail waits for them): the run is
    re-ranked, not finished; every claim window holds re-scored items, the tail its
    previous scores.  The tail then re-scores the rest, each item once."""
    true, previous = _pool(r, run_jobs, shift=1e-6)  # a model that moved scores a little
    run = enqueue_rescore(r, "p", "test", settings, chunk=CHUNK, top=TOP)
    main, low = task_queue(settings), low_queue(settings)
    top = rescore_progress(r, "p", run)["top_chunks"]
    assert main.count == top == 3 * TOP_JOBS and low.count == 0  # each set's top in halves
    _work(settings, main.name)
    progress = rescore_progress(r, "p", run)
    assert progress["reranked"] and not progress["finished"] and progress["window_stale"] == 0
    assert model_info(r, "p")["version"] is None  # no model run: only the progress says it
    live = pooled(r, "p")
    kept = [iid for iid in live if abs(live[iid] - previous[iid]) < 1e-12]
    assert len(kept) > 120 - 3 * TOP - 10 and _window_stale(r, previous, window) == 0
    assert low.count == rescore_progress(r, "p", run)["chunks"] - top  # the tail, released
    _work(settings, low.name)
    progress = r.hgetall(K.rescore_progress_key("p", run))
    assert "finished_at" in progress and int(progress["risen"]) == 0
    # Each item scored once: an x+y item in the top of x and y by x's, one of the top
    # left out of the tail's snapshots.
    assert sum(int(value) for name, value in progress.items()
               if name.startswith("done:")) == 120
    assert all(abs(score - true[iid]) < 1e-9 for iid, score in pooled(r, "p").items())


def test_tail_items_that_rise_into_a_claim_window_are_rescored_before_the_rerank(
        r, settings, run_jobs, window):
    """Scores moved wholesale (every previous score 100 higher): the top's new scores
    fall below the whole tail, which rises into the windows; each pass re-scores a window
    of them, and what is left after SETTLE_ROUNDS is reported as window_stale."""
    _, previous = _pool(r, run_jobs, shift=100.0)
    run = enqueue_rescore(r, "p", "test", settings, chunk=CHUNK, top=TOP)
    _work(settings, "taskrank")
    progress = r.hgetall(K.rescore_progress_key("p", run))
    # The untagged set (30) settles; x and y (60 each) cannot in 4 passes of 8.
    assert int(progress["window_stale"]) == _window_stale(r, previous, window) > 0
    assert 30 - TOP <= int(progress["risen"]) <= 3 * SETTLE_ROUNDS * window
    untagged = r.zrevrange(K.pool_untagged_key("p"), 0, window - 1, withscores=True)
    assert all(abs(score - previous[iid]) > 1 for iid, score in untagged)
    _work(settings, "taskrank-low")
    assert _window_stale(r, previous, 1000) == 0


def test_a_tail_chunk_yields_to_a_waiting_job_and_goes_on_from_there(r, settings, run_jobs,
                                                                    monkeypatch):
    """A job waiting on the main queue stops the running tail chunk after one batch; its
    continuation, first on the low queue, re-scores the rest of it once."""
    true, _ = _pool(r, run_jobs, shift=1e-6)
    monkeypatch.setattr(rescore, "RESCORE_BATCH", 5)
    run = enqueue_rescore(r, "p", "test", settings, chunk=60, top=1)  # tail: 29, 59, 59
    _work(settings, "taskrank")  # the top
    _work(settings, "taskrank-low", max_jobs=1)  # captures the tail, scores its first chunk
    task_queue(settings).enqueue("math.sqrt", 16)  # a job that must go first
    _work(settings, "taskrank-low", max_jobs=1)
    progress = r.hgetall(K.rescore_progress_key("p", run))
    second = int(progress["top_chunks"]) + 1  # the tail's second chunk (x's 59 items)
    assert f"done:{second}" not in progress and progress[f"at:{second}"] == "5"
    assert low_queue(settings).job_ids[0] == progress[f"job:{second}"] == \
        f"{run}-c{second}-y1"
    _work(settings, "taskrank", "taskrank-low")
    progress = r.hgetall(K.rescore_progress_key("p", run))
    assert "finished_at" in progress and int(progress[f"done:{second}"]) <= 59
    assert int(progress["items_done"]) == 3 + 29 + 59 + 59
    assert all(abs(score - true[iid]) < 1e-9 for iid, score in pooled(r, "p").items())


def test_a_newer_run_supersedes_the_tail_of_an_older_one(r, settings, run_jobs):
    """Run A re-ranked, its tail waiting; run B starts: A's tail chunks end without
    scoring (A finished, superseded by B), B re-scores every item."""
    true, _ = _pool(r, run_jobs, shift=1e-6)
    older = enqueue_rescore(r, "p", "test", settings, chunk=CHUNK, top=TOP)
    _work(settings, "taskrank")
    newer = enqueue_rescore(r, "p", "test", settings, chunk=CHUNK, top=TOP)
    _work(settings, "taskrank", "taskrank-low")
    first, second = rescore_progress(r, "p", older), rescore_progress(r, "p", newer)
    assert first["finished"] and first["superseded_by"] == newer
    assert first["items_done"] == 3 * TOP  # the top only
    assert second["finished"] and second["superseded_by"] is None
    assert all(abs(score - true[iid]) < 1e-9 for iid, score in pooled(r, "p").items())


def test_a_run_superseding_an_unfinished_pool_map_run_recomputes_clusters(r, settings,
                                                                          run_jobs):
    """A pool map's run recomputes clusters; a model's run that supersedes its tail does
    it in its stead, so no item keeps a cluster of the old map."""
    _pool(r, run_jobs, shift=1e-6)
    mapped = enqueue_rescore(r, "p", "pool map", settings, chunk=CHUNK, top=TOP, clusters=True)
    newer = enqueue_rescore(r, "p", "model", settings, chunk=CHUNK, top=TOP)
    assert r.hget(K.rescore_progress_key("p", mapped), "clusters") == "1"
    assert r.hget(K.rescore_progress_key("p", newer), "clusters") == "1"
    _work(settings, "taskrank", "taskrank-low")
    again = enqueue_rescore(r, "p", "again", settings)  # the older runs finished
    assert r.hget(K.rescore_progress_key("p", again), "clusters") == "0"


def test_the_tail_is_queued_once_the_top_is_done_highest_scores_first(r, settings, run_jobs):
    """No tail chunk is queued before the top is done (it would only slow the re-rank
    down); then all of them, in the layout's order."""
    _pool(r, run_jobs, shift=1e-6)
    run = enqueue_rescore(r, "p", "test", settings, chunk=CHUNK, top=TOP)
    low = low_queue(settings)
    assert low.count == 0
    _work(settings, "taskrank")
    progress = rescore_progress(r, "p", run)
    assert low.job_ids == [f"{run}-c{index}"
                           for index in range(progress["top_chunks"], progress["chunks"])]
