"""Tasks: next task for an expert, label, extend, release.

The two busiest routes, next task and label, are hot routes (``server/hot.py``): plain
handlers declared once in ``HOT_ROUTES``, served by a Flask view and by the WSGI fast path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import redis
from flask import Blueprint
from werkzeug.exceptions import BadRequest

from taskrank.queue import tasks
from taskrank.queue.after_label import after_label
from taskrank.queue.events import budget_exhausted
from taskrank.queue.exceptions import LeaseNotOpenError, NoSuchProjectError, NoSuchTaskError
from taskrank.queue.replication import replicated
from taskrank.queue.tokens import Principal
from taskrank.queue.validation import (
    check_answer,
    check_comment,
    check_id,
    check_int,
    check_keys,
    check_number,
    fail,
)
from taskrank.server.auth import acting_expert_of, current_principal, require
from taskrank.server.context import (
    AppState,
    cached_expert,
    cached_project,
    redis_client,
    state,
)
from taskrank.server.hot import Answer, HotRoute, add_flask_view

bp = Blueprint("tasks", __name__)

log = logging.getLogger(__name__)


def next_task(app_state: AppState, principal: Principal, arguments: dict,
              body: Callable[[], dict]) -> Answer:
    """Lease the best task for the expert the body names (or the expert token's own); a
    204 says why there is none in its headers.  With ``n``: up to n tasks in one claim,
    ``{"tasks": [...]}``, and the headers say why fewer when fewer.  A retry with the
    first request's Idempotency-Key gets the same lease(s)."""
    project = cached_project(check_id(arguments["pid"], "project id"), app_state)
    document = body()
    expert = next_task_expert(app_state, principal, document)
    n = None if document.get("n") is None else check_int(
        document["n"], "n", 1, tasks.MAX_TASKS_PER_CLAIM)
    key = check_idempotency_key(arguments[IDEMPOTENCY_KEY])
    leased, refusal = tasks.lease_tasks(app_state.redis, project, expert,
                                        app_state.settings.claim_depth, n or 1,
                                        idempotency_key=key)
    headers = () if refusal is None else ((REASON_HEADER, refusal.reason),
                                          (REASON_DETAIL_HEADER, refusal.detail))
    if refusal is not None and refusal.reason == "budget_exhausted":
        budget_exhausted(app_state.redis, project, refusal.detail)  # once; never raises
    if not leased:
        return Answer(204, headers=headers)
    if n is None:
        return Answer(200, {"task": leased[0]})
    return Answer(200, {"tasks": leased}, headers)


def label(app_state: AppState, principal: Principal, arguments: dict,
          body: Callable[[], dict]) -> Answer:
    """Submit the label for a lease: 201, or a 409 when the lease is not open (the label
    is kept, not counted)."""
    tid, key = arguments["tid"], arguments[IDEMPOTENCY_KEY]
    project = task_project(app_state, principal, tid)
    document = body()
    seconds, comment, answer_json = label_inputs(document, key)
    # A 409 keeps the label too: both answers wait until a replica holds it.
    with replicated(app_state.redis, project["id"], app_state.settings):
        status, answer = tasks.submit_label(app_state.redis, project, tid, document["label"],
                                            seconds, key, comment=comment, answer=answer_json)
    if status != 201:
        raise LeaseNotOpenError(answer["reason"], **label_body(answer))
    finish_label(app_state, project, answer)
    return Answer(201, label_body(answer))


IDEMPOTENCY_KEY = "Idempotency-Key"
# On a 204 of tasks/next: why no task (a code of tasks.NO_TASK_REASONS), and the numbers.
REASON_HEADER, REASON_DETAIL_HEADER = "Taskrank-Reason", "Taskrank-Reason-Detail"
# Served by the Flask views below and, with TASKRANK_FAST_PATH, by server/hot.HotPath.
NEXT_TASK = HotRoute("/v1/projects/<pid>/tasks/next", "post_next_task", "expert", next_task,
                     body_optional=True, headers=(IDEMPOTENCY_KEY,))
LABEL = HotRoute("/v1/tasks/<tid>/label", "post_label", "expert", label,
                 headers=(IDEMPOTENCY_KEY,))
HOT_ROUTES = (NEXT_TASK, LABEL)
post_next_task = add_flask_view(bp, NEXT_TASK)
post_label = add_flask_view(bp, LABEL)


def next_task_expert(app_state: AppState, principal: Principal, body: dict) -> dict:
    """The expert a next-task body asks for, as ``principal`` may ask (raises otherwise)."""
    check_keys(body, "", {"expert_id", "n"})
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


def label_inputs(body: dict, idempotency_key: str | None) -> tuple[float, str, str]:
    """Check a label body and its Idempotency-Key; the seconds spent, the comment and the
    answer as JSON text ('' for none)."""
    check_keys(body, "", {"label", "seconds_spent", "comment", "answer"}, {"label"})
    seconds = check_number(body.get("seconds_spent", 0), "seconds_spent", 0, 86400 * 7)
    comment, answer = check_comment(body.get("comment")), check_answer(body.get("answer"))
    check_idempotency_key(idempotency_key)
    return seconds, comment, answer


def check_idempotency_key(key: str | None) -> str | None:
    if key is not None and not 1 <= len(key) <= 200:
        raise BadRequest("Idempotency-Key must be 1-200 characters")
    return key


def finish_label(app_state: AppState, project: dict, answer: dict) -> None:
    """After a counted label: aggregation and the retrain trigger (idempotent).  The label
    is stored, so the answer is a success even when this fails: the workers' upkeep
    retries it (queue/after_label.py)."""
    try:
        after_label(app_state.redis, project, answer, app_state.settings)
    except redis.RedisError as error:
        log.warning("label %s stored; its follow-up is left to the upkeep: %s",
                    answer.get("task_id"), error)
    if not answer.get("aggregated"):  # aggregate.py may have learned experts' accuracy
        app_state.caches.experts.clear()


def label_body(answer: dict) -> dict:
    return {key: answer.get(key) for key in ("task_id", "item_id", "expert_id", "label",
                                              "counted", "item_status", "n_labels")}


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
