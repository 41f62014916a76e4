"""Liveness and readiness probes."""

from __future__ import annotations

from flask import Blueprint, Response

from taskrank.queue.readiness import OK, readiness
from taskrank.server.context import redis_client, settings
from taskrank.server.errors import problem

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def get_healthz() -> tuple[dict, int]:
    """The process is alive (does not touch Redis)."""
    return {"status": "ok"}, 200


@bp.get("/readyz")
def get_readyz() -> tuple[dict, int] | Response:
    """200 ``ready`` or ``degraded`` (a part other than Redis is down) while Redis answers,
    else a 503 problem; ``parts`` says how each part is (queue/readiness.py)."""
    parts = readiness(redis_client(), settings().queue_name)
    if parts["redis"]["status"] != OK:
        return problem(503, "Service unavailable",
                       f"the data store (Redis) is not answering ({parts['redis']['detail']}); "
                       "retry in a moment", "redis-unavailable", headers={"Retry-After": "1"},
                       parts=parts)
    ready = all(part["status"] == OK for part in parts.values())
    return {"status": "ready" if ready else "degraded", "parts": parts}, 200
