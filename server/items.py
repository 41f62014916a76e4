"""Items: batch upsert (scored at once), read one with its explanation, withdraw one."""

from __future__ import annotations

from flask import Blueprint, Response

from taskrank.queue.items import get_item, ingest
from taskrank.queue.lifecycle import withdraw_item
from taskrank.queue.models import current_ranker
from taskrank.queue.projects import get_project
from taskrank.queue.replication import replicated
from taskrank.queue.validation import check_id
from taskrank.server.auth import require
from taskrank.server.context import redis_client, settings
from taskrank.server.validation import batch_list

bp = Blueprint("items", __name__, url_prefix="/v1/projects/<pid>/items")


@bp.post("")
@require("platform")
def post_items(pid: str) -> dict | Response:
    r = redis_client()
    project = get_project(r, check_id(pid, "project id"))
    items = batch_list("items", "item")
    with replicated(r, project["id"], settings()):
        return ingest(r, project, items, current_ranker(r, project), settings())


@bp.get("/<iid>")
@require("platform")
def get_one_item(pid: str, iid: str) -> dict:
    r = redis_client()
    project = get_project(r, check_id(pid, "project id"))
    return get_item(r, project, check_id(iid, "item id"))


@bp.delete("/<iid>")
@require("platform")
def delete_item(pid: str, iid: str) -> dict:
    """Withdraw the item for good (again: the same item, nothing ended); the item as it is
    now, with the leases its withdrawal ended."""
    r = redis_client()
    project = get_project(r, check_id(pid, "project id"))
    with replicated(r, project["id"], settings()):  # for good: not undone by a failover
        outcome = withdraw_item(r, project, check_id(iid, "item id"))
    return {**get_item(r, project, iid), **outcome}
