"""``taskrank serve`` as the operator runs it, for fault tests that kill its children or
itself: a subprocess in a session of its own, every process it ever had remembered (pid and
start time, so a reused pid is never mistaken for it), and killed by pid at the end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis

from taskrank.client import Client, ClientError
from taskrank.queue.embedded import free_port
from taskrank.queue.processes import is_alive, parent_of, started_at
from taskrank.scripts.stack import clean_environ
from tests.faults.stack import ADMIN_TOKEN, HTTP_TIMEOUT, START_TIMEOUT
from tests.waits import wait_for

WORKER = "taskrank.scripts.worker"


def descendants(root: int) -> dict[int, tuple[int, str]]:
    """pid -> (start time, command line) of every live process below ``root``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (parent := parent_of(int(entry.name))) is not None:
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = {}, list(children.get(root, []))
    while todo:
        pid = todo.pop()
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        found[pid] = (started_at(pid), cmdline)
        todo += children.get(pid, [])
    return found


class ServeProcess:
    """One ``taskrank serve`` on ``data_dir`` (admin token ADMIN_TOKEN), output in files."""

    def __init__(self, data_dir: Path, name: str, port: int | None = None, **env: str) -> None:
        self.data_dir, self.name = data_dir, name
        self.port = port or free_port()
        self.out = data_dir.parent / f"{name}.out"
        self.err = data_dir.parent / f"{name}.err"
        environ = {**clean_environ(), "TASKRANK_DATA_DIR": str(data_dir),
                   "TASKRANK_ADMIN_TOKEN": ADMIN_TOKEN, "TASKRANK_LOG_LEVEL": "WARNING", **env}
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "taskrank.scripts.cli", "serve", "--port", str(self.port)],
                env=environ, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                start_new_session=True)
        self.seen: dict[int, tuple[int, str]] = {}  # every process it ever had
        self.api = Client(self.url, ADMIN_TOKEN, timeout=HTTP_TIMEOUT, retries=0,
                          retries_503=0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return (f"{self.name} stdout:\n{self.out.read_text()[-2000:]}\n"
                f"stderr:\n{self.err.read_text()[-4000:]}")

    def tree(self) -> dict[int, tuple[int, str]]:
        """The live processes below serve now (also remembered in ``seen``)."""
        now = descendants(self.pid)
        self.seen.update(now)
        return now

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Until /readyz answers ``ready`` (Redis and a registered RQ worker)."""

        def ready() -> bool:
            assert self.process.poll() is None, f"serve exited\n{self.output()}"
            answer = self.readyz()
            return answer is not None and answer[0] == 200 and answer[1]["status"] == "ready"

        wait_for(ready, timeout, f"{self.name} to be ready\n{self.output()}")
        self.tree()

    def readyz(self) -> tuple[int, dict] | None:
        try:
            status, _, body = self.api.send("GET", "/readyz")
        except ClientError:  # not answering (yet)
            return None
        return status, body

    def children(self, part: str) -> list[int]:
        """The live direct children of serve whose command line names ``part``
        (``redis-server``, ``WORKER``, ``gunicorn``)."""
        return [pid for pid, (_, cmd) in self.tree().items()
                if part in cmd and parent_of(pid) == self.pid and is_alive(pid)]

    def child(self, part: str) -> int:
        """The one live direct child of serve named ``part``."""
        found = self.children(part)
        assert len(found) == 1, f"serve's children named {part}: {found}\n{self.tree()}"
        return found[0]

    def redis(self) -> redis.Redis:
        url = (self.data_dir / "redis.url").read_text().strip()
        return redis.Redis.from_url(url, decode_responses=True, socket_timeout=10)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """``signum`` to serve alone; its exit code."""
        self.tree()
        self.process.send_signal(signum)
        return self.process.wait(timeout)

    def left(self) -> dict[int, str]:
        """The processes serve ever had that still run."""
        return {pid: cmd for pid, (born, cmd) in self.seen.items() if is_alive(pid, born)}

    def wait_nothing_left(self, timeout: float = 20.0) -> None:
        wait_for(lambda: not self.left(), timeout,
                 f"{self.name}'s processes to end: {self.left()}\n{self.output()}")

    def kill_leftovers(self) -> None:
        """Teardown: SIGKILL serve and whatever it had that still runs (by pid)."""
        self.api.close()
        if self.process.poll() is None:
            self.tree()
            self.process.kill()
            self.process.wait()
        for pid in self.left():
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while self.left() and time.monotonic() < deadline:
            time.sleep(0.05)
