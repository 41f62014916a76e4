"""Liveness and readiness probes."""

from __future__ import annotations

from flask import Blueprint

from taskrank.server.context import redis_client

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def get_healthz() -> tuple[dict, int]:
    """The process is alive (does not touch Redis)."""
    return {"status": "ok"}, 200


@bp.get("/readyz")
def get_readyz() -> tuple[dict, int]:
    """Redis answers; a Redis error becomes a 503 problem via server/errors.py."""
    redis_client().ping()
    return {"status": "ready"}, 200
