"""The two busiest routes (``tasks/next`` and ``label``): each written once, served by two
thin adapters.

A hot route is a plain handler, ``(state, principal, arguments, body) -> Answer``, declared
by a ``HotRoute`` with everything both adapters need: the URL rule, the role it requires,
the request headers it reads, and (from the rule) the metrics label. ``encode`` turns an
answer into status, headers and bytes for both adapters, so they answer byte for byte
alike.

- ``flask_view`` registers the handler as an ordinary Flask view (auth and role through
  ``require``, body through ``json_object``, errors through the app's error handlers).
- ``HotPath`` is WSGI middleware in front of the Flask app. Flask's request machinery
  (request context, routing, proxies, response objects, hooks) costs about as much CPU as
  everything these two requests do in Redis, so the middleware calls the same handler
  without it, for requests with a known token of the route's role and a small JSON
  object as body. Every other request goes to the Flask app untouched. When the handler
  raises (a refusal, a 409, a Redis error), the exception goes to the Flask app with the
  request, and the view raises it there instead of running the handler a second time:
  the app's error handlers and metrics answer it, and nothing is written twice.

Turn the middleware off with ``TASKRANK_FAST_PATH=0``.
"""

from __future__ import annotations

import io
import re
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property

from flask import Blueprint, Flask, Response, current_app, request
from werkzeug.http import HTTP_STATUS_CODES

from taskrank.queue.tokens import Principal
from taskrank.queue.validation import holds_bad_number, parse_json
from taskrank.server.auth import bearer_token, current_principal, known_principal, require
from taskrank.server.context import AppState, state
from taskrank.server.metrics import template
from taskrank.server.validation import json_object

MAX_BODY = 4096  # the hot bodies are tens of bytes; anything bigger takes the full path
EMPTY_TYPE = "text/html; charset=utf-8"  # what Flask sends on a body-less answer (204)
HANDED_OVER = "taskrank.hot.error"  # environ key: the handler's exception, for the app


@dataclass(frozen=True)
class Answer:
    """What a hot handler answers: status, JSON document (None: no body), extra headers."""

    status: int
    document: dict | None = None
    headers: tuple[tuple[str, str], ...] = ()


# (state, principal, arguments, body) -> answer.  ``arguments`` holds the URL's variables
# and the declared request headers (None when absent).  ``body`` reads the JSON object
# sent: a call, so each handler decides which of its checks come before the body's.
Handler = Callable[[AppState, Principal, dict, Callable[[], dict]], Answer]


@dataclass(frozen=True)
class HotRoute:
    """One hot route, as both adapters serve it (method POST)."""

    rule: str  # Flask URL rule, e.g. "/v1/tasks/<tid>/label"
    endpoint: str  # view name in its blueprint (the OpenAPI document refers to it)
    role: str  # the least role allowed (roles nest)
    handler: Handler
    headers: tuple[str, ...] = ()  # request headers passed to the handler in ``arguments``
    body_optional: bool = False  # no body at all reads as {}

    @cached_property
    def metrics_route(self) -> str:
        """The route label of its request metrics, as Flask's hook writes it."""
        return template(self.rule)

    @cached_property
    def pattern(self) -> re.Pattern:
        """The rule as a regular expression (Flask's default converter: no slash)."""
        parts = re.split(r"<([^<>:]+)>", self.rule)  # literal, name, literal, ...
        if any("<" in literal or ">" in literal for literal in parts[::2]):
            raise ValueError(f"only <name> variables are supported: {self.rule}")
        return re.compile("".join(re.escape(part) if index % 2 == 0 else f"(?P<{part}>[^/]+)"
                                  for index, part in enumerate(parts)))


def encode(app: Flask, answer: Answer) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and body bytes of ``answer``, for both adapters."""
    if answer.document is None:
        return answer.status, [("Content-Type", EMPTY_TYPE), *answer.headers], b""
    # As flask.json.provider.DefaultJSONProvider.response (compact out of debug mode).
    provider = app.json
    compact = provider.compact if provider.compact is not None else not app.debug
    options = {"separators": (",", ":")} if compact else {"indent": 2}
    data = f"{provider.dumps(answer.document, **options)}\n".encode()
    return answer.status, [("Content-Type", "application/json"),
                           ("Content-Length", str(len(data))), *answer.headers], data


# --- Flask adapter ----------------------------------------------------------------------------
def add_flask_view(blueprint: Blueprint, route: HotRoute) -> Callable[..., Response]:
    """Register ``route`` on ``blueprint`` as an ordinary view; the view."""
    view = flask_view(route)
    blueprint.add_url_rule(route.rule, route.endpoint, view, methods=["POST"])
    return view


def flask_view(route: HotRoute) -> Callable[..., Response]:
    """The Flask view of ``route``: its role checked, its handler's answer encoded."""
    def view(**variables: str) -> Response:
        error = request.environ.pop(HANDED_OVER, None)
        if error is not None:  # HotPath ran the handler already: answer what it raised
            raise error
        arguments = {**variables, **{name: request.headers.get(name) for name in route.headers}}
        answer = route.handler(state(), current_principal(), arguments,
                               lambda: _flask_body(route))
        status, headers, data = encode(current_app, answer)
        return Response(data or None, status=status, headers=headers)

    view.__name__ = view.__qualname__ = route.endpoint
    return require(route.role)(view)


def _flask_body(route: HotRoute) -> dict:
    if route.body_optional and not request.content_length:
        return {}
    return json_object()


# --- WSGI adapter -----------------------------------------------------------------------------
class HotPath:
    """WSGI middleware around ``app.wsgi_app``; see the module docstring."""

    def __init__(self, app: Flask, routes: Iterable[HotRoute]) -> None:
        # A weak reference: app -> middleware -> app would keep every app (and its metrics
        # buffer) alive until the garbage collector runs.
        self.app = weakref.proxy(app)
        self.flask_wsgi_app = type(app).wsgi_app
        self.state: AppState = app.extensions["taskrank"]
        self.recorder = app.extensions["taskrank.metrics"]
        self.routes = tuple(routes)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        # Non-ASCII paths go to Flask, which decodes them (PATH_INFO holds latin-1 bytes).
        if environ.get("REQUEST_METHOD") == "POST" and path.isascii():
            for route in self.routes:
                match = route.pattern.fullmatch(path)
                if match:
                    return self._serve(environ, start_response, route, match.groupdict())
        return self.flask_wsgi_app(self.app, environ, start_response)

    def _serve(self, environ: dict, start_response: Callable, route: HotRoute,
               variables: dict[str, str]) -> Iterable[bytes]:
        started = time.perf_counter()
        try:
            principal, body = self._principal(environ, route), _body(environ)
        except Exception:  # e.g. Redis down: not swallowed, the app meets it again and answers
            principal = body = None
        if principal is None or body is None:  # the app answers it, and says why
            return self.flask_wsgi_app(self.app, environ, start_response)
        arguments = {**variables, **{name: environ.get(_environ_key(name))
                                     for name in route.headers}}
        try:
            answer = route.handler(self.state, principal, arguments, lambda: body)
        except Exception as error:  # not swallowed: the app answers it (see flask_view)
            environ[HANDED_OVER] = error
            return self.flask_wsgi_app(self.app, environ, start_response)
        status, headers, data = encode(self.app, answer)
        start_response(f"{status} {HTTP_STATUS_CODES[status].upper()}", headers)  # as werkzeug
        self.recorder.observe("POST", route.metrics_route, status, time.perf_counter() - started)
        return [data]

    def _principal(self, environ: dict, route: HotRoute) -> Principal | None:
        """The principal of a known token of the route's role (None: not for this path)."""
        token = bearer_token(environ.get("HTTP_AUTHORIZATION", ""))
        principal = known_principal(self.state, token) if token else None
        return principal if principal is not None and principal.allows(route.role) else None


def _body(environ: dict) -> dict | None:
    """The small JSON object sent (None: not one); the body is put back for the app."""
    mimetype = environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()
    length = environ.get("CONTENT_LENGTH", "")
    if mimetype != "application/json" or not length.isdigit() or not (
            0 < int(length) <= MAX_BODY):
        return None
    raw = environ["wsgi.input"].read(int(length))
    environ["wsgi.input"] = io.BytesIO(raw)
    try:
        body = parse_json(raw)
    except (ValueError, RecursionError):  # NaN/Infinity, nesting too deep: the app says why
        return None
    # A number beyond the float range (1e400): the app names its field.
    return body if isinstance(body, dict) and not holds_bad_number(body) else None


def _environ_key(header: str) -> str:
    return "HTTP_" + header.upper().replace("-", "_")
