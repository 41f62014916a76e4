"""Every error leaves the server as an RFC 9457 ``application/problem+json`` document."""

from __future__ import annotations

import logging

import redis
from flask import Flask, Response, json, request
from werkzeug.exceptions import HTTPException

from taskrank.queue.connection import UNAVAILABLE
from taskrank.queue.exceptions import TaskrankError

PROBLEM_TYPE = "https://taskrank.dev/problems/"
log = logging.getLogger(__name__)


def problem(status: int, title: str, detail: str, slug: str | None = None,
            headers: dict[str, str] | None = None, **extra: object) -> Response:
    """A problem document; ``slug`` names a taskrank-specific problem type."""
    body = {"type": PROBLEM_TYPE + slug if slug else "about:blank", "title": title,
            "status": status, "detail": detail, "instance": request.path}
    body.update({key: value for key, value in extra.items() if value is not None})
    response = Response(json.dumps(body), status=status, mimetype="application/problem+json")
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _slug(error: TaskrankError) -> str:
    name = type(error).__name__.removesuffix("Error")
    return "".join("-" + c.lower() if c.isupper() else c for c in name).lstrip("-")


def handle_domain(error: TaskrankError) -> Response:
    headers = None if error.retry_after is None else {"Retry-After": str(error.retry_after)}
    return problem(error.status, error.title, error.detail, _slug(error), headers,
                   **error.extra)


def handle_http(error: HTTPException) -> Response:
    # Keep the headers the exception carries (Allow on 405, WWW-Authenticate on 401).
    headers = {name: value for name, value in error.get_headers()
               if name.lower() != "content-type"}
    return problem(error.code or 500, error.name, error.description or error.name,
                   headers=headers)


def handle_redis_down(error: Exception) -> Response:
    log.warning("Redis unavailable: %s: %s", type(error).__name__, error)
    detail = "the data store (Redis) is not answering; retry in a moment"
    if not isinstance(error, redis.ConnectionError | redis.TimeoutError):
        detail = (f"the data store cannot serve this now: a Redis master is failing over "
                  f"or unreachable ({type(error).__name__}); retry in a moment")
    return problem(503, "Service unavailable", detail, "redis-unavailable",
                   headers={"Retry-After": "1"})


def handle_unexpected(error: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.path)
    return problem(500, "Internal server error",
                   "the server failed on this request; it has been logged", "internal")


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(TaskrankError, handle_domain)
    app.register_error_handler(HTTPException, handle_http)
    for error in UNAVAILABLE:  # BusyLoadingError is a ConnectionError
        app.register_error_handler(error, handle_redis_down)
    app.register_error_handler(Exception, handle_unexpected)
