"""Request parsing: JSON bodies and query parameters, with problem details that say what to fix."""

from __future__ import annotations

from flask import request
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge, UnsupportedMediaType

from taskrank.queue.validation import (
    NotJsonNumberError,
    check_json_numbers,
    check_keys,
    fail,
    parse_json,
)
from taskrank.server.context import settings


def json_body(check_numbers: bool = True) -> object:
    """The request's JSON document (400 when it does not parse, 415 when it is not JSON,
    413 when it is larger than ``max_body_bytes``, 422 naming the field of a number beyond
    the float range unless ``check_numbers`` is False: the caller checks them itself)."""
    if not request.is_json:
        raise UnsupportedMediaType("send the body as JSON with 'Content-Type: application/json'")
    limit = settings().max_body_bytes
    too_large = (f"the body is larger than {limit} bytes; send at most {limit} bytes per "
                 "request (TASKRANK_MAX_BODY_BYTES), e.g. split the batch")
    if request.content_length is not None and request.content_length > limit:
        raise RequestEntityTooLarge(too_large)
    try:
        data = request.get_data(cache=True)
        if request.content_length is None and len(data) >= limit and _more_sent():
            raise RequestEntityTooLarge(too_large)
    except RequestEntityTooLarge:  # a streamed body without Content-Length
        raise RequestEntityTooLarge(too_large) from None
    try:
        body = parse_json(data)
    except NotJsonNumberError as error:
        raise BadRequest(f"the body is not valid JSON: {error}") from None
    except RecursionError:  # Python's parser gives up on very deep nesting
        raise BadRequest("the body nests arrays or objects too deeply") from None
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
        raise BadRequest(f"the body is not valid JSON ({str(error)[:200]}); check quotes, "
                         "commas and brackets") from None
    if check_numbers:
        check_json_numbers(body)
    return body


def _more_sent() -> bool:
    """Whether a streamed (chunked) body goes on past what was read: werkzeug stops reading
    it at the limit without saying so, which would parse a truncated document."""
    return bool(request.environ["wsgi.input"].read(1))


def json_object(check_numbers: bool = True) -> dict:
    """The request's JSON object (see ``json_body``)."""
    body = json_body(check_numbers)
    if not isinstance(body, dict):
        raise fail("body", f"must be a JSON object, got {type(body).__name__}")
    return body


def batch_list(key: str, what: str) -> list:
    """The non-empty list under ``key`` of a batch body ``{key: [...]}`` of at most
    ``TASKRANK_MAX_BATCH_ITEMS`` ``what`` (else 422 / 413).  Numbers are not checked here:
    each entry is, so one bad entry does not refuse the batch."""
    body = json_object(check_numbers=False)
    check_keys(body, "", {key}, {key})
    entries = body[key]
    if not isinstance(entries, list) or not entries:
        raise fail(key, f"must be a non-empty list of {what} objects")
    limit = settings().max_batch_items
    if len(entries) > limit:
        raise RequestEntityTooLarge(f"{len(entries)} {what}s in one request; send at most "
                                    f"{limit} per request (TASKRANK_MAX_BATCH_ITEMS)")
    return entries


def query_names(allowed: set[str]) -> None:
    """Refuse a query parameter the route does not take (usually a typo: ``aggregate=true``
    would otherwise export every label), as unknown body fields are refused."""
    unknown = sorted(set(request.args) - allowed)
    if unknown:
        raise fail(unknown[0][:100], "unknown query parameter; expected one of "
                                     f"{sorted(allowed)}")


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
