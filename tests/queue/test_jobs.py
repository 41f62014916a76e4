"""Jobs queued before the split (issue 13) name ``taskrank.queue.jobs.<function>``: those
paths still lead to the jobs (queue/jobs.py)."""

from __future__ import annotations

import pytest
from rq.job import Job

from taskrank.queue.connection import connect_rq
from taskrank.queue.pool_map_jobs import map_pool
from taskrank.queue.rescore import rescore_chunk
from taskrank.queue.retrain import evaluate_model, retrain


@pytest.mark.parametrize("function", [retrain, evaluate_model, map_pool, rescore_chunk])
def test_an_old_job_path_runs_the_job(settings, function):
    """A job stored with the old dotted path resolves to the job function of its module."""
    job = Job.create(f"taskrank.queue.jobs.{function.__name__}", args=("p",),
                     connection=connect_rq(settings))
    assert job.func is function
