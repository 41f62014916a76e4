"""The one process stack: embedded Redis, RQ workers and gunicorn as child processes.

``taskrank serve``, the benchmarks (``scripts/bench/processes.py``) and the fault tests
(``tests/faults/``) start their processes here::

    with Stack(settings) as stack:
        stack.start_redis()               # unless settings.redis_url names a Redis
        stack.start_workers(2)
        web = stack.start_web().wait_ready()
        ...                               # web.url, web.pid, web.workers()
    # left: every child stopped (SIGTERM, then SIGKILL of its group), then Redis

A stack knows the pid of everything it started and stops only that: by pid, or by the
process group a child was started in (each child leads a group of its own, so the group
holds what it forked: gunicorn's workers, RQ's work horse), never by a name.  Its own
process group also keeps the terminal's Ctrl-C away from the children: ``serve`` stops
them in order with one SIGTERM each (gunicorn treats SIGINT as a quick stop that drops
requests).

Every child has a lifeline (``taskrank.queue.processes``): when the stack's process dies,
even by ``kill -9``, the kernel sends gunicorn SIGTERM (a graceful stop; its workers get
SIGTERM if gunicorn itself dies), the embedded Redis SIGTERM (a clean shutdown) and RQ
workers SIGKILL (their running job is abandoned, then retried or failed: see
``taskrank.queue.abandoned``; their work horse dies with them).

``Stack.supervise`` restarts a child, or the embedded Redis, that exited on its own, with
backoff, while the others keep running (``taskrank.scripts.supervisor``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from taskrank.client import Client, ClientError
from taskrank.queue.embedded import EmbeddedRedis, free_port
from taskrank.queue.processes import lifeline, started_at
from taskrank.queue.settings import Settings
from taskrank.scripts.supervisor import WORKER_MODULE, Supervisor

__all__ = ["Child", "Stack", "Web", "child_pids", "clean_environ", "cpu_seconds", "started_at"]

READY_TIMEOUT = 30.0  # seconds a started child has to answer
STOP_TIMEOUT = 15.0  # seconds a child has to stop gracefully before its group is killed
WEB_APP = "taskrank.server.wsgi:app"
# gunicorn's server hooks: its workers get SIGTERM when gunicorn dies.
WEB_CONFIG = "python:taskrank.scripts.gunicorn_hooks"

# gunicorn's default sync worker: one request per process at a time, the connection closed
# after each answer.  On merged main it met every serving budget in 4 of 4 benchmark runs,
# the threaded worker (`--worker-class gthread --threads 2`, keep-alive) in 2 of 4: it spends
# more server CPU per request, which one client's serial loop pays in full (BENCHMARKS.md).
WORKER_ARGS: tuple[str, ...] = ()

Output = int | Path | None  # subprocess.DEVNULL/STDOUT, a log file to append to, or ours


def clean_environ(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``environ`` (default ours) without any TASKRANK_* variable: children of a stack
    built from explicit settings must not pick up the caller's."""
    environ = os.environ if environ is None else environ
    return {k: v for k, v in environ.items() if not k.startswith("TASKRANK_")}


class Child:
    """One child process of a stack: how to start it, its pid, how to stop it.

    ``lifeline`` is the signal it gets when the stack's process dies (module docstring)."""

    def __init__(self, name: str, command: Sequence[str], env: Mapping[str, str],
                 stdout: Output = None, stderr: Output = None,
                 lifeline: int = signal.SIGKILL) -> None:
        self.name, self.command, self.env = name, list(command), dict(env)
        self.stdout, self.stderr = stdout, stderr
        self.lifeline = lifeline
        self.process: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def start(self) -> Child:
        """Start the process in a process group of its own, on its lifeline (the module)."""
        with contextlib.ExitStack() as files:
            stdout, stderr = (
                files.enter_context(out.open("ab")) if isinstance(out, Path) else out
                for out in (self.stdout, self.stderr))
            self.process = subprocess.Popen(self.command, env=self.env, stdin=subprocess.DEVNULL,
                                            stdout=stdout, stderr=stderr, process_group=0,
                                            preexec_fn=lifeline(self.lifeline))
        return self

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def workers(self) -> list[int]:
        """The pids of the processes this child forked (gunicorn's or RQ's workers)."""
        return child_pids(self.pid) if self.process is not None else []

    def cpu_seconds(self, reaped: bool = False) -> float:
        """CPU seconds of this process; with ``reaped`` also of the children it has waited
        for (RQ forks a work horse per job and waits for it)."""
        return 0.0 if self.process is None else cpu_seconds(self.pid, reaped)

    def signal(self) -> None:
        """SIGTERM: a graceful stop for gunicorn (requests in flight are answered) and RQ
        (a running job finishes)."""
        if self.running():
            self.process.send_signal(signal.SIGTERM)

    def wait(self, deadline: float) -> None:
        """Wait until ``deadline`` (monotonic) for the process to exit; then kill its group."""
        if self.process is None:
            return
        try:
            self.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.kill()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM, and SIGKILL of the whole group past ``timeout``."""
        self.signal()
        self.wait(time.monotonic() + timeout)

    def kill(self) -> None:
        """SIGKILL the process group now (it is ours while the leader is not yet reaped)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def output(self) -> str:
        """The tail of the log file this child writes to, when it writes to one."""
        if isinstance(self.stdout, Path) and self.stdout.exists():
            return self.stdout.read_text(errors="replace")[-4000:]
        return ""


class Web(Child):
    """gunicorn serving the app (or another WSGI app) on ``url``."""

    def __init__(self, url: str, **child: object) -> None:
        super().__init__("gunicorn", lifeline=signal.SIGTERM, **child)  # a graceful stop
        self.url = url

    def cpu_seconds(self, reaped: bool = False) -> float:
        """CPU seconds of the master and of its live worker processes."""
        return super().cpu_seconds(reaped) + sum(cpu_seconds(pid) for pid in self.workers())

    def wait_ready(self, timeout: float = READY_TIMEOUT, workers: int = 0,
                   stopping: Sequence[int] = ()) -> Web:
        """Until /healthz answers 200 and at least ``workers`` worker processes run (or
        ``stopping`` holds a signal)."""
        probe = Client(self.url, None, timeout=2, retries=0, retries_503=0)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline and not stopping:
                if not self.running():
                    raise RuntimeError(f"gunicorn exited with {self.returncode} before it "
                                       f"answered\n{self.output()}")
                with contextlib.suppress(ClientError):
                    if probe.send("GET", "/healthz").status == 200 and \
                            len(self.workers()) >= workers:
                        return self
                time.sleep(0.05)
        finally:
            probe.close()
        if stopping:
            return self
        raise RuntimeError(f"gunicorn did not answer {self.url}/healthz within {timeout} s\n"
                           f"{self.output()}")


C = TypeVar("C", bound=Child)


class Stack:
    """The processes of one taskrank, started in order and stopped in reverse order.

    Children get ``environ`` (default ours) plus the settings as TASKRANK_* variables.
    """

    def __init__(self, settings: Settings, environ: Mapping[str, str] | None = None,
                 stdout: Output = None, stderr: Output = None,
                 redis_stop_timeout: float = 10.0) -> None:
        self.settings = settings
        self.environ = dict(os.environ if environ is None else environ)
        self.stdout, self.stderr = stdout, stderr
        self.redis: EmbeddedRedis | None = None
        self.redis_stop_timeout = redis_stop_timeout
        self.redis_start_timeout = 30.0
        self.children: list[Child] = []
        self.supervisor = Supervisor(self)

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a child: the stack's, the settings, then ``extra``."""
        return {**self.environ, **self.settings.as_env(), **extra}

    def start_redis(self, data_dir: str | os.PathLike | None = None, port: int | None = None,
                    timeout: float = 10.0, queue_only: bool = False) -> EmbeddedRedis:
        """The embedded Redis on ``data_dir`` (default the settings'); the settings then
        point at it: as the data store (no cluster: nobody need ask), or with
        ``queue_only`` as RQ's Redis only (the data store is a Redis Cluster), whose data
        lives in the ``rq`` folder of the data dir, so that commands looking for a data
        store on the data dir (``queue/running.py``) never take it for one."""
        data_dir = Path(data_dir or self.settings.data_dir)
        self.redis = EmbeddedRedis(data_dir / "rq" if queue_only else data_dir,
                                   self.settings.redis_fsync, port)
        url = self.redis.start(timeout)
        self.settings = self.settings.replace(**({"rq_redis_url": url} if queue_only else
                                                 {"redis_url": url, "redis_cluster": False}))
        self.redis_start_timeout = max(self.redis_start_timeout, timeout)
        return self.redis

    def start_workers(self, count: int | None = None, **env: str) -> list[Child]:
        """``count`` (default the settings') ``taskrank worker`` processes."""
        count = self.settings.rq_workers if count is None else count
        command = [sys.executable, "-m", WORKER_MODULE]
        return [self.start_child(Child(WORKER_MODULE, command, self.env(**env), self.stdout,
                                       self.stderr))
                for _ in range(count)]

    def start_web(self, app: str = WEB_APP, workers: int | None = None, port: int | None = None,
                  args: Sequence[str] = WORKER_ARGS, preload: bool = False,
                  graceful_timeout: int = 10, **env: str) -> Web:
        """gunicorn on the settings' host and ``port`` (default the settings'; 0: a free
        one); ``preload`` forks workers from a loaded app (a killed one is back in ms)."""
        host = self.settings.host
        port = self.settings.port if port is None else port or free_port()
        command = [sys.executable, "-m", "gunicorn", "--config", WEB_CONFIG,
                   "--workers", str(workers or self.settings.web_workers), *args,
                   *(["--preload"] if preload else []), "--bind", f"{host}:{port}",
                   "--log-level", "warning", "--graceful-timeout", str(graceful_timeout), app]
        web = Web(f"http://{host}:{port}", command=command, env=self.env(**env),
                  stdout=self.stdout, stderr=self.stderr)
        return self.start_child(web)

    def start_child(self, child: C) -> C:
        """Start ``child`` as one of the stack's (remembered first: a failed start is
        still cleaned up by stop())."""
        self.children.append(child)
        return child.start()

    def wait_workers(self, count: int, timeout: float = 60.0) -> None:
        """Until ``count`` RQ workers listen on the settings' queue."""
        from rq import Worker

        from taskrank.queue.connection import connect_rq
        from taskrank.queue.worker import task_queue

        queue = task_queue(self.settings, connect_rq(self.settings))
        deadline = time.monotonic() + timeout
        while len(Worker.all(queue=queue)) < count:
            dead = [child for child in self.children if child.name == WORKER_MODULE
                    and child.returncode is not None]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"{count} RQ workers did not register within {timeout} s")
            time.sleep(0.05)

    def supervise(self, stopping: Sequence[int]) -> None:
        """Until ``stopping`` holds a signal, restart what exits on its own (the module)."""
        self.supervisor.run(stopping)

    def heal(self) -> None:
        """One look of the supervisor: note what exited, restart what is due."""
        self.supervisor.heal()

    def stop_children(self, children: Sequence[Child], timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM each of ``children`` at once; past ``timeout`` kill the groups left."""
        for child in children:
            child.signal()
        deadline = time.monotonic() + timeout
        for child in children:
            child.wait(deadline)
        self.children = [child for child in self.children if child not in children]

    def kill(self) -> None:
        """SIGKILL every child's group now (a test with nothing left to learn from a
        graceful stop), then stop Redis."""
        for child in reversed(self.children):
            child.kill()
        self.children = []
        self.stop()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the children gracefully, then Redis (with a final fsync)."""
        self.stop_children(list(self.children), timeout)
        if self.redis is not None:
            self.redis.stop(timeout=self.redis_stop_timeout)

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def child_pids(pid: int) -> list[int]:
    """The pids of ``pid``'s children (all its threads'), from Linux /proc."""
    with contextlib.suppress(OSError, ValueError):
        tasks = Path(f"/proc/{pid}/task").iterdir()
        return [int(child) for task in tasks
                for child in (task / "children").read_text().split()]
    return []


def cpu_seconds(pid: int, reaped: bool = False) -> float:
    """User + system CPU seconds of ``pid`` (plus its finished children with ``reaped``)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()
        ticks = int(fields[11]) + int(fields[12])
        if reaped:  # the children it has waited for
            ticks += int(fields[13]) + int(fields[14])
        return ticks / os.sysconf("SC_CLK_TCK")
    return 0.0
