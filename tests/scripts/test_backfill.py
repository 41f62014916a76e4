"""``taskrank backfill``: chunked re-score over RQ, resumable; priorities from a file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from taskrank.queue import keys as K
from taskrank.queue.backfill import resume_rescore
from taskrank.queue.connection import connect_rq
from taskrank.queue.experts import put_expert
from taskrank.queue.items import ingest
from taskrank.queue.projects import create_project, get_project, update_project
from taskrank.queue.rescore import enqueue_rescore, rescore_progress
from taskrank.queue.settings import Settings
from taskrank.queue.tasks import claim
from taskrank.queue.worker import InProcessWorker, task_queue, task_queues
from taskrank.scripts import backfill
from tests.invariants import pooled
from tests.scripts.helpers import rq_worker

N_ITEMS, CHUNK = 60, 7  # 30 untagged, 30 tagged: 4 chunks of 7 per set, the rests share one


@pytest.fixture
def env(monkeypatch, settings):
    """backfill reads TASKRANK_REDIS_URL like every Redis-side command."""
    monkeypatch.setenv("TASKRANK_REDIS_URL", settings.redis_url)
    monkeypatch.delenv("TASKRANK_QUEUE_NAME", raising=False)


def _project(r, pid: str, settings: Settings) -> dict:
    """A project of N_ITEMS scored items, whose strategy then changes (stale priorities)."""
    create_project(r, {"id": pid, "labels": ["a", "b", "c"]})
    rng = np.random.default_rng(1)
    items = [{"id": f"i{i}", "skills": ["t1"] if i % 2 else [],
              "predictions": {"m1": _probs(rng), "m2": _probs(rng)}} for i in range(N_ITEMS)]
    ingest(r, get_project(r, pid), items)
    _work(settings)  # the pool map the ingest queued, and its re-score
    update_project(r, pid, {"strategy": {"uncertainty": "entropy",
                                         "weights": {"uncertainty": 0.2, "disagreement": 0.8}}})
    return get_project(r, pid)


def _probs(rng: np.random.Generator) -> list[float]:
    row = [round(float(p), 6) for p in rng.dirichlet([1, 1, 1])]
    row[-1] = round(1 - sum(row[:-1]), 6)
    return row


def _priorities(r, pid: str) -> dict[str, float]:
    return pooled(r, pid)


def _work(settings, max_jobs: int | None = None) -> None:
    connection = connect_rq(settings)
    InProcessWorker(task_queues(settings, connection), connection=connection).work(
        burst=True, max_jobs=max_jobs, logging_level="WARNING")


def test_interrupted_and_resumed_run_gives_the_priorities_of_one_run(env, settings, r, capsys):
    """Three chunks done, the rest lost, --resume: same priorities as an uninterrupted run."""
    _project(r, "whole", settings)
    before = _priorities(r, "whole")
    assert backfill.main(["whole", "--direct", "--chunk", str(CHUNK)]) == 0
    whole = _priorities(r, "whole")
    assert whole != before  # the strategy change did move priorities

    _project(r, "cut", settings)
    run = enqueue_rescore(r, "cut", reason="test", settings=settings, chunk=CHUNK)
    _work(settings, max_jobs=3)
    task_queue(settings, connect_rq(settings)).empty()  # the rest of the jobs are lost
    assert rescore_progress(r, "cut", run)["chunks_done"] == 3
    capsys.readouterr()
    assert backfill.main(["cut", "--resume", run, "--direct", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["chunks_done"], summary["chunks"], summary["items_done"]) == (9, 9, N_ITEMS)
    assert _priorities(r, "cut") == whole
    assert r.zrange(K.pool_tag_key("cut", "t1"), 0, -1, withscores=True) == r.zrange(
        K.pool_tag_key("whole", "t1"), 0, -1, withscores=True)


def test_resume_enqueues_only_chunks_not_done_and_not_already_waiting(settings, r):
    """Chunks still in the queue are moved, not doubled; done ones are never enqueued."""
    _project(r, "p", settings)
    run = enqueue_rescore(r, "p", reason="test", settings=settings, chunk=CHUNK)
    _work(settings, max_jobs=2)
    again = resume_rescore(r, "p", run, settings)
    assert again == list(range(2, 9))
    ids = task_queue(settings, connect_rq(settings)).get_job_ids()
    assert sorted(ids) == sorted(f"{run}-c{index}" for index in range(2, 9))
    _work(settings)
    assert rescore_progress(r, "p", run)["finished"]
    assert resume_rescore(r, "p", run, settings) == []


def test_backfill_fans_out_over_a_running_worker(env, settings, r, capsys):
    """Without --direct the chunks run on the RQ workers; the summary counts them all."""
    _project(r, "p", settings)
    with rq_worker(settings, r):
        assert backfill.main(["p", "--chunk", "20", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["items"], summary["updated"], summary["chunks_done"]) == (N_ITEMS, N_ITEMS, 3)


def test_unusable_invocations_exit_2(env, settings, r, capsys):
    """No worker, unknown project, unknown run: exit 2 with one line."""
    _project(r, "p", settings)
    assert backfill.main(["p"]) == 2
    assert "no RQ worker listens" in capsys.readouterr().err
    assert backfill.main(["ghost", "--direct"]) == 2
    assert "no project 'ghost'" in capsys.readouterr().err
    assert backfill.main(["p", "--direct", "--resume", "rescore-00000000-70"]) == 2
    assert "no re-score run" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_from_file_sets_priorities_of_pending_items_only(env, settings, r, tmp_path, capsys,
                                                        fmt):
    """--from: pending items take the given priority; a leased one stays out of the pool."""
    _project(r, "p", settings)
    put_expert(r, "e1", {"skills": {"t1": 0.9}})
    from taskrank.queue.experts import load_expert

    leased = claim(r, get_project(r, "p"), load_expert(r, "e1"), depth=32)["item_id"]
    rows = [("i0", 7.5), (leased, 9.0), ("ghost", 1.0), ("i2", "high"), ("i3", -2)]
    path = tmp_path / f"priorities.{fmt}"
    if fmt == "csv":
        path.write_text("id,priority\n" + "".join(f"{i},{p}\n" for i, p in rows))
    else:
        path.write_text("".join(json.dumps({"id": i, "priority": p}) + "\n" for i, p in rows))
    assert backfill.main(["p", "--from", str(path), "--json"]) == 1
    out = capsys.readouterr()
    summary = json.loads(out.out)
    assert (summary["updated"], summary["not_pending"], summary["rejected"]) == (2, 1, 2)
    first = 2 if fmt == "csv" else 1  # the CSV header is line 1
    assert f"line {first + 2}: no item 'ghost'" in out.err
    assert f"line {first + 3}: priority must be" in out.err
    assert float(r.hget(K.item_key("p", "i0"), "pr")) == 7.5
    assert json.loads(r.hget(K.item_key("p", "i3"), "bd")) == {"external": -2}
    assert pooled(r, "p")["i0"] == 7.5 and leased not in pooled(r, "p")


def test_from_file_rejects_priorities_outside_the_float_range_line_by_line(env, settings, r,
                                                                           tmp_path, capsys):
    """--from: 1e400, a 400-digit integer (once an uncaught OverflowError) and a NaN
    literal each reject their line; the other lines are applied."""
    _project(r, "p", settings)
    path = tmp_path / "priorities.jsonl"
    path.write_text('{"id": "i0", "priority": 1e400}\n'
                    '{"id": "i2", "priority": 1' + "0" * 400 + "}\n"
                    '{"id": "i4", "priority": NaN}\n'
                    '{"id": "i6", "priority": 3.5}\n')
    assert backfill.main(["p", "--from", str(path), "--json"]) == 1
    out = capsys.readouterr()
    summary = json.loads(out.out)
    assert (summary["updated"], summary["rejected"]) == (1, 3), out.err
    assert "line 1: priority must be a finite number" in out.err
    assert "line 2: priority must be a finite number" in out.err
    assert "line 3: not valid JSON: NaN is not a JSON number" in out.err
    assert float(r.hget(K.item_key("p", "i6"), "pr")) == 3.5
