"""Serving as shipped (DESIGN §7): 8 clients against ``taskrank serve``'s stack with its RQ
worker retraining and re-scoring as the labels arrive, beside the same run with no worker.

One embedded Redis (``appendfsync always``) and one gunicorn (``taskrank serve``'s worker
arguments and count) serve a 100k pending pool, with a trained model, through the whole
run.  The two arms alternate, ``rounds`` times each (the first arm alternates too), so
load from other processes on the machine falls on both alike:

- ``worker``: ``TASKRANK_RQ_WORKERS`` (1) ``taskrank worker`` processes started as
  ``taskrank serve`` starts them; the project's defaults ask for a retrain every 10 labels,
  so under 8 clients the worker retrains, re-ranks and evaluates back to back;
- ``no_worker``: no worker runs; the retrain that labels ask for waits in the queue.

The pool is topped up to its size before each arm; the clients are those of ``serve``
(lean keep-alive clients in 8 processes, one expert each, next+label loops as fast as the
server answers: a label rate of hundreds per second, far above any human team's, which is
what makes the worker's load the largest it can be).
"""

from __future__ import annotations

import subprocess
import time

import redis

from taskrank.queue import keys as K
from taskrank.queue.projects import get_project
from taskrank.queue.tokens import create_token
from taskrank.scripts.bench.data import declare_experts, new_project
from taskrank.scripts.bench.loops import percentiles
from taskrank.scripts.bench.machine import redis_cpu_seconds, settle, workers_cpu_seconds
from taskrank.scripts.bench.processes import fresh_redis
from taskrank.scripts.bench.rescore import train_model
from taskrank.scripts.bench.serve import CLIENTS, Target, concurrent_loops, top_up
from taskrank.scripts.stack import WORKER_ARGS, Stack, clean_environ

PID = "rescore"  # train_model labels this project
ARMS = ("worker", "no_worker")


def run(pool: int, seconds: float, rounds: int, fsync: str = "always",
        worker_nice: int | None = None, floor: float | None = None) -> dict:
    """loops/s of ``CLIENTS`` clients with and without the RQ worker, interleaved;
    ``worker_nice`` and ``floor`` (``retrain.min_interval_seconds``) replace the shipped
    defaults, to measure what they buy."""
    with fresh_redis(fsync) as (settings, r):
        if worker_nice is not None:
            settings = settings.replace(worker_nice=worker_nice)
        new_project(r, PID, **({} if floor is None else {
            "strategy": {"retrain": {"min_interval_seconds": floor}}}))
        top_up(settings, r, pool, PID)
        declare_experts(r, [f"c{i}" for i in range(CLIENTS)])
        token = create_token(r, "platform")
        with Stack(settings, clean_environ(), stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL) as stack:
            workers = _start_workers(stack)
            first = train_model(settings, r)
            stack.stop_children(workers)
            web = stack.start_web(port=0, args=WORKER_ARGS).wait_ready()
            target = Target(web, token, PID)
            arms: dict[str, list[dict]] = {arm: [] for arm in ARMS}
            for index in range(rounds):
                for arm in ARMS if index % 2 == 0 else reversed(ARMS):
                    top_up(settings, r, pool, PID)
                    settle(r)
                    arms[arm].append(_arm(stack, r, target, seconds, arm == "worker"))
        floor = get_project(r, PID)["strategy"]["retrain"]["min_interval_seconds"]
        labels = int(r.hget(K.counters_key(PID), "counted"))
    summary = {arm: percentiles([one["loops_per_s"] for one in runs])
               for arm, runs in arms.items()}
    ratio = summary["worker"]["mean"] / summary["no_worker"]["mean"]
    return {"pool": pool, "clients": CLIENTS, "seconds_per_run": seconds, "rounds": rounds,
            "rq_workers": settings.rq_workers, "worker_nice": settings.worker_nice,
            "min_interval_seconds": floor, "labels_at_end": labels, "first_model": first,
            "runs": arms, "loops_per_s": summary, "ratio": round(ratio, 3)}


def _start_workers(stack: Stack) -> list:
    workers = stack.start_workers(TASKRANK_LOG_LEVEL="WARNING")
    stack.wait_workers(len(workers))
    return workers


def _arm(stack: Stack, r: redis.Redis, target: Target, seconds: float,
         with_worker: bool) -> dict:
    """One run of the clients, with or without the worker; what the worker did meanwhile."""
    workers = _start_workers(stack) if with_worker else []
    before = _model_state(r)
    cpu = (target.server.cpu_seconds(), redis_cpu_seconds(r), workers_cpu_seconds(workers))
    results = concurrent_loops(target, [f"c{i}" for i in range(CLIENTS)], seconds)
    used = (target.server.cpu_seconds() - cpu[0], redis_cpu_seconds(r) - cpu[1],
            workers_cpu_seconds(workers) - cpu[2])
    after = _model_state(r)
    stack.stop_children(workers)
    loops = sum(x.loops for x in results)
    wall = max(x.seconds for x in results)
    return {"loops_per_s": round(loops / wall, 1), "loops": loops,
            "next_ms": percentiles([ms for x in results for ms in x.next_ms]),
            "errors": [e for x in results for e in x.errors][:3],
            "retrains": after["version"] - before["version"],
            "cpu_seconds": {"server": round(used[0], 2), "redis": round(used[1], 2),
                            "worker": round(used[2], 2), "wall": round(wall, 2)},
            "at": time.strftime("%H:%M:%S")}


def _model_state(r: redis.Redis) -> dict:
    return {"version": int(r.hget(K.model_meta_key(PID), "version") or 0)}

