"""Serving benchmarks (DESIGN §7) against a real gunicorn and a real Redis.

- next-task latency p50/p99 at each pool size (1 client, next timed alone);
- next+label loops/s with 1 keep-alive client and with 8 client processes (one expert each)
  at the middle size, and items leased twice (must be 0);
- variants of the throughput runs, each labelled: ``appendfsync everysec``, gunicorn's
  ``gthread`` worker (threaded, keep-alive), and the floor app (``bench.floor``, sync
  workers as DESIGN §7 defines it) with both policies.

The product runs with the gunicorn worker arguments ``taskrank serve`` uses.

Items are stored directly through the queue layer; every request then goes over HTTP.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass

import redis

from taskrank.queue import keys as K
from taskrank.queue.settings import Settings
from taskrank.queue.tokens import create_token
from taskrank.scripts.bench.data import declare_experts, new_project, prefill
from taskrank.scripts.bench.lean_client import LeanClient
from taskrank.scripts.bench.loops import (
    BARRIER_TIMEOUT,
    LoopResult,
    interleaved_loops,
    next_label_loops,
    percentiles,
    run_together,
)
from taskrank.scripts.bench.machine import redis_cpu_seconds, settle
from taskrank.scripts.bench.processes import fresh_redis, gunicorn
from taskrank.scripts.stack import WEB_APP, WORKER_ARGS, Web

PID = "serve"
CLIENTS = 8
WARMUP_LOOPS = 100
MAX_LOOPS = 1_000_000


@dataclass
class Target:
    """Where the clients send requests: the server, a token, the project."""

    server: Web
    token: str
    pid: str = PID

    @property
    def url(self) -> str:
        return self.server.url


def run(sizes: list[int], seconds: float, latency_requests: int, fsync: str = "always",
        variants: bool = True) -> dict:
    """Every serving figure; ``sizes`` ascending, throughput measured at ``sizes[1]``.

    Each size is its own project, filled first; the latency loops then alternate between
    them, one loop each in turn, so a burst of load from other processes on the machine
    falls on every size alike and the sizes' tails compare the pool sizes, not the moments
    they were measured at.
    """
    leases: dict[str, list[tuple[str, str, str]]] = collections.defaultdict(list)
    pids = {size: f"{PID}-{_size_name(size)}" for size in sizes}
    middle = sizes[min(1, len(sizes) - 1)]
    result: dict = {"fsync": fsync, "seconds_per_run": seconds, "throughput_at": middle}
    with fresh_redis(fsync) as (settings, r):
        for size, pid in pids.items():
            new_project(r, pid)
            top_up(settings, r, size, pid)
        declare_experts(r, ["lat", "one"] + [f"c{i}" for i in range(CLIENTS)])
        token = create_token(r, "platform")
        result["redis_at"] = settle(r)
        with gunicorn(settings, extra_args=PRODUCT_ARGS) as server:
            result["latency_ms"] = latency(server, token, pids, latency_requests, leases)
            target = Target(server, token, pids[middle])
            result[fsync] = throughput(settings, r, target, middle, seconds, leases[target.pid])
            if variants:
                result["variants"] = run_variants(settings, r, token, target.pid, middle,
                                                  seconds, leases[target.pid])
            result["integrity"] = _summed(
                [integrity(r, Target(server, token, pid), leases[pid]) for pid in pids.values()])
    return result


PRODUCT_APP = WEB_APP
PRODUCT_ARGS = WORKER_ARGS  # as `taskrank serve` runs gunicorn
FLOOR_APP = "taskrank.scripts.bench.floor:create_app()"
SYNC = ()  # gunicorn's default sync worker: closes the connection after each answer
GTHREAD = ("--worker-class", "gthread", "--threads", "2")  # threaded, keep-alive
VARIANTS = {  # name: (app, extra gunicorn arguments, appendfsync)
    "everysec": (PRODUCT_APP, PRODUCT_ARGS, "everysec"),
    "gthread": (PRODUCT_APP, GTHREAD, "always"),
    "gthread_everysec": (PRODUCT_APP, GTHREAD, "everysec"),
    "floor": (FLOOR_APP, SYNC, "always"),
    "floor_everysec": (FLOOR_APP, SYNC, "everysec"),
}


def run_variants(settings: Settings, r: redis.Redis, token: str, pid: str, size: int,
                 seconds: float, leases: list) -> dict:
    """The same throughput runs with another fsync policy, worker class or the floor app."""
    out = {}
    shipped = r.config_get("appendfsync")["appendfsync"]
    try:
        for name, (app, args, fsync) in VARIANTS.items():
            r.config_set("appendfsync", fsync)
            with gunicorn(settings, app=app, extra_args=args) as server:
                out[name] = {"app": app, "gunicorn_args": list(args), "appendfsync": fsync,
                             **throughput(settings, r, Target(server, token, pid), size, seconds,
                                          leases)}
    finally:
        r.config_set("appendfsync", shipped)
    return out


def _size_name(size: int) -> str:
    return f"{size // 1_000_000}M" if size >= 1_000_000 else f"{size // 1000}k"


def top_up(settings: Settings, r: redis.Redis, size: int, pid: str) -> int:
    """Ingest fresh items until ``size`` are pending (labeled ones left the pool)."""
    pending = _pending(r, pid)
    known = r.scard(K.items_key(pid))
    if pending < size:
        prefill(settings, pid, known, known + size - pending)
    return _pending(r, pid)


def _pending(r: redis.Redis, pid: str) -> int:
    return int(r.hget(K.counters_key(pid), "n:pending") or 0)


def latency(server: Web, token: str, pids: dict[int, str], requests: int,
            leases: dict[str, list]) -> dict:
    """p50/p99 of next-task alone per pool size: one client, each lease labeled before the
    next request, the sizes taken in turn."""
    warmup = interleaved_loops(server.url, token, list(pids.values()), "lat", WARMUP_LOOPS)
    loops = interleaved_loops(server.url, token, list(pids.values()), "lat", requests)
    out = {}
    for size, pid in pids.items():
        leases[pid] += warmup[pid].leases + loops[pid].leases
        out[_size_name(size)] = {**percentiles(loops[pid].next_ms),
                                 "errors": loops[pid].errors[:3], "empty": loops[pid].empty}
    return out


def throughput(settings: Settings, r: redis.Redis, target: Target, size: int, seconds: float,
               leases: list, experts: tuple[str, str] = ("one", "c")) -> dict:
    """next+label loops/s of 1 client, then of ``CLIENTS`` client processes together."""
    top_up(settings, r, size, target.pid)
    one = metered(r, target, lambda: [next_label_loops(
        target.url, target.token, target.pid, experts[0], MAX_LOOPS, seconds)])
    top_up(settings, r, size, target.pid)
    many = metered(r, target, lambda: concurrent_loops(
        target, [f"{experts[1]}{i}" for i in range(CLIENTS)], seconds))
    for run in (one, many):
        leases += [lease for loops in run.pop("results") for lease in loops.leases]
    speedup = many["loops_per_s"] / one["loops_per_s"] if one["loops_per_s"] else None
    return {"one_client": one, "clients": CLIENTS, "many_clients": many,
            "speedup": round(speedup, 3) if speedup else None}


def metered(r: redis.Redis, target: Target, run: Callable[[], list[LoopResult]]) -> dict:
    """Run client loops; their loops/s, next-task latency and CPU ms per loop by process."""
    cpu = (target.server.cpu_seconds(), redis_cpu_seconds(r))
    results = run()
    server_cpu, redis_cpu = target.server.cpu_seconds() - cpu[0], redis_cpu_seconds(r) - cpu[1]
    loops = sum(x.loops for x in results)
    per_loop = 1000 / max(1, loops)
    return {"loops_per_s": round(loops / max(x.seconds for x in results), 1), "loops": loops,
            "next_ms": percentiles([ms for x in results for ms in x.next_ms]),
            "cpu_ms_per_loop": {"server": round(server_cpu * per_loop, 3),
                                "redis": round(redis_cpu * per_loop, 3),
                                "clients": round(sum(x.cpu_seconds for x in results) * per_loop,
                                                 3)},
            "errors": [e for x in results for e in x.errors][:3],
            "empty": sum(x.empty for x in results), "results": results}


def concurrent_loops(target: Target, experts: list[str], seconds: float) -> list[LoopResult]:
    """One spawned process per expert, all starting at the same instant."""
    return run_together(next_label_loops, [(target.url, target.token, target.pid, eid,
                                            MAX_LOOPS, seconds) for eid in experts],
                        timeout=BARRIER_TIMEOUT + seconds + 120)


def integrity(r: redis.Redis, target: Target, leases: list[tuple[str, str, str]]) -> dict:
    """Items leased, or labeled, more often than they want labels (redundancy 1, or 2 for
    an item a spot check sent back: any more is a double lease), from the task ids the
    clients got and from the label export."""
    by_item = collections.Counter(item for _, item, _ in leases)
    exported = export_labels(target)
    counted = collections.Counter(label["item_id"] for label in exported if label["counted"])
    repeated = sorted({item for item, n in [*by_item.items(), *counted.items()] if n > 1})
    pipe = r.pipeline(transaction=False)
    for item in repeated:
        pipe.hget(K.item_key(target.pid, item), "want")
    want = dict(zip(repeated, (int(n or 1) for n in pipe.execute()), strict=True))
    return {"leases_seen": len(leases), "items_leased_twice": sum(
                1 for item, n in by_item.items() if n > want.get(item, 1)),
            "distinct_tasks": len({tid for tid, _, _ in leases}),
            "labels_exported": len(exported), "counted_labels": sum(counted.values()),
            "items_labeled_twice": sum(1 for item, n in counted.items() if n > want.get(item, 1)),
            "spot_checked": sum(1 for n in want.values() if n > 1)}


def _summed(reports: list[dict]) -> dict:
    return {name: sum(report[name] for report in reports) for name in reports[0]}


def export_labels(target: Target, page: int = 10_000, max_pages: int = 1000) -> list[dict]:
    """Every label of the project through ``GET /v1/projects/{pid}/labels`` (bounded)."""
    client = LeanClient(target.url, target.token)
    labels, cursor = [], None
    for _ in range(max_pages):
        query = f"?limit={page}" + (f"&cursor={cursor}" if cursor else "")
        status, body = client.request("GET", f"/v1/projects/{target.pid}/labels{query}")
        if status != 200:
            raise RuntimeError(f"label export answered {status}: {str(body)[:300]}")
        labels += body["labels"]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    client.close()
    return labels
