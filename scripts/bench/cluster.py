"""Serving on a Redis Cluster beside the single Redis, in the same run (DESIGN §7: within
0.8 x the single Redis; ``taskrank bench serve --cluster``).

Two data stores side by side, each filled alike with one project of ``size`` pending items
and served by its own ``gunicorn -w 2`` (the product's arguments): the embedded single
Redis, on loopback TCP here as the cluster's nodes are (the product's default unix socket
is faster), and a local Redis Cluster of 3 masters (``taskrank.queue.local_cluster``, AOF
with the same fsync; RQ's queue on an embedded Redis of its own).  The measurements alternate
between the two, a round each in turn, so that load from elsewhere on the machine falls on
both alike:

- next-task latency p50/p99 (1 client, each lease labeled before the next request);
- next+label loops/s of 1 keep-alive client, and of 8 client processes (one expert each);
- on the cluster, items leased or labeled twice (must be 0).

A project lives in one slot, so all its requests go to one master: this measures what the
cluster costs one project's serving (the cluster client, the declared keys), not a project
spread over machines (it never is).  Every node runs on this machine.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from taskrank.queue.connection import DataClient, masters
from taskrank.queue.settings import Settings
from taskrank.queue.tokens import create_token
from taskrank.scripts.bench.data import declare_experts, new_project
from taskrank.scripts.bench.loops import interleaved_loops, next_label_loops, percentiles
from taskrank.scripts.bench.machine import settle
from taskrank.scripts.bench.processes import fresh_cluster, fresh_redis, gunicorn
from taskrank.scripts.bench.serve import (
    CLIENTS,
    MAX_LOOPS,
    PRODUCT_ARGS,
    WARMUP_LOOPS,
    Target,
    concurrent_loops,
    integrity,
    metered,
    top_up,
)

PID = "serve-cluster"
ROUNDS = 2  # each measurement: single, cluster, single, cluster


@dataclass
class Served:
    """One data store behind its gunicorn, and what the runs on it saw."""

    settings: Settings
    r: DataClient
    target: Target
    next_ms: list[float] = field(default_factory=list)
    runs: dict[str, list[dict]] = field(default_factory=lambda: {"one": [], "many": []})
    leases: list[tuple[str, str, str]] = field(default_factory=list)


def run(size: int, seconds: float, latency_requests: int, fsync: str = "always") -> dict:
    """Latency and throughput on each store, alternated; their figures and ratios."""
    with contextlib.ExitStack() as opened:
        served = {"single": opened.enter_context(_serving(fresh_redis(fsync, tcp=True), size)),
                  "cluster": opened.enter_context(_serving(fresh_cluster(fsync), size))}
        for store in served.values():  # not timed
            store.leases += interleaved_loops(store.target.url, store.target.token, [PID],
                                              "lat", WARMUP_LOOPS)[PID].leases
        for _ in range(ROUNDS):
            for store in served.values():
                loops = interleaved_loops(store.target.url, store.target.token, [PID], "lat",
                                          latency_requests // ROUNDS)[PID]
                store.next_ms += loops.next_ms
                store.leases += loops.leases
        for kind in ("one", "many"):
            for _ in range(ROUNDS):
                for store in served.values():
                    _throughput(store, kind, size, seconds)
        result = {name: _figures(store) for name, store in served.items()}
        result["cluster"]["integrity"] = integrity(served["cluster"].r,
                                                   served["cluster"].target,
                                                   served["cluster"].leases)
    return {"what": "the same project served from a single Redis (loopback TCP) and from a "
                    "local Redis Cluster of 3 masters, measured in alternation", "size": size,
            "fsync": fsync, "rounds": ROUNDS, "seconds_per_run": seconds, **result,
            "ratio": {kind: _ratio(result["cluster"][kind]["loops_per_s"],
                                   result["single"][kind]["loops_per_s"])
                      for kind in ("one_client", "many_clients")}}


@contextlib.contextmanager
def _serving(store: contextlib.AbstractContextManager, size: int) -> Iterator[Served]:
    """The store started, filled with one project of ``size`` items and served."""
    with store as (settings, r):
        new_project(r, PID)
        top_up(settings, r, size, PID)
        declare_experts(r, ["lat", "one"] + [f"c{i}" for i in range(CLIENTS)])
        token = create_token(r, "platform")
        for server in masters(r):  # no append-only-file rewrite left from the fill
            settle(server)
        with gunicorn(settings, extra_args=PRODUCT_ARGS) as web:
            yield Served(settings, r, Target(web, token, PID))


def _throughput(store: Served, kind: str, size: int, seconds: float) -> None:
    """One run of next+label loops: 1 client (``one``) or ``CLIENTS`` processes (``many``)."""
    top_up(store.settings, store.r, size, PID)
    target = store.target
    if kind == "one":
        run = metered(store.r, target, lambda: [next_label_loops(
            target.url, target.token, PID, "one", MAX_LOOPS, seconds)])
    else:
        run = metered(store.r, target, lambda: concurrent_loops(
            target, [f"c{i}" for i in range(CLIENTS)], seconds))
    store.leases += [lease for loops in run.pop("results") for lease in loops.leases]
    store.runs[kind].append(run)


def _figures(store: Served) -> dict:
    """The store's next-task latency, and its loops/s: the mean of its rounds (each given)."""
    figures: dict = {"next_ms": percentiles(store.next_ms)}
    for kind, name in (("one", "one_client"), ("many", "many_clients")):
        runs = store.runs[kind]
        figures[name] = {"loops_per_s": round(sum(run["loops_per_s"] for run in runs)
                                              / len(runs), 1), "rounds": runs}
    return figures


def _ratio(value: float, base: float) -> float | None:
    return round(value / base, 3) if base else None
