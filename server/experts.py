"""Experts: declare (PUT) and read with learned accuracy and open leases."""

from __future__ import annotations

from flask import Blueprint

from taskrank.queue import keys as K
from taskrank.queue.experts import load_expert, open_leases, put_expert
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
    return _with_leases(expert), 201 if created else 200


@bp.get("/<eid>")
@require("expert")
def get_one_expert(eid: str) -> dict:
    eid = acting_expert(check_id(eid, "expert id"))
    return _with_leases(load_expert(redis_client(), eid))


def _with_leases(expert: dict) -> dict:
    r = redis_client()
    leases = open_leases(r, expert["id"], sorted(r.smembers(K.projects_key())))
    return {**expert, "open_leases": sum(leases.values()), "open_leases_by_project": leases}
