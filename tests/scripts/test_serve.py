"""``taskrank serve`` and ``taskrank worker`` as real processes: start, answer, stop clean."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from rq.job import Job

from taskrank.queue import keys
from taskrank.queue.connection import connect_rq
from taskrank.queue.embedded import EmbeddedRedis, free_port
from taskrank.queue.settings import Settings
from taskrank.queue.tokens import hash_token
from taskrank.queue.worker import task_queue

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(),
                                reason="process-tree checks read Linux /proc")

TOKEN = re.compile(r"\btr_[A-Za-z0-9_-]{20,}")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0


def _clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without any TASKRANK_* variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKRANK_")}
    return {**env, **extra}


def _proc_stat(pid: int) -> tuple[int, str, str] | None:
    """(parent pid, state, start time) of a live process, None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # the command name may hold spaces
    return int(fields[1]), fields[0], fields[19]


def _descendants(root: int) -> dict[int, tuple[str, str]]:
    """pid -> (start time, command line) of every process below ``root``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _proc_stat(int(entry.name))):
            children.setdefault(stat[0], []).append(int(entry.name))
    found, todo = {}, list(children.get(root, []))
    while todo:
        pid = todo.pop()
        stat = _proc_stat(pid)
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if stat:
            found[pid] = (stat[2], cmdline)
            todo += children.get(pid, [])
    return found


def _alive(pid: int, started: str) -> bool:
    """The process is still there (same start time: not a reused pid) and not a zombie."""
    stat = _proc_stat(pid)
    return stat is not None and stat[2] == started and stat[1] != "Z"


class Serve:
    """One ``taskrank serve`` subprocess on ``data_dir``, its output in files."""

    def __init__(self, data_dir: Path, name: str) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.out = data_dir.parent / f"{name}.out"
        self.err = data_dir.parent / f"{name}.err"
        with self.out.open("wb") as out, self.err.open("wb") as err:
            # Its own process group, so a test can press Ctrl-C on it like a terminal does.
            self.process = subprocess.Popen(
                [sys.executable, "-m", "taskrank.scripts.cli", "serve", "--port", str(self.port)],
                env=_clean_env(TASKRANK_DATA_DIR=str(data_dir)), stdin=subprocess.DEVNULL,
                stdout=out, stderr=err, start_new_session=True)
        self.tree: dict[int, tuple[str, str]] = {}

    @property
    def stdout(self) -> str:
        return self.out.read_text()

    def output(self) -> str:
        return f"stdout:\n{self.stdout}\nstderr:\n{self.err.read_text()[-3000:]}"

    def wait_healthy(self) -> None:
        """Poll /healthz until 200 and serve has said it serves; record the process tree."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"serve exited with {self.process.returncode}\n{self.output()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as response:
                    if response.status == 200 and "taskrank serving on" in self.stdout:
                        self.tree = _descendants(self.process.pid)
                        return
            except OSError:
                pass
            time.sleep(0.1)
        pytest.fail(f"serve did not answer /healthz within {START_TIMEOUT} s\n{self.output()}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def redis(self) -> redis.Redis:
        url = (self.data_dir / "redis.url").read_text().strip()
        return redis.Redis.from_url(url, decode_responses=True, socket_timeout=5)

    def stop(self, signum: int, group: bool = False) -> int:
        """Send ``signum`` (to the whole process group with ``group``); return the exit code."""
        self.tree.update(_descendants(self.process.pid))
        if group:
            os.killpg(self.process.pid, signum)
        else:
            self.process.send_signal(signum)
        try:
            return self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"serve did not exit within {STOP_TIMEOUT} s of {signum!r}\n"
                        f"{self.output()}")

    def kill_leftovers(self) -> None:
        """Teardown: never leave a process behind, whatever the test did."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        for pid, (started, _) in self.tree.items():
            if _alive(pid, started):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def serve(tmp_path: Path):
    """serve(name) -> a started ``taskrank serve`` on ``tmp_path/data``; all killed at the end."""
    started: list[Serve] = []
    data_dir = tmp_path / "data"

    def start(name: str = "serve") -> Serve:
        server = Serve(data_dir, name)
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill_leftovers()


def _assert_nothing_left(server: Serve) -> None:
    """No child of the stopped serve runs, the port is free, the Redis pid is gone."""
    deadline = time.monotonic() + 5  # orphans may take a moment to be reaped by init
    while time.monotonic() < deadline:
        left = {pid: cmd for pid, (started, cmd) in server.tree.items() if _alive(pid, started)}
        if not left:
            break
        time.sleep(0.1)
    assert not left, f"still running after serve exited: {left}\n{server.output()}"
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.connect(("127.0.0.1", server.port))
    pidfile = server.data_dir / "redis.pid"
    if pidfile.exists():
        pid = int(pidfile.read_text())
        assert _proc_stat(pid) is None or _proc_stat(pid)[1] == "Z", f"redis-server {pid} runs"


def _assert_children(server: Serve) -> None:
    """The tree holds the embedded Redis, an RQ worker and gunicorn."""
    commands = " | ".join(cmd for _, cmd in server.tree.values())
    for part in ("redis-server", "taskrank.scripts.worker", "gunicorn"):
        assert part in commands, f"no {part} among serve's children: {commands}"


def _admin_token(stdout: str) -> str:
    found = TOKEN.findall(stdout)
    assert len(found) == 1, f"expected one admin token in the output, got {found}:\n{stdout}"
    return found[0]


def _assert_stored_hashed(server: Serve, token: str) -> None:
    """Redis knows the token only by its SHA-256: the raw token is in no key, value or AOF."""
    r = server.redis()
    try:
        assert r.hgetall(keys.token_key(hash_token(token)))["role"] == "admin"
        for key in r.scan_iter(count=1000):
            assert token not in key
            if r.type(key) == "hash":
                assert token not in " ".join(r.hgetall(key).values())
            elif r.type(key) == "string":
                assert token not in r.get(key)
    finally:
        r.close()
    aof_files = [p for p in server.data_dir.rglob("appendonly*") if p.is_file()]
    assert aof_files, "the embedded Redis writes no append-only file"
    aof = b"".join(p.read_bytes() for p in aof_files)
    assert hash_token(token).encode() in aof
    assert token.encode() not in aof


def _assert_token_accepted(server: Serve, token: str) -> None:
    """The token opens a protected route (GET /v1/projects) and a wrong one does not."""

    def status(bearer: str) -> int:
        request = urllib.request.Request(f"{server.url}/v1/projects",
                                         headers={"Authorization": f"Bearer {bearer}"})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    assert status("tr_" + "x" * 43) == 401
    assert status(token) == 200


def test_first_start_prints_url_and_token_then_sigterm_stops_everything(serve):
    """First start: URL and one admin token (stored hashed) printed; SIGTERM stops every child."""
    server = serve()
    server.wait_healthy()
    assert f"http://127.0.0.1:{server.port}" in server.stdout
    token = _admin_token(server.stdout)
    _assert_children(server)
    _assert_stored_hashed(server, token)
    _assert_token_accepted(server, token)
    assert server.stop(signal.SIGTERM) == 0, server.output()
    _assert_nothing_left(server)


def test_ctrl_c_is_graceful_and_stops_everything(serve):
    """Ctrl-C (SIGINT to the process group) stops every child; the request in flight is
    answered and the running job finishes."""
    server = serve()
    server.wait_healthy()
    _assert_children(server)
    url = (server.data_dir / "redis.url").read_text().strip()
    connection = redis.Redis.from_url(url, socket_timeout=5)
    job = task_queue(Settings(redis_url=url), connection).enqueue("time.sleep", 3)
    deadline = time.monotonic() + START_TIMEOUT
    while job.get_status(refresh=True) != "started":
        assert time.monotonic() < deadline, f"the job never started\n{server.output()}"
        time.sleep(0.05)
    connection.close()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: taskrank\r\n")
        time.sleep(0.3)  # a gunicorn worker has accepted the connection, waits for the rest
        pressed = datetime.now(UTC)
        server.tree.update(_descendants(server.process.pid))
        os.killpg(server.process.pid, signal.SIGINT)
        time.sleep(0.5)
        sock.sendall(b"Connection: close\r\n\r\n")
        answer = sock.recv(100)
    assert answer.startswith(b"HTTP/1.1 200"), f"{answer!r}\n{server.output()}"
    assert server.process.wait(STOP_TIMEOUT) == 0, server.output()
    assert "KeyboardInterrupt" not in server.err.read_text(), server.output()
    _assert_nothing_left(server)
    with EmbeddedRedis(server.data_dir) as embedded:
        connection = redis.Redis.from_url(embedded.url)
        done = Job.fetch(job.id, connection=connection)
        assert done.get_status() == "finished" and done.ended_at > pressed
        connection.close()


def test_restart_keeps_data_and_a_second_serve_is_refused(serve):
    """A restart on the same data dir prints no new admin token and still knows the first;
    a second serve on a data dir in use exits 1 with a one-line error."""
    first = serve("first")
    first.wait_healthy()
    token = _admin_token(first.stdout)
    assert first.stop(signal.SIGTERM) == 0, first.output()

    second = serve("second")
    second.wait_healthy()
    assert f"http://127.0.0.1:{second.port}" in second.stdout
    assert not TOKEN.findall(second.stdout), second.output()
    r = second.redis()
    try:
        assert r.hgetall(keys.token_key(hash_token(token)))["role"] == "admin"
        assert r.scard(keys.admin_tokens_key()) == 1
    finally:
        r.close()
    _assert_token_accepted(second, token)

    third = serve("third")
    try:
        code = third.process.wait(START_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"a second serve on a data dir in use kept running\n{third.output()}")
    error = third.err.read_text()
    assert code == 1 and "already runs" in error and "Traceback" not in error, third.output()
    assert second.process.poll() is None, "the refused start disturbed the running server"
    assert second.stop(signal.SIGTERM) == 0, second.output()
    _assert_nothing_left(second)


def test_sigterm_during_startup_leaves_nothing_behind(serve):
    """SIGTERM while serve is still starting (Redis up, children not yet) stops it clean."""
    server = serve()
    pidfile = server.data_dir / "redis.pid"
    deadline = time.monotonic() + START_TIMEOUT
    while not (pidfile.exists() and pidfile.read_text().strip().isdigit()):
        assert server.process.poll() is None, server.output()
        assert time.monotonic() < deadline, f"the embedded Redis did not start\n{server.output()}"
        time.sleep(0.005)
    redis_pid = int(pidfile.read_text())
    server.tree = _descendants(server.process.pid)
    assert server.stop(signal.SIGTERM) == 0, server.output()
    _assert_nothing_left(server)
    assert _proc_stat(redis_pid) is None, f"redis-server {redis_pid} outlived serve"


def test_worker_burst_runs_the_queue_and_exits_0(settings: Settings, r: redis.Redis):
    """``taskrank worker --burst`` on a configured Redis works the taskrank queue, then exits 0."""
    job = task_queue(settings, connect_rq(settings)).enqueue("math.sqrt", 16)
    result = subprocess.run(
        [sys.executable, "-m", "taskrank.scripts.cli", "worker", "--burst"],
        env=_clean_env(TASKRANK_REDIS_URL=settings.redis_url,
                       TASKRANK_QUEUE_NAME=settings.queue_name),
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    job.refresh()
    assert job.get_status() == "finished" and job.return_value() == 4.0
