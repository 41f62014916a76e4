"""A WSGI fast path for the two busiest requests: ``POST /v1/projects/{pid}/tasks/next``
and ``POST /v1/tasks/{tid}/label``.

Flask's request machinery (request context, routing, proxies, response objects, hooks)
costs about as much CPU as everything these two requests do in Redis.  This middleware
serves their plain success answers (200/204 and 201) itself, with the same checks as the
views (``server/auth.py``, ``server/tasks.py``) and the same queue calls.

Anything else goes to the Flask app, which answers it as it always does:
- before the write (claim or label script), any refusal (no or unknown token, bad JSON or
  field, unknown project/expert/task, ...) hands over the request as it came (its body
  put back), so every error stays the app's problem+json;
- after the write, an outcome other than success (a 409 for a lease that is not open, an
  error raised by the write) is handed over *with* the write's outcome
  (``tasks.WRITE_OUTCOME``): the view answers from it instead of writing a second time.

Turn it off with ``TASKRANK_FAST_PATH=0``.
"""

from __future__ import annotations

import contextlib
import io
import re
import time
import weakref
from collections.abc import Callable, Iterable, Iterator

from flask import Flask

from taskrank.queue import tasks
from taskrank.queue.tokens import Principal
from taskrank.queue.validation import check_id
from taskrank.server.auth import bearer_token, known_principal
from taskrank.server.context import AppState, cached_project
from taskrank.server.metrics import template
from taskrank.server.tasks import (
    WRITE_OUTCOME,
    finish_label,
    label_body,
    label_inputs,
    next_task_expert,
    task_project,
)
from taskrank.server.validation import parse_json

MAX_BODY = 4096  # the hot bodies are tens of bytes; anything bigger takes the full path
STATUS_LINES = {200: "200 OK", 201: "201 CREATED", 204: "204 NO CONTENT"}  # as werkzeug

Answer = tuple[int, object]  # HTTP status, JSON document (None: no body)


class HandOver(Exception):
    """The fast path does not answer this request; the Flask app does."""


class HotPath:
    """WSGI middleware around ``app.wsgi_app``; see the module docstring."""

    def __init__(self, app: Flask) -> None:
        # A weak reference: app -> middleware -> app would keep every app (and its metrics
        # buffer) alive until the garbage collector runs.
        self.app = weakref.proxy(app)
        self.flask_wsgi_app = type(app).wsgi_app
        self.state: AppState = app.extensions["taskrank"]
        self.recorder = app.extensions["taskrank.metrics"]
        # Plain functions, not bound methods: the middleware must not refer to itself (a
        # cycle would keep the app's metrics buffer alive past the app).
        self.routes: list[tuple[re.Pattern, Callable[..., Answer], str]] = [
            (re.compile(r"/v1/projects/([^/]+)/tasks/next"), HotPath.next_task,
             template("/v1/projects/<pid>/tasks/next")),
            (re.compile(r"/v1/tasks/([^/]+)/label"), HotPath.label,
             template("/v1/tasks/<tid>/label"))]

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") == "POST":
            path = environ.get("PATH_INFO", "")
            for pattern, serve, route in self.routes:
                match = pattern.fullmatch(path)
                if match:
                    return self._serve(environ, start_response, serve, match.group(1), route)
        return self.flask_wsgi_app(self.app, environ, start_response)

    def _serve(self, environ: dict, start_response: Callable,
               serve: Callable[..., Answer], arg: str,
               route: str) -> Iterable[bytes]:
        started = time.perf_counter()
        try:
            body = self._body(environ)
            status, document = serve(self, environ, arg, body)
        except HandOver:
            return self.flask_wsgi_app(self.app, environ, start_response)
        data = self._json(document) if document is not None else b""
        headers = ([("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
                   if document is not None else [("Content-Type", "text/html; charset=utf-8")])
        start_response(STATUS_LINES[status], headers)
        self.recorder.observe("POST", route, status, time.perf_counter() - started)
        return [data]

    def _body(self, environ: dict) -> dict:
        """The JSON object sent; the body is put back in ``environ`` for a hand-over."""
        mimetype = environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()
        length = environ.get("CONTENT_LENGTH", "")
        if mimetype != "application/json" or not length.isdigit() or not (
                0 < int(length) <= MAX_BODY):
            raise HandOver
        raw = environ["wsgi.input"].read(int(length))
        environ["wsgi.input"] = io.BytesIO(raw)
        try:
            body = parse_json(raw)
        except (ValueError, RecursionError):  # NaN/Infinity, nesting too deep: the app says why
            raise HandOver from None
        if not isinstance(body, dict):
            raise HandOver
        return body

    def _principal(self, environ: dict) -> Principal:
        token = bearer_token(environ.get("HTTP_AUTHORIZATION", ""))
        principal = known_principal(self.state, token) if token else None
        if principal is None:  # every role may use both routes, so only a token is needed
            raise HandOver
        return principal

    def next_task(self, environ: dict, pid: str, body: dict) -> Answer:
        with _refusals_hand_over():
            principal = self._principal(environ)
            project = cached_project(check_id(pid, "project id"), self.state)
            expert = next_task_expert(self.state, principal, body)
        with _outcome_kept(environ):
            task = tasks.claim(self.state.redis, project, expert,
                               self.state.settings.claim_depth)
        return (200, {"task": task}) if task is not None else (204, None)

    def label(self, environ: dict, tid: str, body: dict) -> Answer:
        key = environ.get("HTTP_IDEMPOTENCY_KEY")
        with _refusals_hand_over():
            principal = self._principal(environ)
            project = task_project(self.state, principal, tid)
            seconds = label_inputs(body, key)
        with _outcome_kept(environ):
            status, answer = tasks.submit_label(self.state.redis, project, tid, body["label"],
                                                seconds, key)
        environ[WRITE_OUTCOME] = ((status, answer),)  # for a hand-over from here on
        if status != 201:
            raise HandOver
        with _refusals_hand_over():  # idempotent: the view runs it again after a failure
            finish_label(self.state, project, answer)
        return 201, label_body(answer)

    def _json(self, document: object) -> bytes:
        # As flask.json.provider.DefaultJSONProvider.response (compact out of debug mode).
        provider = self.app.json
        compact = provider.compact if provider.compact is not None else not self.app.debug
        options = {"separators": (",", ":")} if compact else {"indent": 2}
        return f"{provider.dumps(document, **options)}\n".encode()


@contextlib.contextmanager
def _refusals_hand_over() -> Iterator[None]:
    """Any error before the write: the app runs the request again and answers it."""
    try:
        yield
    except HandOver:
        raise
    except Exception as error:  # not swallowed: the app meets it again and answers it
        raise HandOver from error


@contextlib.contextmanager
def _outcome_kept(environ: dict) -> Iterator[None]:
    """An error raised by the write: the app answers with it, without writing again."""
    try:
        yield
    except Exception as error:
        environ[WRITE_OUTCOME] = error
        raise HandOver from error
