"""Tasks: next task for an expert, label, extend, release."""

from __future__ import annotations

from flask import Blueprint, Response, request
from werkzeug.exceptions import BadRequest

from taskrank.queue import tasks
from taskrank.queue.after_label import after_label
from taskrank.queue.exceptions import NoSuchProjectError, NoSuchTaskError
from taskrank.queue.validation import check_id, check_keys, check_number, fail
from taskrank.server.auth import acting_expert, current_principal, require
from taskrank.server.context import cached_expert, cached_project, caches, redis_client, settings
from taskrank.server.errors import problem
from taskrank.server.validation import json_object

bp = Blueprint("tasks", __name__)


@bp.post("/v1/projects/<pid>/tasks/next")
@require("expert")
def post_next_task(pid: str) -> tuple[dict, int] | Response:
    r = redis_client()
    project = cached_project(check_id(pid, "project id"))
    body = json_object() if request.content_length else {}
    check_keys(body, "", {"expert_id"})
    eid = acting_expert(body.get("expert_id"))
    if eid is None:
        raise fail("expert_id", "is required with a platform or admin token")
    expert = cached_expert(check_id(eid, "expert_id"))
    task = tasks.claim(r, project, expert, settings().claim_depth)
    if task is None:
        return Response(status=204)
    return {"task": task}, 200


def _task_project(tid: str) -> dict:
    """The task's project, after checking an expert token acts on its own task only."""
    r = redis_client()
    # A task id is '<token>.<project id>': check the parts, since the whole may be longer
    # than the 128 characters of a platform id.
    pid = tasks.project_of_task(tid)
    check_id(tid.partition(".")[0], "task id")
    try:
        project = cached_project(check_id(pid, "task id"))
    except NoSuchProjectError:
        raise NoSuchTaskError(f"no task '{tid}'") from None
    if current_principal().role == "expert":
        acting_expert(tasks.task_expert(r, project["id"], tid))
    return project


@bp.post("/v1/tasks/<tid>/label")
@require("expert")
def post_label(tid: str) -> tuple[dict, int]:
    project = _task_project(tid)
    body = json_object()
    check_keys(body, "", {"label", "seconds_spent"}, {"label"})
    seconds = check_number(body.get("seconds_spent", 0), "seconds_spent", 0, 86400 * 7)
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 1 <= len(key) <= 200:
        raise BadRequest("Idempotency-Key must be 1-200 characters")
    r = redis_client()
    status, answer = tasks.submit_label(r, project, tid, body["label"], seconds, key)
    if status == 201:
        after_label(r, project, answer, settings())
        if not answer.get("aggregated"):  # aggregate.py may have learned experts' accuracy
            caches().experts.clear()
        return _label_body(answer), 201
    return problem(409, "Lease not open", answer["reason"], "lease-not-open",
                   **_label_body(answer))


def _label_body(answer: dict) -> dict:
    return {key: answer.get(key) for key in ("task_id", "item_id", "expert_id", "label",
                                              "counted", "item_status", "n_labels")}


@bp.post("/v1/tasks/<tid>/extend")
@require("expert")
def post_extend(tid: str) -> dict:
    return {"task": tasks.extend(redis_client(), _task_project(tid), tid)}


@bp.post("/v1/tasks/<tid>/release")
@require("expert")
def post_release(tid: str) -> dict:
    return {"task": tasks.release(redis_client(), _task_project(tid), tid)}
