"""``taskrank.client`` against a real HTTP server: answers, errors, retries, idempotency keys."""

from __future__ import annotations

import json
import socket
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import taskrank.client as client_module
from taskrank.client import ApiError, Client, ClientError

LABEL = "/v1/tasks/t1/label"
NEXT = "/v1/projects/p/tasks/next"


class Handler(BaseHTTPRequestHandler):
    """Echoes each request; some paths answer 503 once, fail, or drop the connection."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self._answer()

    def do_POST(self) -> None:  # noqa: N802
        self._answer()

    def do_PUT(self) -> None:  # noqa: N802
        self._answer()

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length) or b"null")
        seen = self.server.seen
        seen[self.path] += 1
        self.server.keys.append((self.path, self.headers.get("Idempotency-Key")))
        if self.path == NEXT or (self.path == LABEL and seen[self.path] == 1):
            self.close_connection = True  # the request arrived; its answer never leaves
            return
        if self.path == "/busy" and seen[self.path] == 1:
            return self._send(503, {"title": "Service Unavailable", "status": 503,
                                    "detail": "Redis is unavailable"}, {"Retry-After": "0"})
        if self.path == "/missing":
            return self._send(404, {"title": "Not Found", "status": 404, "detail": "no such p"})
        if self.path == "/empty":
            return self._send(204, None)
        self._send(200, {"method": self.command, "path": self.path, "body": body,
                         "auth": self.headers.get("Authorization")})

    def _send(self, status: int, document: object, headers: dict | None = None) -> None:
        data = b"" if document is None else json.dumps(document).encode()
        self.send_response(status)
        kind = "application/problem+json" if status >= 400 else "application/json"
        for name, value in {"Content-Type": kind, "Content-Length": str(len(data)),
                            **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


def _serve(port: int = 0) -> ThreadingHTTPServer:
    httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    httpd.seen, httpd.keys = Counter(), []
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


@pytest.fixture
def server():
    httpd = _serve()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _url(httpd: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{httpd.server_address[1]}"


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    """The client's waits, recorded instead of slept."""
    slept: list[float] = []
    monkeypatch.setattr(client_module.time, "sleep", slept.append)
    return slept


def test_json_in_and_out_with_the_token_on_one_connection(server):
    """Bodies go out as JSON with the bearer token; answers come back decoded, 204 as None."""
    with Client(_url(server), "tok") as api:
        answer = api.put("/v1/experts/e0", {"capacity": 3})
        assert answer == {"method": "PUT", "path": "/v1/experts/e0", "body": {"capacity": 3},
                          "auth": "Bearer tok"}
        assert api.get("/ok")["method"] == "GET"
        assert api.post("/empty", b'{"raw": 1}') is None


def test_an_error_answer_raises_api_error_with_the_problem(server):
    """A 4xx raises ApiError carrying the problem document's status, title and detail."""
    with Client(_url(server), "tok") as api, pytest.raises(ApiError) as caught:
        api.get("/missing")
    error = caught.value
    assert (error.status, error.title, error.detail) == (404, "Not Found", "no such p")
    assert isinstance(error, ClientError)


def test_writes_carry_an_idempotency_key_and_reads_do_not(server):
    """POST gets a fresh key per request unless the caller gives one; GET and PUT none."""
    with Client(_url(server), "tok") as api:
        api.post("/a", {})
        api.post("/b", {})
        api.post("/c", {}, headers={"Idempotency-Key": "mine"})
        api.get("/d")
        api.put("/e", {})
    keys = dict(server.keys)
    assert keys["/a"] and keys["/b"] and keys["/a"] != keys["/b"]
    assert keys["/c"] == "mine"
    assert keys["/d"] is None and keys["/e"] is None


def test_a_503_with_retry_after_is_retried_with_the_same_key(server, sleeps):
    """The server's Retry-After is waited; the retry carries the first attempt's key."""
    with Client(_url(server), "tok") as api:
        answer = api.post("/busy", {"x": 1})
    assert answer["body"] == {"x": 1} and sleeps == [0.0]
    first, second = [key for path, key in server.keys if path == "/busy"]
    assert first == second


def test_a_lost_label_answer_is_replayed_with_the_same_key(server, sleeps):
    """The label route deduplicates by Idempotency-Key, so a lost answer is asked again."""
    with Client(_url(server), "tok") as api:
        answer = api.post(LABEL, {"label": "pos"})
    assert answer["body"] == {"label": "pos"}
    keys = [key for path, key in server.keys if path == LABEL]
    assert len(keys) == 2 and keys[0] == keys[1] and len(sleeps) == 1


def test_a_lost_claim_is_not_replayed(server, sleeps):
    """A POST the server does not deduplicate may have worked: it is not sent twice."""
    with Client(_url(server), "tok") as api, pytest.raises(ClientError, match="cannot reach"):
        api.post(NEXT, {"expert_id": "e0"})
    assert server.seen[NEXT] == 1 and sleeps == []


def test_a_refused_connection_is_retried_until_the_server_is_up(sleeps, monkeypatch):
    """Connections refused while the server starts: retried with backoff, then answered."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started: list[ThreadingHTTPServer] = []

    def wait(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:  # up after the second retry's wait
            started.append(_serve(port))

    monkeypatch.setattr(client_module.time, "sleep", wait)
    try:
        with Client(f"http://127.0.0.1:{port}", "tok") as api:
            assert api.get("/ok")["path"] == "/ok"
    finally:
        for httpd in started:
            httpd.shutdown()
            httpd.server_close()
    assert sleeps == [0.25, 0.5]


def test_an_unreachable_server_is_a_client_error_after_the_retries(sleeps):
    """Nobody listening: ``retries`` waits that double, then a ClientError with a hint."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ClientError, match="is 'taskrank serve' running there"):
        Client(f"http://127.0.0.1:{port}", "tok", retries=3).get("/ok")
    assert sleeps == [0.25, 0.5, 1.0]


def test_send_answers_what_happened_without_retry_or_key(server, sleeps):
    """``send`` makes one exchange: a 503 comes back as it is, with no key added;
    ``start`` + ``finish`` split the same exchange around other work."""
    with Client(_url(server), "tok") as api:
        status, headers, body = api.send("POST", "/busy", {})
        assert status == 503 and headers["retry-after"] == "0" and body["status"] == 503
        assert server.keys == [("/busy", None)] and sleeps == []
        api.start("POST", "/busy", {"y": 2}, {"Idempotency-Key": "k"})
        answer = api.finish()
    assert answer.status == 200 and answer.body["body"] == {"y": 2}
    assert server.keys[-1] == ("/busy", "k")


def test_clone_talks_to_the_same_server_on_its_own_connection(server):
    """A clone (one per thread) keeps the URL, token and options."""
    api = Client(_url(server), "tok", timeout=5, retries=1)
    with api.clone() as copy:
        assert copy is not api and copy.get("/ok")["auth"] == "Bearer tok"
    assert (copy._timeout, copy._retries) == (5, 1)


def test_a_url_without_a_host_is_refused():
    with pytest.raises(ClientError, match="must look like"):
        Client("ftp://", "tok")
