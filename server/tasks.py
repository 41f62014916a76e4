"""Tasks: next task for an expert, label, extend, release.

The checks of the two busiest routes are functions of explicit inputs, so the WSGI fast
path (``server/hot.py``) runs exactly the same ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from flask import Blueprint, Response, request
from werkzeug.exceptions import BadRequest

from taskrank.queue import tasks
from taskrank.queue.after_label import after_label
from taskrank.queue.exceptions import NoSuchProjectError, NoSuchTaskError
from taskrank.queue.tokens import Principal
from taskrank.queue.validation import check_id, check_keys, check_number, fail
from taskrank.server.auth import acting_expert_of, current_principal, require
from taskrank.server.context import (
    AppState,
    cached_expert,
    cached_project,
    redis_client,
    state,
)
from taskrank.server.errors import problem
from taskrank.server.validation import json_object

bp = Blueprint("tasks", __name__)
T = TypeVar("T")
# environ key: the outcome of the write the fast path made before handing a request over
WRITE_OUTCOME = "taskrank.write_outcome"


@bp.post("/v1/projects/<pid>/tasks/next")
@require("expert")
def post_next_task(pid: str) -> tuple[dict, int] | Response:
    app_state = state()
    project = cached_project(check_id(pid, "project id"))
    body = json_object() if request.content_length else {}
    expert = next_task_expert(app_state, current_principal(), body)
    task = _write_once(lambda: tasks.claim(app_state.redis, project, expert,
                                           app_state.settings.claim_depth))
    if task is None:
        return Response(status=204)
    return {"task": task}, 200


def next_task_expert(app_state: AppState, principal: Principal, body: dict) -> dict:
    """The expert a next-task body asks for, as ``principal`` may ask (raises otherwise)."""
    check_keys(body, "", {"expert_id"})
    eid = acting_expert_of(principal, body.get("expert_id"))
    if eid is None:
        raise fail("expert_id", "is required with a platform or admin token")
    return cached_expert(check_id(eid, "expert_id"), app_state)


def task_project(app_state: AppState, principal: Principal, tid: str) -> dict:
    """The task's project, after checking an expert token acts on its own task only."""
    # A task id is '<token>.<project id>': check the parts, since the whole may be longer
    # than the 128 characters of a platform id.
    pid = tasks.project_of_task(tid)
    check_id(tid.partition(".")[0], "task id")
    try:
        project = cached_project(check_id(pid, "task id"), app_state)
    except NoSuchProjectError:
        raise NoSuchTaskError(f"no task '{tid}'") from None
    if principal.role == "expert":
        acting_expert_of(principal, tasks.task_expert(app_state.redis, project["id"], tid))
    return project


def label_inputs(body: dict, idempotency_key: str | None) -> float:
    """Check a label body and its Idempotency-Key; the seconds spent."""
    check_keys(body, "", {"label", "seconds_spent"}, {"label"})
    seconds = check_number(body.get("seconds_spent", 0), "seconds_spent", 0, 86400 * 7)
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= 200:
        raise BadRequest("Idempotency-Key must be 1-200 characters")
    return seconds


@bp.post("/v1/tasks/<tid>/label")
@require("expert")
def post_label(tid: str) -> tuple[dict, int]:
    app_state = state()
    project = task_project(app_state, current_principal(), tid)
    body = json_object()
    key = request.headers.get("Idempotency-Key")
    seconds = label_inputs(body, key)
    status, answer = _write_once(lambda: tasks.submit_label(
        app_state.redis, project, tid, body["label"], seconds, key))
    if status == 201:
        finish_label(app_state, project, answer)
        return label_body(answer), 201
    return problem(409, "Lease not open", answer["reason"], "lease-not-open",
                   **label_body(answer))


def finish_label(app_state: AppState, project: dict, answer: dict) -> None:
    """After a counted label: aggregation and the retrain trigger (idempotent)."""
    after_label(app_state.redis, project, answer, app_state.settings)
    if not answer.get("aggregated"):  # aggregate.py may have learned experts' accuracy
        app_state.caches.experts.clear()


def label_body(answer: dict) -> dict:
    return {key: answer.get(key) for key in ("task_id", "item_id", "expert_id", "label",
                                              "counted", "item_status", "n_labels")}


def _write_once(write: Callable[[], T]) -> T:
    """The result of ``write``, or of the same write the fast path already made for this
    request (then handed over for its answer): a request never writes twice.  The fast
    path leaves the exception the write raised, or a 1-tuple of what it returned."""
    outcome = request.environ.pop(WRITE_OUTCOME, None)
    if outcome is None:
        return write()
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome[0]


def _task_project(tid: str) -> dict:
    return task_project(state(), current_principal(), tid)


@bp.post("/v1/tasks/<tid>/extend")
@require("expert")
def post_extend(tid: str) -> dict:
    return {"task": tasks.extend(redis_client(), _task_project(tid), tid)}


@bp.post("/v1/tasks/<tid>/release")
@require("expert")
def post_release(tid: str) -> dict:
    return {"task": tasks.release(redis_client(), _task_project(tid), tid)}
