"""Request parsing: JSON bodies and query parameters, with problem details that say what to fix."""

from __future__ import annotations

import json

from flask import request
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge, UnsupportedMediaType

from taskrank.queue.validation import fail
from taskrank.server.context import settings


def json_body() -> object:
    """The request's JSON document (400 when it does not parse, 415 when it is not JSON,
    413 when it is larger than ``max_body_bytes``)."""
    if not request.is_json:
        raise UnsupportedMediaType("send the body as JSON with 'Content-Type: application/json'")
    limit = settings().max_body_bytes
    too_large = (f"the body is larger than {limit} bytes; send at most {limit} bytes per "
                 "request (TASKRANK_MAX_BODY_BYTES), e.g. split the batch")
    if request.content_length is not None and request.content_length > limit:
        raise RequestEntityTooLarge(too_large)
    try:
        data = request.get_data(cache=True)
    except RequestEntityTooLarge:  # a streamed body without Content-Length
        raise RequestEntityTooLarge(too_large) from None
    try:
        return parse_json(data)
    except _NotJsonNumber as error:
        raise BadRequest(f"the body is not valid JSON: {error}") from None
    except RecursionError:  # Python's parser gives up on very deep nesting
        raise BadRequest("the body nests arrays or objects too deeply") from None
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
        raise BadRequest(f"the body is not valid JSON ({str(error)[:200]}); check quotes, "
                         "commas and brackets") from None


def parse_json(data: bytes | str) -> object:
    """Strict JSON: raises ValueError (also for NaN and Infinity) or RecursionError.

    Python's parser takes NaN and Infinity, which are not JSON: a NaN probability or
    payload value would be stored and later sent back as invalid JSON.
    """
    return json.loads(data, parse_constant=_refuse_constant)


class _NotJsonNumber(ValueError):
    pass


def _refuse_constant(name: str) -> object:
    raise _NotJsonNumber(f"{name} is not a JSON number; send finite numbers only")


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
