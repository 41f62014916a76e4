"""The error contract on the wire, against a real gunicorn (as ``taskrank serve`` runs the
app): a chunked body over the limit, a number beyond the float range and a cursor beyond
64 bits, sent as raw HTTP."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys

import pytest
import redis

from taskrank.queue import keys as K
from taskrank.queue.embedded import free_port
from taskrank.queue.settings import Settings
from taskrank.queue.tokens import create_token
from tests.waits import wait_for

LIMIT = 2000  # TASKRANK_MAX_BODY_BYTES of the served app


ADMIN = "tr_admin-wire"  # TASKRANK_ADMIN_TOKEN of the served app


def _up(port: int) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", "/healthz")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


@pytest.fixture
def gunicorn(settings: Settings, r: redis.Redis, tmp_path):
    """One gunicorn worker serving taskrank on a free port (stopped with SIGTERM), with a
    project p1; yields (port, platform token)."""
    port = free_port()
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("TASKRANK_")}
    env |= {"TASKRANK_REDIS_URL": settings.redis_url, "TASKRANK_DATA_DIR": str(tmp_path),
            "TASKRANK_MAX_BODY_BYTES": str(LIMIT), "TASKRANK_ADMIN_TOKEN": ADMIN}
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-w", "1", "-b", f"127.0.0.1:{port}",
         "taskrank.server.wsgi:app"], env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE)
    try:
        wait_for(lambda: process.poll() is not None or _up(port), 60, "gunicorn to answer")
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        assert send(port, ADMIN, "POST", "/v1/projects",
                    json.dumps({"id": "p1", "labels": ["neg", "pos"]}).encode())[0] == 201
        yield port, create_token(r, "platform")
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stderr.close()


def send(port: int, token: str, method: str, path: str, body: bytes | None = None,
         chunked: bool = False) -> tuple[int, str, dict]:
    """(status, media type, JSON document) of one request on a fresh connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    if chunked:  # 1 KB chunks, no Content-Length
        headers["Transfer-Encoding"] = "chunked"
        body = iter([body[start:start + 1024] for start in range(0, len(body), 1024)])
    connection.request(method, path, body=body, headers=headers, encode_chunked=chunked)
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, response.getheader("Content-Type"), json.loads(data)


def batch(size: int) -> bytes:
    """An items body of exactly ``size`` bytes (one item; its payload pads it)."""
    empty = json.dumps({"items": [{"id": "a", "predictions": {"m": [0.5, 0.5]},
                                   "payload": {"text": ""}}]})
    return empty.replace('"text": ""', '"text": "' + "x" * (size - len(empty)) + '"').encode()


def test_a_chunked_body_over_the_limit_is_413(gunicorn, r):
    """A chunked body one byte over TASKRANK_MAX_BODY_BYTES is a 413 problem naming the
    setting (it was a 400 'not valid JSON'); one of exactly the limit is stored."""
    port, token = gunicorn
    status, media, problem = send(port, token, "POST", "/v1/projects/p1/items",
                                  batch(LIMIT + 1), chunked=True)
    assert (status, media) == (413, "application/problem+json"), problem
    assert "TASKRANK_MAX_BODY_BYTES" in problem["detail"]
    assert r.scard(K.items_key("p1")) == 0
    status, _, answer = send(port, token, "POST", "/v1/projects/p1/items", batch(LIMIT),
                             chunked=True)
    assert (status, answer["created"]) == (200, 1), answer


def test_1e400_and_a_cursor_beyond_64_bits_are_refused(gunicorn, r):
    """1e400 in a payload is a 422 naming the field (not stored as Infinity); a cursor
    beyond 64 bits is a 400 naming the cursor's form (it was a 500)."""
    port, token = gunicorn
    status, media, problem = send(
        port, token, "POST", "/v1/projects/p1/items",
        b'{"items": [{"id": "a", "predictions": {"m": [0.5, 0.5]}, "payload": {"x": 1e400}}]}')
    assert (status, media) == (422, "application/problem+json"), problem
    assert "payload.x" in problem["detail"] and "float range" in problem["detail"]
    assert r.scard(K.items_key("p1")) == 0
    status, media, problem = send(port, token, "GET",
                                  "/v1/projects/p1/labels?cursor=99999999999999999999-0")
    assert (status, media) == (400, "application/problem+json"), problem
    assert "<milliseconds>-<sequence>" in problem["detail"]
