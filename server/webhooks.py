"""Webhooks of a project: subscribe (PUT), read, list, delete, and the recent deliveries."""

from __future__ import annotations

from flask import Blueprint

from taskrank.queue.delivery import delivery_page
from taskrank.queue.validation import check_id
from taskrank.queue.webhooks import delete_webhook, get_webhook, list_webhooks, put_webhook
from taskrank.server.auth import require
from taskrank.server.context import redis_client, settings
from taskrank.server.validation import json_body, query_int

MAX_LIMIT = 10_000
bp = Blueprint("webhooks", __name__, url_prefix="/v1/projects/<pid>/webhooks")


def _ids(pid: str, name: str | None = None) -> None:
    check_id(pid, "project id")
    if name is not None:
        check_id(name, "webhook name")


@bp.put("/<name>")
@require("platform")
def put_one_webhook(pid: str, name: str) -> tuple[dict, int, dict]:
    _ids(pid, name)
    hook, created = put_webhook(redis_client(), pid, name, json_body())
    return hook, 201 if created else 200, {"Location": f"/v1/projects/{pid}/webhooks/{name}"}


@bp.get("")
@require("platform")
def get_webhooks(pid: str) -> dict:
    _ids(pid)
    return {"webhooks": list_webhooks(redis_client(), pid)}


@bp.get("/<name>")
@require("platform")
def get_one_webhook(pid: str, name: str) -> dict:
    _ids(pid, name)
    return get_webhook(redis_client(), pid, name)


@bp.delete("/<name>")
@require("platform")
def delete_one_webhook(pid: str, name: str) -> tuple[str, int]:
    _ids(pid, name)
    delete_webhook(redis_client(), pid, name)
    return "", 204


@bp.get("/<name>/deliveries")
@require("platform")
def get_deliveries(pid: str, name: str) -> dict:
    _ids(pid, name)
    # The page holds at most TASKRANK_WEBHOOK_DELIVERIES_KEPT: a larger limit gets them all.
    limit = min(query_int("limit", 50, 1, MAX_LIMIT), settings().webhook_deliveries_kept)
    get_webhook(redis_client(), pid, name)  # 404 for an unknown project or webhook
    return {"deliveries": delivery_page(redis_client(), pid, name, limit)}
