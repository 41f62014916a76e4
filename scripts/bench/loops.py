"""The client loops the serving and ingest benchmarks time, and how they run together.

Each loop runs in a spawned child process (``run_together``) on its own ``LeanClient``,
so this module imports nothing heavy: a spawned child must start in a fraction of a second.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from taskrank.scripts.bench.lean_client import LeanClient

BARRIER_TIMEOUT = 120.0  # seconds the client processes wait for each other to be ready


@dataclass
class LoopResult:
    """What one client saw while running next+label loops."""

    loops: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # the client's own CPU time
    empty: int = 0  # 204 answers: nothing to lease
    errors: list[str] = field(default_factory=list)
    next_ms: list[float] = field(default_factory=list)
    leases: list[tuple[str, str, str]] = field(default_factory=list)  # task, item, expert


def next_label_loops(base_url: str, token: str, pid: str, eid: str, max_loops: int,
                     max_seconds: float, ready: Callable[[], object] | None = None,
                     label: str = "a") -> LoopResult:
    """Lease and label in a loop until ``max_loops`` or ``max_seconds`` (both bound it).

    ``ready`` is called once connected, just before the clock starts (see ``run_together``).
    """
    client = LeanClient(base_url, token)
    next_request = client.encode("POST", f"/v1/projects/{pid}/tasks/next",
                                 json.dumps({"expert_id": eid}).encode())
    label_body = json.dumps({"label": label, "seconds_spent": 1}).encode()
    result = LoopResult()
    if ready is not None:
        ready()
    start, cpu = time.perf_counter(), time.process_time()
    deadline = start + max_seconds
    while result.loops < max_loops and time.perf_counter() < deadline:
        if not _one_loop(client, next_request, label_body, eid, result):
            break
    result.seconds = time.perf_counter() - start
    result.cpu_seconds = time.process_time() - cpu
    client.close()
    return result


def interleaved_loops(base_url: str, token: str, pids: list[str], eid: str,
                      loops_each: int) -> dict[str, LoopResult]:
    """``loops_each`` next+label loops on every project of ``pids``, one project after the
    other in turn on one connection: pid -> its loops."""
    client = LeanClient(base_url, token)
    label_body = json.dumps({"label": "a", "seconds_spent": 1}).encode()
    requests = {pid: client.encode("POST", f"/v1/projects/{pid}/tasks/next",
                                   json.dumps({"expert_id": eid}).encode()) for pid in pids}
    results = {pid: LoopResult() for pid in pids}
    going = list(pids)
    for _ in range(loops_each):
        going = [pid for pid in going
                 if _one_loop(client, requests[pid], label_body, eid, results[pid])]
    client.close()
    return results


def _one_loop(client: LeanClient, next_request: bytes, label_body: bytes, eid: str,
              result: LoopResult) -> bool:
    """One next+label round trip pair; False when the loop should stop."""
    began = time.perf_counter()
    status, body = client.send(next_request)
    result.next_ms.append((time.perf_counter() - began) * 1000)
    if status == 204:
        result.empty += 1
        return result.empty < 100  # an exhausted pool would spin; stop soon
    if status != 200:
        result.errors.append(f"next {status}: {str(body)[:200]}")
        return len(result.errors) < 20
    task = body["task"]
    result.leases.append((task["id"], task["item_id"], eid))
    status, body = client.request("POST", f"/v1/tasks/{task['id']}/label", label_body)
    if status != 201:
        result.errors.append(f"label {status}: {str(body)[:200]}")
        return len(result.errors) < 20
    result.loops += 1
    return True


def post_batches(base_url: str, token: str, path: str, bodies: list[bytes],
                 ready: Callable[[], object] | None = None) -> dict:
    """POST pre-encoded bodies one after another; answers the seconds and items stored."""
    client = LeanClient(base_url, token, timeout=120.0)
    stored, errors = 0, []
    if ready is not None:
        ready()
    start = time.perf_counter()
    for body in bodies:
        status, answer = client.request("POST", path, body)
        if status == 200:
            stored += answer["created"] + answer["updated"]
        else:
            errors.append(f"{status}: {str(answer)[:200]}")
    seconds = time.perf_counter() - start
    client.close()
    return {"seconds": seconds, "stored": stored, "errors": errors[:5]}


def run_together(function: Callable, arg_lists: Sequence[tuple], timeout: float) -> list:
    """Run ``function(*args, ready=...)`` in one spawned process per ``args``; each calls
    ``ready()`` when prepared and none goes on until all have: they start together.
    Returns the results in order; a child's exception is raised here."""
    context = multiprocessing.get_context("spawn")
    barrier, answers = context.Barrier(len(arg_lists)), context.Queue()
    children = [context.Process(target=_child, args=(function, args, barrier, answers, index))
                for index, args in enumerate(arg_lists)]
    for child in children:
        child.start()
    try:
        results = dict(answers.get(timeout=timeout) for _ in children)
    finally:
        for child in children:
            child.join(5)
            if child.is_alive():
                child.terminate()
                child.join()
    failed = [value for value in results.values() if isinstance(value, BaseException)]
    if failed:
        raise RuntimeError(f"a client process failed: {failed[0]!r}") from failed[0]
    return [results[index] for index in range(len(children))]


def _child(function: Callable, args: tuple, barrier: object, answers: object,
           index: int) -> None:
    try:
        answers.put((index, function(*args, ready=lambda: barrier.wait(BARRIER_TIMEOUT))))
    except Exception as error:  # handed to the parent, which raises it
        barrier.abort()
        answers.put((index, RuntimeError(f"{type(error).__name__}: {error}")))


def percentiles(samples: list[float]) -> dict:
    """p50, p90, p95, p99, max and mean of ``samples`` (nearest rank), to 3 decimals."""
    if not samples:
        return {"n": 0}
    ordered = sorted(samples)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]

    return {"n": len(ordered), "p50": round(rank(0.50), 3), "p90": round(rank(0.90), 3),
            "p95": round(rank(0.95), 3), "p99": round(rank(0.99), 3), "max": round(ordered[-1], 3),
            "mean": round(sum(ordered) / len(ordered), 3)}
