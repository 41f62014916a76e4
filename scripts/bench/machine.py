"""The real processes a benchmark runs against: Redis, gunicorn, RQ workers.

Each is a context manager that starts the process, waits until it answers, and stops it
(and only it) on the way out, whatever happened in between.
"""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis

from taskrank.queue.connection import connect
from taskrank.queue.embedded import EmbeddedRedis, free_port
from taskrank.queue.settings import Settings

READY_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


@contextlib.contextmanager
def fresh_redis(fsync: str = "always") -> Iterator[tuple[Settings, redis.Redis]]:
    """A new embedded Redis (AOF on, ``appendfsync`` = ``fsync``) in a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="taskrank-bench-") as data_dir:
        server = EmbeddedRedis(Path(data_dir) / "redis", fsync)
        server.start()
        try:
            settings = Settings(redis_url=server.url, data_dir=data_dir, redis_fsync=fsync)
            client = connect(settings, socket_timeout=120.0)
            yield settings, client
            client.close()
        finally:
            server.stop(timeout=60.0)


def child_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a server or worker child: ours without TASKRANK_*, plus settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKRANK_")}
    return {**env, **settings.as_env(), **extra}


@dataclass
class Server:
    """A running gunicorn: its base URL and master process id."""

    url: str
    pid: int

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by the master and its worker processes."""
        return sum(_cpu_seconds(pid) for pid in [self.pid, *_children(self.pid)])


def _children(pid: int) -> list[int]:
    with contextlib.suppress(OSError, ValueError):
        tasks = Path(f"/proc/{pid}/task").iterdir()
        return [int(child) for task in tasks
                for child in (task / "children").read_text().split()]
    return []


def _cpu_seconds(pid: int, reaped: bool = False) -> float:
    """User + system CPU seconds of ``pid`` (plus its finished children with ``reaped``)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()
        ticks = int(fields[11]) + int(fields[12])
        if reaped:  # RQ forks a work horse per job and waits for it: its CPU lands here
            ticks += int(fields[13]) + int(fields[14])
        return ticks / os.sysconf("SC_CLK_TCK")
    return 0.0


def workers_cpu_seconds(workers: list[subprocess.Popen]) -> float:
    """CPU seconds of RQ worker processes and the work horses they have reaped."""
    return sum(_cpu_seconds(worker.pid, reaped=True) for worker in workers)


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


def redis_cpu_seconds(r: redis.Redis) -> float:
    cpu = r.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


@contextlib.contextmanager
def gunicorn(settings: Settings, app: str = "taskrank.server.wsgi:app", workers: int = 2,
             extra_env: dict[str, str] | None = None,
             extra_args: tuple[str, ...] = ()) -> Iterator[Server]:
    """``gunicorn -w workers`` serving ``app`` on a free loopback port."""
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "-w", str(workers), "-b", f"127.0.0.1:{port}",
               "--log-level", "warning", *extra_args, app]
    env = child_env(settings, **(extra_env or {}))
    process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL,
                               start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(process, url)
        yield Server(url, process.pid)
    finally:
        _stop(process)


def _wait_healthy(process: subprocess.Popen, url: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {process.returncode} before it answered")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"gunicorn did not answer {url}/healthz within {READY_TIMEOUT} s")


@contextlib.contextmanager
def rq_workers(settings: Settings, count: int) -> Iterator[list[subprocess.Popen]]:
    """``count`` ``taskrank worker`` processes on the benchmark's Redis."""
    env = child_env(settings, TASKRANK_LOG_LEVEL="WARNING")
    workers: list[subprocess.Popen] = []
    try:
        for _ in range(count):
            workers.append(subprocess.Popen(
                [sys.executable, "-m", "taskrank.scripts.worker"], env=env,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True))
        yield workers
    finally:
        for worker in workers:
            _stop(worker)


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the process (a graceful stop for gunicorn and RQ); SIGKILL if it hangs."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


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
