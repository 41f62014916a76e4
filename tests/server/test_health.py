"""Liveness and readiness probes."""

from __future__ import annotations

from taskrank.queue.embedded import free_port
from taskrank.queue.settings import Settings
from taskrank.server import create_app


def test_healthz_answers_without_auth(client):
    """/healthz is 200 with no token and no Redis round trip."""
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok"}


def test_readyz_when_redis_answers(client):
    """/readyz is 200 while Redis answers."""
    assert client.get("/readyz").status_code == 200


def test_readyz_when_redis_is_down_is_503_problem(tmp_path):
    """/readyz with no Redis behind it is a 503 problem document, not a traceback."""
    settings = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    response = create_app(settings).test_client().get("/readyz")
    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"
    body = response.json
    assert body["status"] == 503 and "Redis" in body["detail"]
    assert response.headers["Retry-After"] == "1"
    assert "Traceback" not in response.get_data(as_text=True)


def test_unknown_route_is_404_problem(client):
    """An unknown path is a 404 problem document."""
    response = client.get("/no/such/thing")
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
    assert response.json["title"] == "Not Found"
