"""Request parsing: JSON bodies and query parameters, with problem details that say what to fix."""

from __future__ import annotations

from flask import request
from werkzeug.exceptions import BadRequest, UnsupportedMediaType

from taskrank.queue.validation import fail


def json_body() -> object:
    """The request's JSON document (400 when it does not parse, 415 when it is not JSON)."""
    if not request.is_json:
        raise UnsupportedMediaType("send the body as JSON with 'Content-Type: application/json'")
    try:
        return request.get_json()
    except BadRequest:
        raise BadRequest("the body is not valid JSON; check quotes, commas and brackets") from None


def json_object() -> dict:
    body = json_body()
    if not isinstance(body, dict):
        raise fail("body", f"must be a JSON object, got {type(body).__name__}")
    return body


def query_int(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise fail(name, f"must be an integer from {low} to {high}, got {raw!r}"[:200]) from None
    if not low <= value <= high:
        raise fail(name, f"must be an integer from {low} to {high}, got {value}")
    return value


def query_bool(name: str) -> bool:
    raw = request.args.get(name, "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise fail(name, f"must be true or false, got {raw!r}"[:200])
    return raw in ("true", "1")
