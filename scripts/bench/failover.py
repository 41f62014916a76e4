"""What "acknowledged means replicated" costs, and what a master's failover looks like to
clients (``taskrank bench failover``).

A local Redis Cluster of 3 masters with a replica each (AOF, ``appendfsync always``, node
timeout ``NODE_TIMEOUT_MS``), RQ's queue on an embedded Redis, one project of ``size``
pending items on each of two masters, and two ``gunicorn -w 2`` (the product's arguments)
on that cluster: one waiting for a replica before it acknowledges a write
(``TASKRANK_REDIS_WAIT_REPLICAS`` auto, the default), one not (``0``).

1. ``wait``: next+label loops, ``ROUNDS`` times: one keep-alive client per server, one loop
   on each in turn for twice ``seconds`` (so load from elsewhere falls on both alike):
   loops/s (over the time its loops took) and the latency of the label (which waits) and
   of next (which does not); then 8 client processes (one expert each) for ``seconds`` on
   each server in turn: loops/s.
   Also the wait alone, without HTTP: a small write to the project's master, with and
   without the fence and WAIT after it (``redis_level``, alternated).
2. ``failover``: on the waiting server, one client loops next+label on the project of the
   master about to die, one on the other project; the master is SIGKILLed (by the pid it
   reports: this process started it).  Figures: seconds from the kill to the replica's
   promotion, the first and last 503 and the first success after the kill, the longest
   request, answers other than 2xx and 503 (must be 0), and the other project's failures
   (must be 0).  Clients poll every 50 ms after a 503 (a platform would honour
   ``Retry-After: 1``) so that the window is seen to within that.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import redis
from redis.cluster import RedisCluster

from taskrank.queue import keys as K
from taskrank.queue.clock import utc_day
from taskrank.queue.replication import replicated
from taskrank.queue.settings import Settings
from taskrank.queue.tokens import create_token
from taskrank.scripts.bench.data import declare_experts, new_project
from taskrank.scripts.bench.lean_client import LeanClient
from taskrank.scripts.bench.loops import percentiles
from taskrank.scripts.bench.processes import fresh_cluster, gunicorn
from taskrank.scripts.bench.serve import CLIENTS, PRODUCT_ARGS, Target, concurrent_loops, top_up
from taskrank.scripts.stack import Web

NODE_TIMEOUT_MS = 1000  # how soon the other masters mark a silent one failed
ROUNDS = 3
WARMUP_LOOPS = 100
FAILOVER_WATCH = 20.0  # seconds the clients run after the kill
EXPERT_CAPACITY = 10_000  # leases a 503 left unlabeled must not stop a client
MANY = [f"c{i}" for i in range(CLIENTS)]  # the concurrent clients' experts
REDIS_LEVEL_WRITES = 2000


@dataclass
class Timed:
    """What one client saw: each answer as (seconds since the start, status, duration)."""

    answers: list[tuple[float, int, float]] = field(default_factory=list)
    seconds: float = 0.0  # the time its loops took
    next_ms: list[float] = field(default_factory=list)
    label_ms: list[float] = field(default_factory=list)
    loops: int = 0
    lost: list[str] = field(default_factory=list)  # requests whose connection broke


def run(size: int, seconds: float) -> dict:
    """The two measurements on one cluster; their figures."""
    with fresh_cluster("always", replicas=1, node_timeout_ms=NODE_TIMEOUT_MS) as (settings,
                                                                                  r):
        victim_pid, other_pid = _projects_on_two_masters(r)
        for pid in (victim_pid, other_pid):
            new_project(r, pid)
            top_up(settings, r, size, pid)
        other_expert = _expert_off(r, r.get_node_from_key(K.project_key(victim_pid)).name)
        declare_experts(r, ["w", "v", other_expert, *MANY], capacity=EXPERT_CAPACITY)
        token = create_token(r, "platform")
        with _servers(settings) as servers:
            targets = {name: Target(web, token, victim_pid) for name, web in servers.items()}
            fenced = _fences(r, victim_pid)
            wait = _wait_cost(settings, r, size, targets, seconds)
            wait["fences_written"] = _fences(r, victim_pid) - fenced  # the waits that ran
            wait["redis_level"] = _redis_level(r, settings, victim_pid)
            failover = _failover(r, servers["on"].url, token, (victim_pid, "v"),
                                 (other_pid, other_expert))
    return {"what": "a Redis Cluster of 3 masters with a replica each: labels waiting for a "
                    "replica (WAIT) or not, alternated; then a master SIGKILLed under load",
            "size": size, "fsync": "always", "node_timeout_ms": NODE_TIMEOUT_MS,
            "rounds": ROUNDS, "seconds_per_run": seconds, "wait": wait, "failover": failover}


def _projects_on_two_masters(r: RedisCluster) -> tuple[str, str]:
    """Two project ids whose slots are on different masters."""
    first = "failover-0"
    master = r.get_node_from_key(K.project_key(first)).name
    other = next(pid for pid in (f"failover-{n}" for n in range(1, 100))
                 if r.get_node_from_key(K.project_key(pid)).name != master)
    return first, other


def _expert_off(r: RedisCluster, master: str) -> str:
    """An expert id whose global keys (the expert, today's hours, which a label adds to)
    are not on ``master``: a label of an expert whose hours live on a failing master waits
    for the failover like that master's projects (README, *When a part dies*)."""
    day = utc_day(time.time())
    return next(eid for eid in (f"o{n}" for n in range(100))
                if master not in (r.get_node_from_key(K.expert_key(eid)).name,
                                  r.get_node_from_key(K.expert_day_key(eid, day)).name))


@contextlib.contextmanager
def _servers(settings: Settings) -> Iterator[dict[str, Web]]:
    """{"on": ..., "off": ...}: gunicorn waiting for a replica per write, and not."""
    with gunicorn(settings, extra_args=PRODUCT_ARGS) as on, \
            gunicorn(settings.replace(redis_wait_replicas=0), extra_args=PRODUCT_ARGS) as off:
        yield {"on": on, "off": off}


def _wait_cost(settings: Settings, r: RedisCluster, size: int, targets: dict[str, Target],
               seconds: float) -> dict:
    """One client's loops/s and latencies, alternating servers loop by loop, and
    ``len(MANY)`` clients' loops/s, alternating round by round; the ratios on/off."""
    one = {name: Timed() for name in targets}
    many: dict[str, list[float]] = {name: [] for name in targets}
    for target in targets.values():  # not timed: connections, caches, scripts loaded
        _loop(_Loop(target, "w"), Timed(), WARMUP_LOOPS)
    for _ in range(ROUNDS):
        top_up(settings, r, size, targets["on"].pid)
        _alternating({name: _Loop(target, "w") for name, target in targets.items()}, one,
                     2 * seconds)
        for name, target in targets.items():
            top_up(settings, r, size, target.pid)
            results = concurrent_loops(target, MANY, seconds)
            many[name].append(round(sum(x.loops for x in results)
                                    / max(x.seconds for x in results), 1))
    figures = {name: {**_figures(one[name]), "many_clients_loops_per_s": many[name]}
               for name in targets}
    figures["ratio_on_off"] = {
        "one_client": round(figures["on"]["loops_per_s"] / figures["off"]["loops_per_s"], 3),
        "many_clients": round(sum(many["on"]) / sum(many["off"]), 3)}
    return figures


def _fences(r: RedisCluster, pid: str) -> int:
    return int(r.get(K.replication_fence_key(pid)) or 0)


def _redis_level(r: RedisCluster, settings: Settings, pid: str) -> dict:
    """The wait without HTTP: one small write to the project's master (HINCRBY), alone or
    followed by the fence and WAIT (``replicated``), alternated; milliseconds."""
    key, timings = K.counters_key(pid), {"write": [], "write_and_wait": []}
    waiting = settings.replace(redis_wait_replicas=1)
    for turn in range(2 * REDIS_LEVEL_WRITES):
        began = time.perf_counter()
        if turn % 2:
            with replicated(r, pid, waiting):
                r.hincrby(key, "bench", 1)
        else:
            r.hincrby(key, "bench", 1)
        timings["write_and_wait" if turn % 2 else "write"].append(
            (time.perf_counter() - began) * 1000)
    r.hdel(key, "bench")
    return {name: percentiles(ms) for name, ms in timings.items()}


class _Loop:
    """One keep-alive client's next+label requests on one server."""

    def __init__(self, target: Target, eid: str) -> None:
        self.client = LeanClient(target.url, target.token)
        self.next_request = self.client.encode("POST", f"/v1/projects/{target.pid}/tasks/next",
                                               json.dumps({"expert_id": eid}).encode())
        self.label_body = json.dumps({"label": "a", "seconds_spent": 1}).encode()


def _alternating(loops: dict[str, _Loop], timed: dict[str, Timed], seconds: float) -> None:
    """One loop on each server in turn for ``seconds``: load from elsewhere falls on both."""
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for name, loop in loops.items():
            _loop(loop, timed[name], 1)
    for loop in loops.values():
        loop.client.close()


def _loop(loop: _Loop, timed: Timed, count: int) -> None:
    """``count`` next+label loops, each request timed, their time added to ``timed``."""
    for _ in range(count):
        began = time.perf_counter()
        status, body = loop.client.send(loop.next_request)
        labeled = time.perf_counter()
        if status != 200:
            raise RuntimeError(f"tasks/next answered {status}: {str(body)[:200]}")
        status, body = loop.client.request("POST", f"/v1/tasks/{body['task']['id']}/label",
                                           loop.label_body)
        ended = time.perf_counter()
        if status != 201:
            raise RuntimeError(f"label answered {status}: {str(body)[:200]}")
        timed.next_ms.append((labeled - began) * 1000)
        timed.label_ms.append((ended - labeled) * 1000)
        timed.seconds += ended - began
        timed.loops += 1


def _figures(timed: Timed) -> dict:
    return {"loops_per_s": round(timed.loops / timed.seconds, 1),
            "label_ms": percentiles(timed.label_ms), "next_ms": percentiles(timed.next_ms)}


def _failover(r: RedisCluster, url: str, token: str, victim: tuple[str, str],
              other: tuple[str, str]) -> dict:
    """SIGKILL the master of the ``victim`` (project, expert) under load, ``other`` on
    another master; what their clients saw."""
    (victim_pid, _), (other_pid, _) = victim, other
    master = r.get_node_from_key(K.project_key(victim_pid))
    node = r.get_redis_connection(master)
    master_pid = int(node.info("server")["process_id"])
    replica_port = r.get_node_from_key(K.project_key(victim_pid), replica=True).port
    stop, start = threading.Event(), time.perf_counter()
    seen = {pid: Timed() for pid in (victim_pid, other_pid)}
    clients = [threading.Thread(target=_watch, args=(url, token, pid, eid, seen[pid], start,
                                                     stop), daemon=True)
               for pid, eid in (victim, other)]
    for client in clients:
        client.start()
    time.sleep(1.0)
    killed = time.perf_counter() - start
    os.kill(master_pid, signal.SIGKILL)
    promoted = _wait_promotion(replica_port, start)
    time.sleep(max(0.0, killed + FAILOVER_WATCH - (time.perf_counter() - start)))
    stop.set()
    for client in clients:
        client.join(30)
    return {"victim": _window(seen[victim_pid], killed, promoted),
            "other_project": _window(seen[other_pid], killed, promoted),
            "kill_to_promotion_s": None if promoted is None else round(promoted - killed, 3)}


def _wait_promotion(port: int, start: float) -> float | None:
    """Seconds since ``start`` when the replica on ``port`` says it is a master."""
    deadline = time.perf_counter() + FAILOVER_WATCH
    with redis.Redis(port=port, socket_timeout=1.0, decode_responses=True) as replica:
        while time.perf_counter() < deadline:
            with contextlib.suppress(redis.RedisError):
                if replica.execute_command("ROLE")[0] == "master":
                    return time.perf_counter() - start
            time.sleep(0.01)
    return None


def _watch(url: str, token: str, pid: str, eid: str, timed: Timed, start: float,
           stop: threading.Event) -> None:
    """next+label until ``stop``, keeping every answer; 50 ms pause after a failure."""
    client = LeanClient(url, token, timeout=30.0)
    next_request = client.encode("POST", f"/v1/projects/{pid}/tasks/next",
                                 json.dumps({"expert_id": eid}).encode())
    label_body = json.dumps({"label": "a", "seconds_spent": 1}).encode()
    while not stop.is_set():
        status, body = _timed(client, next_request, timed, start)
        if status == 200:
            label = client.encode("POST", f"/v1/tasks/{body['task']['id']}/label", label_body)
            status, body = _timed(client, label, timed, start)
        if status not in (200, 201):
            time.sleep(0.05)
    client.close()


def _timed(client: LeanClient, raw: bytes, timed: Timed, start: float
           ) -> tuple[int, object]:
    began = time.perf_counter()
    try:
        status, body = client.send(raw)
    except OSError as error:
        timed.lost.append(f"{type(error).__name__}: {error}")
        status, body = 0, None
    timed.answers.append((began - start, status, time.perf_counter() - began))
    return status, body


def _window(timed: Timed, killed: float, promoted: float | None) -> dict:
    """When the 503s came, relative to the kill, and what else was answered."""
    after = [(at - killed, status, took) for at, status, took in timed.answers if at >= killed]
    unavailable = [at for at, status, _ in after if status == 503]
    first_ok = next((at for at, status, _ in after
                     if status in (200, 201) and (not unavailable or at > unavailable[0])),
                    None)
    return {"answers": len(timed.answers), "answers_503": len(unavailable),
            "first_503_s": round(unavailable[0], 3) if unavailable else None,
            "last_503_s": round(unavailable[-1], 3) if unavailable else None,
            "first_success_after_503_s": None if first_ok is None else round(first_ok, 3),
            "after_promotion_s": None if first_ok is None or promoted is None or not
            unavailable else round(first_ok - (promoted - killed), 3),
            "longest_request_s": round(max((took for _, _, took in timed.answers),
                                           default=0.0), 3),
            "other_errors": sorted({status for _, status, _ in timed.answers
                                    if status >= 300 and status not in (503,)}),
            "lost_connections": len(timed.lost)}
