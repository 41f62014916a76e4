"""Liveness and readiness probes."""

from __future__ import annotations

import socket
import subprocess
import sys

from taskrank.queue.abandoned import worker_name
from taskrank.queue.connection import connect_rq
from taskrank.queue.embedded import free_port
from taskrank.queue.settings import Settings
from taskrank.queue.worker import TaskWorker, task_queue
from taskrank.server import create_app


def test_healthz_answers_without_auth(client):
    """/healthz is 200 with no token and no Redis round trip."""
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok"}


def test_readyz_is_degraded_without_a_live_worker_and_ready_with_one(client, settings, r):
    """Redis answering, no RQ worker (or only one known dead): 200 ``degraded``, the workers
    part down; once a live worker registers: 200 ``ready``."""
    queue = task_queue(settings, connect_rq(settings))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    TaskWorker([queue], name=f"{socket.gethostname()}.{gone.pid}.1",
               connection=queue.connection).register_birth()
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json == {"status": "degraded", "parts": {
        "redis": {"status": "ok"}, "workers": {
            "status": "down", "running": 0, "detail": response.json["parts"]["workers"]["detail"]}}}
    assert "retrains" in response.json["parts"]["workers"]["detail"]
    TaskWorker([queue], name=worker_name(), connection=queue.connection).register_birth()
    assert client.get("/readyz").json == {"status": "ready", "parts": {
        "redis": {"status": "ok"}, "workers": {"status": "ok", "running": 1}}}


def test_readyz_when_redis_is_down_is_503_problem(tmp_path):
    """/readyz with no Redis behind it is a 503 problem document naming the part that is
    down, not a traceback."""
    settings = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    response = create_app(settings).test_client().get("/readyz")
    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"
    body = response.json
    assert body["status"] == 503 and "Redis" in body["detail"]
    assert body["parts"]["redis"]["status"] == "down"
    assert body["parts"]["workers"]["status"] == "unknown"
    assert response.headers["Retry-After"] == "1"
    assert "Traceback" not in response.get_data(as_text=True)


def test_unknown_route_is_404_problem(client):
    """An unknown path is a 404 problem document."""
    response = client.get("/no/such/thing")
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
    assert response.json["title"] == "Not Found"
