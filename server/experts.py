"""Experts: declare (PUT) and read, with open leases and the quality report of every
project (``queue/quality_report.py``)."""

from __future__ import annotations

from flask import Blueprint

from taskrank.queue import keys as K
from taskrank.queue.experts import load_expert, open_leases, put_expert
from taskrank.queue.lifecycle import expert_open_tasks
from taskrank.queue.quality_report import expert_quality
from taskrank.queue.skills import best_experts_cache
from taskrank.queue.validation import check_id
from taskrank.server.auth import acting_expert, require
from taskrank.server.context import caches, redis_client
from taskrank.server.validation import json_body

bp = Blueprint("experts", __name__, url_prefix="/v1/experts")


@bp.put("/<eid>")
@require("admin")
def put_one_expert(eid: str) -> tuple[dict, int]:
    expert, created = put_expert(redis_client(), check_id(eid, "expert id"), json_body())
    caches().experts.forget(eid)
    best_experts_cache.clear()  # its rate, skills or activity may change who is best
    return _view(expert), 201 if created else 200


@bp.get("/<eid>")
@require("expert")
def get_one_expert(eid: str) -> dict:
    eid = acting_expert(check_id(eid, "expert id"))
    return _view(load_expert(redis_client(), eid))


@bp.get("/<eid>/tasks")
@require("expert")
def get_expert_tasks(eid: str) -> dict:
    """The expert's open leases in every project (an expert token: its own only)."""
    eid = acting_expert(check_id(eid, "expert id"))
    load_expert(redis_client(), eid)  # 404 for an expert never declared
    return {"tasks": expert_open_tasks(redis_client(), eid)}


def _view(expert: dict) -> dict:
    """The declaration with open leases, quality per project and skill, flagged skills."""
    r = redis_client()
    leases = open_leases(r, expert["id"], sorted(r.smembers(K.projects_key())))
    return {**expert, "open_leases": sum(leases.values()), "open_leases_by_project": leases,
            **expert_quality(r, expert)}
