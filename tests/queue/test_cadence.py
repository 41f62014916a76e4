"""The retrain floor (queue/cadence.py): a retrain asked for within
``retrain.min_interval_seconds`` of the previous start waits in RQ's scheduled registry,
labels meanwhile merge into it, a worker's scheduler runs it, the upkeep rescues it."""

from __future__ import annotations

import datetime
import json

import pytest
from rq.registry import ScheduledJobRegistry

from taskrank.learning.priority import Strategy
from taskrank.queue import keys as K
from taskrank.queue import tasks
from taskrank.queue.after_label import after_label, drain_followups, maybe_retrain
from taskrank.queue.cadence import late_retrain, retrain_started, start_time
from taskrank.queue.experts import load_expert
from taskrank.queue.models import model_info
from taskrank.queue.projects import get_project, update_project
from taskrank.queue.retrain import enqueue_retrain
from taskrank.queue.worker import task_queue
from tests.pools import NO_CHECKS, features_project
from tests.scripts.helpers import rq_worker
from tests.waits import wait_for


def _project(r, run_jobs, floor: float) -> tuple[dict, dict]:
    """features_project 'p' (a retrain every 5 labels) with the floor ``floor``; the
    project and each item's true class."""
    _, truth = features_project(r, n=200, every=5, min_labels=5)
    update_project(r, "p", {"strategy": {"retrain": {
        "every_labels": 5, "min_labels": 5, "min_interval_seconds": floor}, **NO_CHECKS}})
    run_jobs()  # the ingest's pool map
    return get_project(r, "p"), truth


def _label(r, settings, truth: dict, count: int) -> None:
    """``count`` true labels through the label's own follow-up (which asks for retrains)."""
    project = get_project(r, "p")
    for _ in range(count):
        task = tasks.claim(r, project, load_expert(r, "e"), 8)
        status, answer = tasks.submit_label(r, project, task["id"],
                                            "ab"[truth[task["item_id"]]], 1.0)
        assert status == 201
        after_label(r, project, answer, settings)


def _scheduled(settings) -> ScheduledJobRegistry:
    return ScheduledJobRegistry(queue=task_queue(settings))


def test_the_floor_is_in_the_default_strategy_and_validated():
    """min_interval_seconds has a default and refuses negative or absurd values."""
    assert Strategy().retrain.min_interval_seconds >= 0
    for bad in (-1, 86_401, "2"):
        with pytest.raises(ValueError, match="min_interval_seconds"):
            Strategy.from_dict({"retrain": {"min_interval_seconds": bad}})


def test_a_project_stored_before_the_floor_gets_the_default(r, run_jobs):
    """A stored strategy whose retrain section lacks the field reads it as the default."""
    _project(r, run_jobs, 2.0)
    stored = get_project(r, "p")["strategy"]
    del stored["retrain"]["min_interval_seconds"]
    r.hset(K.project_key("p"), "strategy", json.dumps(stored))
    assert get_project(r, "p")["strategy"]["retrain"]["min_interval_seconds"] == \
        Strategy().retrain.min_interval_seconds


def test_start_time_is_the_first_whole_second_past_the_floor(r):
    """None (at once) without a floor, before any retrain or once the floor passed; else
    the whole second RQ's scheduler will not run it before."""
    assert start_time(r, "p", 5.0, now=100.0) is None
    retrain_started(r, "p", now=100.2)
    assert start_time(r, "p", 0.0, now=100.3) is None
    assert start_time(r, "p", 5.0, now=100.3) == datetime.datetime.fromtimestamp(
        106, datetime.UTC)
    assert start_time(r, "p", 5.0, now=105.3) is None


def test_labels_within_the_floor_merge_into_one_waiting_retrain(r, settings, run_jobs):
    """After a retrain started, the labels that ask for the next one within the floor get
    one scheduled retrain, at the floor, and nothing in the queue."""
    project, _ = _project(r, run_jobs, 30.0)
    retrain_started(r, "p")
    r.zadd(K.labeled_key("p"), {f"i{i}": i for i in range(5)})  # min_labels is met
    first = maybe_retrain(r, project, 5, settings)
    second = maybe_retrain(r, project, 5, settings)
    assert first == second and _scheduled(settings).get_job_ids() == [first]
    assert task_queue(settings).count == 0
    due = _scheduled(settings).get_scheduled_time(first).timestamp()
    assert due >= float(r.hget(K.counters_key("p"), "retrain_at")) + 30


def test_asking_for_a_retrain_now_moves_the_waiting_one_to_the_queue(r, settings, run_jobs):
    """POST /retrain bypasses the floor: the scheduled retrain is queued now, not doubled."""
    _project(r, run_jobs, 30.0)
    retrain_started(r, "p")
    waiting = enqueue_retrain(r, settings, "p", min_interval=30.0)
    assert enqueue_retrain(r, settings, "p") == waiting
    assert task_queue(settings).job_ids == [waiting]
    assert _scheduled(settings).get_job_ids() == []


def test_the_upkeep_queues_a_late_retrain_and_replaces_a_lost_one(r, settings, run_jobs):
    """A scheduled retrain LATE_SECONDS past its time (no scheduler ran it) is queued by
    the upkeep; a pending mark naming a job that is gone is cleared and a new retrain
    queued, so the labels that asked for it still reach a model."""
    _project(r, run_jobs, 30.0)
    retrain_started(r, "p", now=1000.0)  # long ago: the floor has passed
    queue = task_queue(settings)
    waiting = enqueue_retrain(r, settings, "p", min_interval=30.0)
    assert queue.job_ids == [waiting]  # past the floor: queued at once
    queue.empty()  # the job is lost; its mark stays
    assert late_retrain(r, queue, "p") == "lost" and not r.exists(K.retrain_pending_key("p"))

    retrain_started(r, "p")
    late = enqueue_retrain(r, settings, "p", min_interval=30.0)
    r.zadd(_scheduled(settings).key, {late: 1000})  # its time came long ago
    assert late_retrain(r, queue, "p") == "late" and queue.job_ids == [late]
    assert late_retrain(r, queue, "p") is None  # queued: nothing more to do

    queue.empty()
    assert drain_followups(r, settings) == 0
    assert r.get(K.retrain_pending_key("p")) not in (None, late)
    assert _scheduled(settings).get_job_ids() == [r.get(K.retrain_pending_key("p"))]


def test_a_worker_runs_the_waiting_retrain_once_the_floor_passed(r, settings, run_jobs):
    """With a real ``taskrank worker`` (its RQ scheduler on): the second retrain, asked for
    right after the first, starts no sooner than the floor after the first started."""
    _, truth = _project(r, run_jobs, 2.0)
    with rq_worker(settings, r):
        _label(r, settings, truth, 5)
        wait_for(lambda: model_info(r, "p")["version"] == 1, 60, "the first model")
        first = float(r.hget(K.counters_key("p"), "retrain_at"))
        _label(r, settings, truth, 5)
        assert _scheduled(settings).get_job_ids() == [r.get(K.retrain_pending_key("p"))]
        wait_for(lambda: model_info(r, "p")["version"] == 2, 60, "the second model")
    assert float(r.hget(K.counters_key("p"), "retrain_at")) >= first + 2.0

