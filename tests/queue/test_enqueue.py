"""The helpers every RQ job shares (queue/enqueue.py): ids that name their project, and a
job queued once per pending mark."""

from __future__ import annotations

from taskrank.queue import keys as K
from taskrank.queue.enqueue import enqueue_once, job_project, new_job_id
from taskrank.queue.worker import task_queue
from tests.cluster import both_backends

pytestmark = both_backends  # on the single Redis and on the Redis Cluster


def test_a_job_id_names_its_kind_and_project():
    """An id holds only RQ's characters and gives its project back, for its own kind only."""
    job_id = new_job_id("rescore", "proj.1_x")
    assert job_id.startswith("rescore-") and ":" not in job_id and "." not in job_id
    assert job_project(job_id, "rescore") == "proj.1_x"
    assert job_project(job_id, "retrain") is None
    assert job_project("rescore-nothex!-70", "rescore") is None
    assert job_project("rescore-abcd1234-zz", "rescore") is None


def _job(pid: str) -> str:  # never run: the test only queues it
    return pid


def test_a_pending_mark_queues_one_job_until_it_is_cleared(r, settings):
    """While the mark names a waiting job its id is answered again; once the job clears
    the mark, the next call queues a new one."""
    pending = K.retrain_pending_key("p")
    first = enqueue_once(r, settings, pending, "retrain", _job, "p")
    assert enqueue_once(r, settings, pending, "retrain", _job, "p") == first
    assert task_queue(settings).job_ids == [first]
    assert 0 < r.ttl(pending) <= 3600  # a job lost before it started blocks no one forever
    r.delete(pending)
    second = enqueue_once(r, settings, pending, "retrain", _job, "p")
    assert second != first and task_queue(settings).job_ids == [first, second]
