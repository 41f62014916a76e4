"""Ingest over HTTP (DESIGN §7 budget >= 10,000 items/s), batches of 1,000 items.

Bodies are JSON-encoded before the clock starts, so the figure is the server's.  Measured
with 1 client process and with 2 (gunicorn runs 2 workers: one sequential client leaves
one of them idle while it waits).
"""

from __future__ import annotations

from collections.abc import Callable

from taskrank.queue.tokens import create_token
from taskrank.scripts.bench.items import encoded_batches
from taskrank.scripts.bench.loops import BARRIER_TIMEOUT, post_batches, run_together
from taskrank.scripts.bench.machine import redis_cpu_seconds
from taskrank.scripts.bench.processes import fresh_redis, gunicorn


def run(n: int, client_counts: tuple[int, ...] = (1, 2), fsync: str = "always") -> dict:
    """Items/s for each client count; each run ingests ``n`` new items into its own project."""
    # Imported here: it pulls in scikit-learn, which the client processes must not wait for.
    from taskrank.scripts.bench.data import new_project

    out: dict = {"items_per_run": n, "batch": 1000, "runs": {}}
    with fresh_redis(fsync) as (settings, r):
        token = create_token(r, "platform")
        with gunicorn(settings) as server:
            for clients in client_counts:
                pid = f"ingest-{clients}"
                new_project(r, pid)
                cpu = (server.cpu_seconds(), redis_cpu_seconds(r))
                run = ingest_with(server.url, token, pid, n, clients)
                run["cpu_ms_per_1000_items"] = {
                    "server": round((server.cpu_seconds() - cpu[0]) * 1e6 / run["stored"], 1),
                    "redis": round((redis_cpu_seconds(r) - cpu[1]) * 1e6 / run["stored"], 1)}
                out["runs"][f"{clients}_clients"] = run
    rates = [run["items_per_s"] for run in out["runs"].values()]
    out["items_per_s"] = max(rates) if rates else None
    return out


def ingest_with(url: str, token: str, pid: str, n: int, clients: int) -> dict:
    """``clients`` processes post ``n`` items together, each its own contiguous share."""
    share = -(-n // clients)
    answers = run_together(_client, [(url, token, pid, i * share, min(share, n - i * share))
                                     for i in range(clients)], timeout=BARRIER_TIMEOUT + 900)
    stored = sum(answer["stored"] for answer in answers)
    seconds = max(answer["seconds"] for answer in answers)
    return {"clients": clients, "stored": stored, "seconds": round(seconds, 3),
            "items_per_s": round(stored / seconds, 1),
            "errors": [e for answer in answers for e in answer["errors"]][:3]}


def _client(url: str, token: str, pid: str, start: int, n: int, ready: Callable) -> dict:
    """Child process: encode this share's bodies, wait for the common start, post them."""
    bodies = encoded_batches(start, n)
    return post_batches(url, token, f"/v1/projects/{pid}/items", bodies, ready)
