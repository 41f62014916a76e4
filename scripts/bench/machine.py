"""What a benchmark records beside its figures: the machine, Redis's state and CPU use."""

from __future__ import annotations

import contextlib
import os
import platform
import time
from pathlib import Path

import redis

from taskrank.queue.connection import DataClient, masters
from taskrank.scripts.stack import Child


def workers_cpu_seconds(workers: list[Child]) -> float:
    """CPU seconds of RQ worker processes and the work horses they have reaped."""
    return sum(worker.cpu_seconds(reaped=True) for worker in workers)


def settle(r: redis.Redis, timeout: float = 600.0) -> dict:
    """Wait until no append-only-file rewrite runs (a fill triggers them; the forked child
    competes for the 2 cores); answers what Redis holds and how often it rewrote."""
    deadline = time.monotonic() + timeout
    while True:
        persistence = r.info("persistence")
        busy = persistence["aof_rewrite_in_progress"] or persistence["aof_rewrite_scheduled"]
        if not busy or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    return {"used_memory_mb": round(r.info("memory")["used_memory"] / 2**20, 1),
            "aof_last_rewrite_seconds": persistence.get("aof_last_rewrite_time_sec"),
            "aof_current_size_mb": round(persistence.get("aof_current_size", 0) / 2**20, 1),
            "latest_fork_ms": round(r.info("stats")["latest_fork_usec"] / 1000, 1)}


def redis_cpu_seconds(r: DataClient) -> float:
    """CPU seconds of the data store's servers (every master of a cluster)."""
    return sum(float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])
               for cpu in (server.info("cpu") for server in masters(r)))


def machine_info(r: redis.Redis | None = None) -> dict:
    """CPU model, cores, Python and (when ``r`` is given) Redis versions."""
    info = {"cpu": _cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "memory_gb": _memory_gb()}
    if r is not None:
        server = r.info("server")
        info["redis"] = server.get("redis_version")
        info["redis_malloc"] = r.info("memory").get("mem_allocator")
        info["redis_set_ms_by_appendfsync"] = write_latency_ms(r)
    info["cpu_pressure"] = cpu_pressure()
    return info


def write_latency_ms(r: redis.Redis, writes: int = 200) -> dict:
    """Median time of one SET under ``appendfsync always`` and ``everysec``: the difference
    is what one fsync of the append-only file costs on this disk."""
    out = {}
    shipped = r.config_get("appendfsync")["appendfsync"]
    try:
        for policy in ("always", "everysec"):
            r.config_set("appendfsync", policy)
            times = []
            for i in range(writes):
                start = time.perf_counter()
                r.set(f"bench-probe:{i}", "x")
                times.append((time.perf_counter() - start) * 1000)
            out[policy] = round(sorted(times)[len(times) // 2], 3)
    finally:
        r.config_set("appendfsync", shipped)
    return out


def cpu_pressure() -> str | None:
    """Linux PSI for the CPU ('some avg10=...'): the share of time tasks waited for a core,
    i.e. how much other work competed with the benchmark."""
    with contextlib.suppress(OSError, IndexError):
        return Path("/proc/pressure/cpu").read_text().splitlines()[0]
    return None


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _memory_gb() -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    return None
