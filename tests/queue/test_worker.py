"""taskrank's RQ workers: RQ's command listener wakes every second, so a worker's teardown
(redis-py 8 joins the listener without a timeout) never waits on RQ's 60 s poll."""

from __future__ import annotations

import pytest

from taskrank.queue.connection import connect_rq
from taskrank.queue.worker import (
    PUBSUB_POLL_SECONDS,
    InProcessWorker,
    TaskWorker,
    task_queue,
    task_queues,
)


@pytest.mark.parametrize("kind", [TaskWorker, InProcessWorker])
def test_the_command_listener_wakes_every_second(settings, r, kind):
    connection = connect_rq(settings)
    worker = kind([task_queue(settings, connection)], connection=connection)
    worker.subscribe()
    try:
        assert worker.pubsub_thread.sleep_time == PUBSUB_POLL_SECONDS <= 1.0
        assert worker.pubsub_thread.is_alive()
    finally:
        worker.unsubscribe()
    assert not worker.pubsub_thread.is_alive()


def test_a_burst_worker_works_the_queue_and_stops(settings, r):
    connection = connect_rq(settings)
    queue = task_queue(settings, connection)
    job = queue.enqueue("builtins.len", "abc")
    InProcessWorker([queue], connection=connection).work(burst=True, logging_level="WARNING")
    job.refresh()
    assert job.get_status() == "finished" and job.return_value() == 3


def test_a_worker_takes_the_main_queue_before_the_low_one(settings, r):
    """A job of the low queue (a re-score's tail) waits while the main queue has one."""
    connection = connect_rq(settings)
    main, low = task_queues(settings, connection)
    tail = low.enqueue("builtins.len", "ab")
    first = main.enqueue("builtins.len", "abc")
    InProcessWorker([main, low], connection=connection).work(burst=True, max_jobs=1,
                                                             logging_level="WARNING")
    assert first.get_status() == "finished" and tail.get_status() == "queued"
