"""Full re-score of the pending pool over RQ workers (DESIGN §7: 1M items, 2 workers, <= 20 s).

Timed from ``enqueue_rescore`` to the run's last chunk done, with 1 and then 2
``taskrank worker`` processes that were started (and registered) before the clock starts.
With ``with_model`` the project first gets ~60 labels and a trained ranking model (through
the retrain job), so the re-score runs the model's committee as it does in production.
CPU seconds of Redis and of the workers (with their work horses) are recorded beside the
wall time: on a shared machine they say what the work itself costs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import redis
from rq.job import Job
from rq.registry import FailedJobRegistry

from taskrank.queue import keys as K
from taskrank.queue.aggregate import aggregate_item
from taskrank.queue.connection import connect_rq
from taskrank.queue.experts import load_expert
from taskrank.queue.projects import get_project
from taskrank.queue.rescore import enqueue_rescore, rescore_progress
from taskrank.queue.retrain import enqueue_retrain
from taskrank.queue.settings import Settings
from taskrank.queue.tasks import claim, submit_label
from taskrank.queue.worker import task_queues
from taskrank.scripts.bench.data import declare_experts, new_project, prefill
from taskrank.scripts.bench.items import LABELS, MODELS
from taskrank.scripts.bench.machine import redis_cpu_seconds, workers_cpu_seconds
from taskrank.scripts.bench.processes import fresh_redis, rq_workers

PID = "rescore"
TRAIN_LABELS = 60
RUN_TIMEOUT = 1800.0
POLL_TIMEOUT = 120.0  # generous: a shared machine can stall Redis


def run(n: int, worker_counts: tuple[int, ...] = (1, 2), chunk: int | None = None,
        with_model: bool = True, fsync: str = "always") -> dict:
    """Seconds to re-score ``n`` pending items with each number of workers."""
    out: dict = {"items": n, "runs": {}}
    with fresh_redis(fsync) as (settings, r):
        settings = settings.replace(rescore_chunk=chunk or settings.rescore_chunk)
        out["chunk"] = settings.rescore_chunk
        new_project(r, PID)
        prefill(settings, PID, 0, n)
        if with_model:
            with rq_workers(settings, 1):
                out["model"] = train_model(settings, r)
        for count in worker_counts:
            with rq_workers(settings, count) as workers:
                out["runs"][f"{count}_workers"] = timed_rescore(settings, r, workers)
    return out


def _binary(settings: Settings) -> redis.Redis:
    """A client on RQ's Redis."""
    return connect_rq(settings, socket_timeout=POLL_TIMEOUT)


def timed_rescore(settings: Settings, r: redis.Redis, workers: list) -> dict:
    """Enqueue a full re-score and wait for its last chunk; seconds, items/s, CPU seconds."""
    cpu = (redis_cpu_seconds(r), workers_cpu_seconds(workers))
    watch_slow_calls(r)
    start = time.perf_counter()
    run_id = enqueue_rescore(r, PID, reason="benchmark", settings=settings)
    enqueued = time.perf_counter() - start
    progress, busy = wait_rescore(settings, r, run_id)
    seconds = time.perf_counter() - start
    used = {"redis": redis_cpu_seconds(r) - cpu[0],
            "workers": workers_cpu_seconds(workers) - cpu[1]}
    return {"seconds": round(seconds, 3), "enqueue_seconds": round(enqueued, 3),
            "items": progress["items"], "chunks": progress["chunks"],
            "items_per_s": round(progress["items"] / seconds, 1),
            "cpu_seconds": {name: round(value, 2) for name, value in used.items()},
            "cpu_us_per_item": {name: round(value / max(progress["items"], 1) * 1e6, 1)
                                for name, value in used.items()},
            "slow_calls": slow_calls(r), "busy_answers_to_poller": busy}


SLOW_CALL_US = 10_000


def watch_slow_calls(r: redis.Redis) -> None:
    """From now on, Redis logs every call that holds it for more than 10 ms."""
    r.config_set("slowlog-log-slower-than", SLOW_CALL_US)
    r.config_set("slowlog-max-len", 1024)
    r.slowlog_reset()


def slow_calls(r: redis.Redis) -> dict:
    """The longest single Redis calls since ``watch_slow_calls`` (SLOWLOG, over 10 ms)."""
    entries = r.slowlog_get(1024)
    longest = sorted(entries, key=lambda entry: entry["duration"], reverse=True)[:5]
    return {"over_10ms": len(entries),
            "longest": [{"ms": round(entry["duration"] / 1000, 1),
                         "command": _command_name(entry["command"])} for entry in longest]}


def _command_name(command: bytes | str) -> str:
    text = command.decode(errors="replace") if isinstance(command, bytes) else str(command)
    return " ".join(text.split()[:2])[:80]


def poll(check: Callable[[], object], what: str, timeout: float = RUN_TIMEOUT,
         interval: float = 0.05) -> tuple[object, int]:
    """Call ``check`` until it returns a truthy value; (value, BUSY answers seen).

    Redis answers BUSY to everyone while a Lua script has run for over 5 s
    (``lua-time-limit``); the poller waits it out and counts it.
    """
    deadline, busy = time.monotonic() + timeout, 0
    while time.monotonic() < deadline:
        try:
            value = check()
        except redis.ResponseError as error:
            if not str(error).startswith("BUSY"):
                raise
            busy, value = busy + 1, None
        if value:
            return value, busy
        time.sleep(interval)
    raise RuntimeError(f"{what} not done within {timeout} s")


def wait_rescore(settings: Settings, r: redis.Redis, run_id: str,
                 state: str = "finished") -> tuple[dict, int]:
    """The run's progress once it is ``finished`` (or ``reranked``), and how often Redis
    answered BUSY meanwhile."""
    registries = [FailedJobRegistry(queue=queue) for queue in task_queues(
        settings, _binary(settings))]

    def reached() -> dict | None:
        failed = [job for registry in registries for job in registry.get_job_ids()]
        if failed:  # out of retries: the run can never finish
            raise RuntimeError(f"re-score run {run_id}: jobs failed: {failed[:3]}")
        progress = rescore_progress(r, PID, run_id)
        return progress if progress and progress[state] else None

    return poll(reached, f"re-score run {run_id} {state}", interval=0.01)


def train_model(settings: Settings, r: redis.Redis) -> dict:
    """Label ``TRAIN_LABELS`` items, run the retrain job and the re-score it triggers."""
    label_some(r, TRAIN_LABELS)
    start = time.perf_counter()
    result = wait_job(settings, enqueue_retrain(r, settings, PID))
    trained = time.perf_counter() - start
    if result.get("rescore_job_id"):
        wait_rescore(settings, r, result["rescore_job_id"])
    return {"version": result.get("version"), "n_labels": result.get("n_labels"),
            "retrain_seconds": round(trained, 3),
            "retrain_plus_rescore_seconds": round(time.perf_counter() - start, 3)}


def label_some(r: redis.Redis, count: int) -> None:
    """Lease and label ``count`` items through the queue layer (label = model-a's argmax)."""
    declare_experts(r, ["trainer"], capacity=count)
    project, expert = get_project(r, PID), load_expert(r, "trainer")
    for _ in range(count):
        task = claim(r, project, expert, Settings().claim_depth)
        if task is None:
            raise RuntimeError(f"no item left to label in project {PID}")
        row = json.loads(r.hget(K.item_key(PID, task["item_id"]), "p"))[MODELS[0]]
        submit_label(r, project, task["id"], LABELS[row.index(max(row))], 1.0)
        aggregate_item(r, project, task["item_id"])


def wait_job(settings: Settings, job_id: str) -> dict:
    """Poll an RQ job until it finishes; its return value."""
    connection = _binary(settings)

    def finished() -> dict | None:
        job = Job.fetch(job_id, connection=connection)
        status = str(getattr(job.get_status(), "value", job.get_status()))
        if status in ("failed", "stopped", "canceled"):
            raise RuntimeError(f"job {job_id} {status}")
        return (job.return_value() or {"done": True}) if status == "finished" else None

    return poll(finished, f"job {job_id}", interval=0.02)[0]
