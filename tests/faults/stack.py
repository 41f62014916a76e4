"""Fault-test helpers around the process stack (``taskrank.scripts.stack``): a Redis a test
may SIGKILL, SIGSTOP and restart on the same data dir and port, gunicorn with a client
(``taskrank.client``) holding the test's admin token, and labeling clients in threads."""

from __future__ import annotations

import collections
import contextlib
import os
import secrets
import signal
import threading
import time
from dataclasses import dataclass

import redis

from taskrank.client import Client, ClientError
from taskrank.queue.embedded import EmbeddedRedis
from taskrank.scripts.stack import Web

START_TIMEOUT = 30.0
HTTP_TIMEOUT = 15.0  # above the app's 5 s Redis socket timeout: a stalled Redis gives a 503
ADMIN_TOKEN = "tr_faults_" + secrets.token_urlsafe(24)




class RedisProcess:
    """The stack's embedded Redis (AOF on, one fixed loopback port), with the faults."""

    def __init__(self, server: EmbeddedRedis) -> None:
        self.server = server

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def pid(self) -> int:
        return self.server.process.pid

    def start(self) -> RedisProcess:
        """Start it again on the same data dir and port (the AOF is replayed)."""
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
        """SIGCONT (also before the teardown: a stopped Redis cannot shut down)."""
        if self.server.process is not None and self.server.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)


class WebServer:
    """The stack's gunicorn serving ``taskrank.server.wsgi:app`` (what serve starts), and a
    client to it holding the admin token (one per thread: see ``Client.clone``)."""

    def __init__(self, web: Web) -> None:
        self.web = web
        self.api = Client(web.url, ADMIN_TOKEN, timeout=HTTP_TIMEOUT)

    def workers(self) -> list[int]:
        return self.web.workers()

    def output(self) -> str:
        return self.web.output()


def setup_project(api: Client, pid: str = "p", n_items: int = 60, experts: int = 4,
                  redundancy: int = 1, capacity: int = 3) -> None:
    """A project of untagged items and experts e0.. (lease 600 s, retrains rare)."""
    status, _, body = api.send("POST", "/v1/projects", {
        "id": pid, "labels": ["neg", "pos"], "redundancy": redundancy, "lease_seconds": 600,
        "strategy": {"retrain": {"every_labels": 10_000}}})
    assert status == 201, body
    items = [{"id": f"i{n}", "predictions": {"m": [round(0.05 + 0.9 * n / n_items, 4),
                                                   round(0.95 - 0.9 * n / n_items, 4)]}}
             for n in range(n_items)]
    status, _, body = api.send("POST", f"/v1/projects/{pid}/items", {"items": items})
    assert status == 200 and body["created"] == n_items, body
    for e in range(experts):
        status, _, body = api.send("PUT", f"/v1/experts/e{e}", {"capacity": capacity})
        assert status in (200, 201), body


def export_labels(api: Client, pid: str = "p") -> list[dict]:
    """Every label record of the project, page by page."""
    records, cursor = [], None
    for _ in range(1000):
        query = f"?limit=500&cursor={cursor}" if cursor else "?limit=500"
        status, _, body = api.send("GET", f"/v1/projects/{pid}/labels{query}")
        assert status == 200, body
        records += body["labels"]
        cursor = body["next_cursor"]
        if cursor is None:
            return records
    raise AssertionError("the export did not end")


def check_acknowledged_kept(api: Client, acked: set[str], acked_before: set[str] = frozenset(),
                            pid: str = "p") -> None:
    """The export holds every label a client saw acknowledged (those before the fault
    among them) exactly once as counted, and no other counted label."""
    records = export_labels(api, pid)
    twice = [tid for tid, n in collections.Counter(r["task_id"] for r in records).items()
             if n > 1]
    assert not twice, f"labels exported twice: {twice}"
    counted = {r["task_id"] for r in records if r["counted"]}
    assert acked_before <= counted, f"acknowledged labels lost: {acked_before - counted}"
    assert counted == acked, "every label a client saw acknowledged is counted, and no other"


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


def ask(api: Client, what: str, method: str, path: str, body: object = None,
        headers: dict[str, str] | None = None) -> Answer | str:
    """The answer, or a string saying how the connection broke."""
    try:
        status, head, data = api.send(method, path, body, headers)
    except ClientError as error:
        return f"{what}: {error!r}"
    return Answer(what, time.monotonic(), status, head, data)


class Poller(threading.Thread):
    """Reads a few GET routes in turn until stopped, keeping every answer."""

    def __init__(self, api: Client, paths: list[str], stop: threading.Event,
                 budget: float = 25.0) -> None:
        super().__init__(daemon=True, name="poller")
        self.api, self.paths, self.stop = api.clone(), paths, stop
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

    def __init__(self, api: Client, eid: str, stop: threading.Event, pid: str = "p",
                 budget: float = 25.0) -> None:
        super().__init__(daemon=True, name=f"labeler-{eid}")
        self.api, self.eid, self.stop, self.pid = api.clone(), eid, stop, pid
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
