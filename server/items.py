"""Items: batch upsert (scored at once), read one with its explanation, withdraw one."""

from __future__ import annotations

from flask import Blueprint, Response
from werkzeug.exceptions import RequestEntityTooLarge

from taskrank.queue.items import get_item, ingest
from taskrank.queue.lifecycle import withdraw_item
from taskrank.queue.models import current_ranker
from taskrank.queue.projects import get_project
from taskrank.queue.validation import check_id, check_keys, fail
from taskrank.server.auth import require
from taskrank.server.context import redis_client, settings
from taskrank.server.validation import json_object

bp = Blueprint("items", __name__, url_prefix="/v1/projects/<pid>/items")


@bp.post("")
@require("platform")
def post_items(pid: str) -> dict | Response:
    r = redis_client()
    project = get_project(r, check_id(pid, "project id"))
    body = json_object(check_numbers=False)  # per item: one bad item does not refuse the batch
    check_keys(body, "", {"items"}, {"items"})
    items = body["items"]
    if not isinstance(items, list) or not items:
        raise fail("items", "must be a non-empty list of item objects")
    limit = settings().max_batch_items
    if len(items) > limit:
        raise RequestEntityTooLarge(f"{len(items)} items in one request; send at most {limit} "
                                    "per request (TASKRANK_MAX_BATCH_ITEMS)")
    result = ingest(r, project, items, current_ranker(r, project), settings())
    return result


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
    outcome = withdraw_item(r, project, check_id(iid, "item id"))
    return {**get_item(r, project, iid), **outcome}
