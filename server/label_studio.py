"""Label Studio's ML backend protocol, one backend per project at ``/ls/<pid>``.

In Label Studio: Settings -> Model -> Connect Model, URL ``http://HOST:PORT/ls/<pid>``.
Label Studio appends ``health``, ``setup``, ``predict`` and ``webhook`` (the routes of its
``label_studio_ml`` SDK, ``label_studio_ml/api.py``) and, once connected, sends every
project event to ``<url>/webhook``.

A platform token authenticates each request in any of three forms: Label Studio's
"Basic Authentication" (any user name, the token as password; ``http://taskrank:TOKEN@HOST
/ls/<pid>`` puts it in the URL, so the webhook Label Studio creates carries it too),
``Authorization: Token <token>`` or ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import base64
import binascii
import functools
import logging
from collections.abc import Callable

from flask import Blueprint, g, request
from werkzeug.exceptions import Forbidden, Unauthorized

from taskrank.queue import label_studio as ls
from taskrank.queue import label_studio_backend as backend
from taskrank.queue.projects import get_project
from taskrank.queue.replication import replicated
from taskrank.queue.validation import check_id, fail
from taskrank.server.auth import known_principal
from taskrank.server.context import redis_client, settings, state
from taskrank.server.validation import json_object

bp = Blueprint("label_studio", __name__, url_prefix="/ls/<pid>")
log = logging.getLogger(__name__)

# The events the SDK's backend trains on (plus the names Label Studio 1.23 really sends
# for bulk creation and deletion); every other event is answered as the SDK does.
LABEL_EVENTS = ("ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED")
DELETE_EVENTS = ("ANNOTATION_DELETED", "ANNOTATIONS_DELETED")
NOT_DELETED = ("taskrank's labels are append-only: deleting an annotation in Label Studio "
               "does not remove the label it gave")


class NotAuthenticated(Unauthorized):
    def get_headers(self, environ=None, scope=None):  # noqa: ANN001 - werkzeug signature
        challenge = ("WWW-Authenticate", 'Basic realm="taskrank"')
        return [*super().get_headers(environ, scope), challenge]


def credentials_token(header: str) -> str | None:
    """The token of ``Bearer T``, ``Token T`` or ``Basic base64(user:T)`` (a bare ``T``
    as user name with no password is accepted too); None when malformed."""
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() in ("bearer", "token"):
        return value or None
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return password or user or None


def require_platform(view: Callable) -> Callable:
    """The view needs a platform (or admin) token, in one of the three forms above."""
    @functools.wraps(view)
    def wrapped(*args: object, **kwargs: object) -> object:
        header = request.headers.get("Authorization", "")
        token = credentials_token(header) if header else None
        if token is None:
            raise NotAuthenticated("send a platform token: in Label Studio choose Basic "
                                   "Authentication with the token as password, or send "
                                   "'Authorization: Token <token>'")
        principal = known_principal(state(), token)
        if principal is None:
            raise NotAuthenticated("unknown token; check it or create a new one with "
                                   "'taskrank token create --role platform'")
        if not principal.allows("platform"):
            raise Forbidden(f"this needs a token of role 'platform' or above; yours has "
                            f"role '{principal.role}'")
        g.principal = principal
        return view(*args, **kwargs)

    wrapped.required_role = "platform"  # read by the OpenAPI document and the tests
    return wrapped


def _project(pid: str) -> dict:
    return get_project(redis_client(), check_id(pid, "project id"))


@bp.get("/health")
@bp.get("/")
@require_platform
def get_health(pid: str) -> dict:
    project = _project(pid)
    return {"status": "UP", "model_class": "taskrank",
            "model_version": backend.model_version(redis_client(), project)}


@bp.post("/setup")
@require_platform
def post_setup(pid: str) -> dict:
    """Checks the labeling config against the project; answers the model version."""
    project = _project(pid)
    body = json_object()
    _control(body.get("schema"), project, "schema")
    return {"model_version": backend.model_version(redis_client(), project)}


@bp.post("/predict")
@require_platform
def post_predict(pid: str) -> dict:
    """One prediction per task, in order; tasks taskrank does not know are ingested first."""
    project = _project(pid)
    body = json_object()
    control = _control(body.get("label_config"), project, "label_config")
    tasks = body.get("tasks")
    tasks = [tasks] if isinstance(tasks, dict) else tasks  # the SDK's own test sends one
    if not isinstance(tasks, list):
        raise fail("tasks", "must be a list of Label Studio tasks")
    r = redis_client()
    registered = backend.register_tasks(r, project, tasks, settings())
    for entry in registered["rejected"]:
        log.info("label studio task %s of project %s has no prediction: %s", entry["id"],
                 pid, entry["detail"])
    return backend.predict(r, project, control, tasks)


@bp.post("/webhook")
@require_platform
def post_webhook(pid: str) -> tuple[dict, int]:
    """Annotations become labels, START_TRAINING retrains, new tasks become items."""
    project = _project(pid)
    body = json_object()
    action = body.get("action")
    if not isinstance(action, str):
        raise fail("action", "must be the event's name, e.g. ANNOTATION_CREATED")
    r = redis_client()
    if action == "START_TRAINING":
        return {"status": "ok", "result": backend.start_training(r, settings(), project)}, 201
    if action in LABEL_EVENTS:
        with replicated(r, project["id"], settings()):  # a 201: the labels are kept
            return {"status": "ok", "result": _label(project, action, body)}, 201
    if action in DELETE_EVENTS:
        return {"status": "ok", "result": {"ignored": True, "detail": NOT_DELETED}}, 200
    if action == "TASKS_CREATED":
        tasks = body.get("tasks")
        if not isinstance(tasks, list):
            raise fail("tasks", "must be a list of Label Studio tasks")
        with replicated(r, project["id"], settings()):  # a 201: the items are kept
            return {"status": "ok", "result": backend.register_tasks(r, project, tasks,
                                                                     settings())}, 201
    return {"status": "Unknown event"}, 200


def _label(project: dict, action: str, body: dict) -> dict:
    r = redis_client()
    tasks = body.get("task")
    tasks = tasks if isinstance(tasks, list) else [tasks] if isinstance(tasks, dict) else []
    backend.register_tasks(r, project, tasks, settings())
    records, skipped = backend.annotation_records(r, project, action, body)
    result = backend.record_labels(r, project, records, settings())
    return {**result, "skipped": skipped}


def _control(config: object, project: dict, field: str) -> ls.ChoicesControl:
    if not isinstance(config, str):
        raise fail(field, "must be the project's labeling config (XML)")
    try:
        return ls.choices_control(config, tuple(project["labels"]))
    except ls.NotUsable as error:
        raise fail(field, str(error)) from None
