"""Real processes for the fault tests: a redis-server a test may SIGKILL, SIGSTOP and
restart on the same data dir and port, gunicorn serving the app, and a small HTTP client."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis

from taskrank.queue.embedded import EmbeddedRedis, free_port
from taskrank.scripts.serve import WORKER_ARGS

START_TIMEOUT = 30.0
HTTP_TIMEOUT = 15.0  # above the app's 5 s Redis socket timeout: a stalled Redis gives a 503
ADMIN_TOKEN = "tr_faults_" + secrets.token_urlsafe(24)


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> object:
    """Poll ``condition`` every 50 ms until it is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return [int(x) for x in path.read_text().split()]
    except OSError:
        return []


def started_at(pid: int) -> int:
    """A process's start time in clock ticks (field 22 of /proc/PID/stat); 0 when gone."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except OSError:
        return 0


class RedisProcess:
    """The venv's redis-server with AOF on one data dir and one fixed loopback port."""

    def __init__(self, data_dir: Path, fsync: str = "always") -> None:
        self.server = EmbeddedRedis(data_dir, fsync=fsync, port=free_port())

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.server.port}/0"

    @property
    def pid(self) -> int:
        return self.server.process.pid

    def start(self) -> RedisProcess:
        self.server.start(timeout=START_TIMEOUT)
        return self

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True, socket_timeout=10)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final fsync; reaped so the pid file reads as stale."""
        self.server.process.kill()
        self.server.process.wait(10)

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def close(self) -> None:
        process = self.server.process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGCONT)
            self.server.stop(timeout=5)


class WebServer:
    """gunicorn serving ``taskrank.server.wsgi:app`` on a free port (what serve starts)."""

    def __init__(self, redis_url: str, log_dir: Path, workers: int = 2,
                 preload: bool = False, **env: str) -> None:
        self.port = free_port()
        self.log = log_dir / f"gunicorn-{self.port}.log"
        environ = {k: v for k, v in os.environ.items() if not k.startswith("TASKRANK_")}
        environ.update(TASKRANK_REDIS_URL=redis_url, TASKRANK_ADMIN_TOKEN=ADMIN_TOKEN,
                       TASKRANK_DATA_DIR=str(log_dir), TASKRANK_LOG_LEVEL="WARNING", **env)
        command = [sys.executable, "-m", "gunicorn", "--workers", str(workers), *WORKER_ARGS,
                   "--bind",
                   f"127.0.0.1:{self.port}", "--log-level", "warning",
                   "--graceful-timeout", "5", "taskrank.server.wsgi:app"]
        if preload:  # workers fork from a loaded app: a killed one is back in milliseconds
            command.insert(3, "--preload")
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(command, env=environ, stdin=subprocess.DEVNULL,
                                            stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        self.api = Api(f"127.0.0.1:{self.port}", ADMIN_TOKEN)

    def wait_ready(self, workers: int = 2) -> WebServer:
        def ready() -> bool:
            assert self.process.poll() is None, f"gunicorn exited\n{self.output()}"
            try:
                return self.api.call("GET", "/healthz")[0] == 200 and \
                    len(self.workers()) >= workers
            except OSError:
                return False

        wait_for(ready, START_TIMEOUT, f"gunicorn to answer\n{self.output()}")
        return self

    def workers(self) -> list[int]:
        return children(self.process.pid)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def close(self) -> None:
        """Kill the whole process group: a graceful stop takes seconds (module teardown)
        and a test has nothing left to learn from it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)


class Api:
    """A JSON client on one connection per request (gunicorn's sync workers close them)."""

    def __init__(self, host: str, token: str) -> None:
        self.host, self.token = host, token

    def send(self, method: str, path: str, body: object = None,
             headers: dict[str, str] | None = None,
             timeout: float = HTTP_TIMEOUT) -> http.client.HTTPConnection:
        """Send a request and return the connection, its answer still to be read."""
        connection = http.client.HTTPConnection(self.host, timeout=timeout)
        head = {"Authorization": f"Bearer {self.token}", **(headers or {})}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            head["Content-Type"] = "application/json"
        connection.request(method, path, body=payload, headers=head)
        return connection

    @staticmethod
    def answer(connection: http.client.HTTPConnection) -> tuple[int, dict, object]:
        """(status, headers, body: JSON when it is JSON, else text)."""
        try:
            response = connection.getresponse()
            data = response.read()
            headers = {k.lower(): v for k, v in response.getheaders()}
        finally:
            connection.close()
        text = data.decode(errors="replace")
        if "json" in headers.get("content-type", "") and data:
            return response.status, headers, json.loads(text)
        return response.status, headers, text

    def call(self, method: str, path: str, body: object = None,
             headers: dict[str, str] | None = None,
             timeout: float = HTTP_TIMEOUT) -> tuple[int, dict, object]:
        return self.answer(self.send(method, path, body, headers, timeout))


def setup_project(api: Api, pid: str = "p", n_items: int = 60, experts: int = 4,
                  redundancy: int = 1, capacity: int = 3) -> None:
    """A project of untagged items and experts e0.. (lease 600 s, retrains rare)."""
    status, _, body = api.call("POST", "/v1/projects", {
        "id": pid, "labels": ["neg", "pos"], "redundancy": redundancy, "lease_seconds": 600,
        "strategy": {"retrain": {"every_labels": 10_000}}})
    assert status == 201, body
    items = [{"id": f"i{n}", "predictions": {"m": [round(0.05 + 0.9 * n / n_items, 4),
                                                   round(0.95 - 0.9 * n / n_items, 4)]}}
             for n in range(n_items)]
    status, _, body = api.call("POST", f"/v1/projects/{pid}/items", {"items": items})
    assert status == 200 and body["created"] == n_items, body
    for e in range(experts):
        status, _, body = api.call("PUT", f"/v1/experts/e{e}", {"capacity": capacity})
        assert status in (200, 201), body


def export_labels(api: Api, pid: str = "p") -> list[dict]:
    """Every label record of the project, page by page."""
    records, cursor = [], None
    for _ in range(1000):
        query = f"?limit=500&cursor={cursor}" if cursor else "?limit=500"
        status, _, body = api.call("GET", f"/v1/projects/{pid}/labels{query}")
        assert status == 200, body
        records += body["labels"]
        cursor = body["next_cursor"]
        if cursor is None:
            return records
    raise AssertionError("the export did not end")


def is_problem_503(status: int, headers: dict, body: object) -> bool:
    """A 503 problem document that tells the client when to retry."""
    return (status == 503 and headers.get("content-type") == "application/problem+json"
            and isinstance(body, dict) and body.get("status") == 503 and bool(body.get("detail"))
            and headers.get("retry-after", "").isdigit())


@dataclass
class Answer:
    """One HTTP answer a test client received, and when."""

    what: str
    at: float  # time.monotonic() when it arrived
    status: int
    headers: dict
    body: object

    def is_problem_503(self) -> bool:
        return is_problem_503(self.status, self.headers, self.body)


def ask(api: Api, what: str, method: str, path: str, body: object = None,
        headers: dict[str, str] | None = None) -> Answer | str:
    """The answer, or a string saying how the connection broke."""
    try:
        status, head, data = api.call(method, path, body, headers)
    except (OSError, http.client.HTTPException) as error:
        return f"{what}: {error!r}"
    return Answer(what, time.monotonic(), status, head, data)


class Poller(threading.Thread):
    """Reads a few GET routes in turn until stopped, keeping every answer."""

    def __init__(self, api: Api, paths: list[str], stop: threading.Event,
                 budget: float = 25.0) -> None:
        super().__init__(daemon=True, name="poller")
        self.api, self.paths, self.stop = api, paths, stop
        self.deadline = time.monotonic() + budget
        self.answers: list[Answer] = []
        self.lost: list[str] = []

    def run(self) -> None:
        turn = 0
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            path = self.paths[turn % len(self.paths)]
            answer = ask(self.api, path, "GET", path)
            if isinstance(answer, str):
                self.lost.append(answer)
                time.sleep(0.05)
            else:
                self.answers.append(answer)
            turn += 1
            time.sleep(0.01)


class Labeler(threading.Thread):
    """One expert's client: asks for its next task, then labels it with an Idempotency-Key.

    A label whose answer did not arrive (503, connection lost) stays ``unsure`` and is sent
    again with the same key until an answer comes, as a labeling platform would do.
    Every answer received is kept, for the tests to check what clients saw.
    """

    def __init__(self, api: Api, eid: str, stop: threading.Event, pid: str = "p",
                 budget: float = 25.0) -> None:
        super().__init__(daemon=True, name=f"labeler-{eid}")
        self.api, self.eid, self.stop, self.pid = api, eid, stop, pid
        self.deadline = time.monotonic() + budget
        self.acked: dict[str, str] = {}  # task id -> label, answered 201
        self.unsure: list[tuple[str, str, str]] = []  # (task id, key, label) sent, no answer
        self.answers: list[Answer] = []
        self.lost: list[str] = []  # requests whose connection broke: what and error
        self.exhausted = False  # 204: nothing left for this expert

    def run(self) -> None:
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            if not self.step():
                time.sleep(0.05)

    def step(self) -> bool:
        """One request; False when it should back off before the next."""
        if self.unsure:
            return self.label(*self.unsure.pop(0))
        answer = self.request("next", "POST", f"/v1/projects/{self.pid}/tasks/next",
                              {"expert_id": self.eid})
        if answer is None or answer[0] != 200:
            self.exhausted = answer is not None and answer[0] == 204
            return False
        task = answer[2]["task"]
        label = "pos" if int(task["item_id"][1:]) % 2 else "neg"
        return self.label(task["id"], secrets.token_hex(8), label)

    def label(self, tid: str, key: str, label: str) -> bool:
        answer = self.request("label", "POST", f"/v1/tasks/{tid}/label", {"label": label},
                              {"Idempotency-Key": key})
        if answer is not None and answer[0] == 201:
            self.acked[tid] = label
            return True
        if answer is None or answer[0] >= 500:
            self.unsure.append((tid, key, label))
        return False

    def request(self, what: str, method: str, path: str, body: object,
                headers: dict[str, str] | None = None) -> tuple[int, dict, object] | None:
        answer = ask(self.api, what, method, path, body, headers)
        if isinstance(answer, str):
            self.lost.append(answer)
            return None
        self.answers.append(answer)
        return answer.status, answer.headers, answer.body

    def settle(self, timeout: float) -> None:
        """After the fault: send every unsure label again until each has an answer."""
        deadline = time.monotonic() + timeout
        while self.unsure:
            assert time.monotonic() < deadline, f"{self.eid}: labels still unanswered " \
                                                f"{self.unsure}; last answers {self.answers[-3:]}"
            if not self.label(*self.unsure.pop(0)):
                time.sleep(0.1)
