"""Projects: create, list, read, change; their ranked queue, stats, spend and label
export."""

from __future__ import annotations

from flask import Blueprint, request

from taskrank.queue import labels as label_log
from taskrank.queue.events import flag_check_all
from taskrank.queue.items import ranked_queue
from taskrank.queue.projects import (
    create_project,
    get_project,
    list_projects,
    strategy_history,
    update_project,
)
from taskrank.queue.rescore import enqueue_rescore
from taskrank.queue.spend import project_spend
from taskrank.queue.stats import project_stats
from taskrank.queue.validation import check_id
from taskrank.server.auth import require
from taskrank.server.context import caches, redis_client, settings
from taskrank.server.validation import json_body, query_bool, query_int, query_names

bp = Blueprint("projects", __name__, url_prefix="/v1/projects")


@bp.post("")
@require("admin")
def post_project() -> tuple[dict, int, dict]:
    project = create_project(redis_client(), json_body())
    return project, 201, {"Location": f"/v1/projects/{project['id']}"}


@bp.get("")
@require("platform")
def get_projects() -> dict:
    return {"projects": list_projects(redis_client())}


@bp.get("/<pid>")
@require("platform")
def get_one_project(pid: str) -> dict:
    project = get_project(redis_client(), check_id(pid, "project id"))
    project["strategy_history"] = strategy_history(redis_client(), pid)
    return project


@bp.patch("/<pid>")
@require("admin")
def patch_project(pid: str) -> dict:
    r = redis_client()
    project, strategy_changed = update_project(r, check_id(pid, "project id"), json_body())
    caches().projects.forget(pid)
    if strategy_changed:
        project["backfill_job_id"] = enqueue_rescore(r, pid, reason="strategy change",
                                                     settings=settings())
        flag_check_all(r, project, f"after a strategy change of {pid}")  # qa may flag
    project["strategy_history"] = strategy_history(r, pid)
    return project


@bp.get("/<pid>/queue")
@require("platform")
def get_queue(pid: str) -> dict:
    project = get_project(redis_client(), check_id(pid, "project id"))
    query_names({"limit", "skill"})
    limit = query_int("limit", 20, 1, 1000)
    skill = request.args.get("skill")
    if skill is not None:
        check_id(skill, "skill")
    return {"items": ranked_queue(redis_client(), project, limit, skill)}


@bp.get("/<pid>/stats")
@require("platform")
def get_stats(pid: str) -> dict:
    return project_stats(redis_client(), get_project(redis_client(), check_id(pid, "project id")))


@bp.get("/<pid>/spend")
@require("platform")
def get_spend(pid: str) -> dict:
    return project_spend(redis_client(), get_project(redis_client(), check_id(pid, "project id")))


@bp.get("/<pid>/labels")
@require("platform")
def get_labels(pid: str) -> dict:
    get_project(redis_client(), check_id(pid, "project id"))
    query_names({"limit", "cursor", "aggregated"})
    limit = query_int("limit", 100, 1, 10_000)
    cursor = request.args.get("cursor") or None
    export = label_log.export_aggregated if query_bool("aggregated") else label_log.export_labels
    return export(redis_client(), pid, cursor, limit)
