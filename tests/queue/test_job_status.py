"""What GET /v1/jobs/{jid} reads (queue/job_status.py): an RQ job, or a whole re-score run."""

from __future__ import annotations

from taskrank.queue.connection import rq_redis
from taskrank.queue.job_status import job_view
from taskrank.queue.rescore import enqueue_rescore
from taskrank.queue.retrain import enqueue_retrain
from tests.cluster import both_backends
from tests.pools import features_project

pytestmark = both_backends  # on the single Redis and on the Redis Cluster


def _view(r, job_id):
    return job_view(rq_redis(r), r, job_id)


def test_a_re_score_run_reports_its_chunks_as_progress(r, settings, run_jobs):
    """A run's id names no RQ job: its view is the run's progress, finished once every
    chunk is done."""
    features_project(r, n=250)
    run = enqueue_rescore(r, "p", reason="test", settings=settings, chunk=100)
    assert _view(r, run)["status"] == "started" and _view(r, run)["progress"] == 0.0
    run_jobs()
    view = _view(r, run)
    assert (view["status"], view["progress"]) == ("finished", 1.0)
    assert view["result"]["items_done"] == 250


def test_an_rq_job_shows_its_status_and_result(r, settings, run_jobs):
    """A retrain is seen queued, then finished with its result; an unknown id is None."""
    features_project(r, n=20)
    job_id = enqueue_retrain(r, settings, "p")
    assert _view(r, job_id)["status"] == "queued"
    run_jobs()
    view = _view(r, job_id)
    assert (view["status"], view["progress"], view["error"]) == ("finished", 1.0, None)
    assert "skipped" in view["result"]  # no labels yet
    assert _view(r, "nope") is None
    assert _view(r, "rescore-abcd1234-70") is None  # shaped like a run, but unknown
