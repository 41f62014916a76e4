"""Labels without a lease: a platform posts labels it already has (``queue/label_import.py``).

The label export (``GET /v1/projects/{pid}/labels``) is a view of ``server/projects.py``.
"""

from __future__ import annotations

import logging

import redis
from flask import Blueprint

from taskrank.queue.label_import import finish_import, import_labels
from taskrank.queue.replication import replicated
from taskrank.queue.validation import check_id
from taskrank.server.auth import require
from taskrank.server.context import cached_project, caches, redis_client, settings
from taskrank.server.validation import batch_list

bp = Blueprint("labels", __name__, url_prefix="/v1/projects/<pid>/labels")
log = logging.getLogger(__name__)


@bp.post("")
@require("platform")
def post_labels(pid: str) -> dict:
    """Record up to ``max_batch_items`` labels; counts, and each record not counted with
    the reason."""
    project = cached_project(check_id(pid, "project id"))
    records = batch_list("labels", "label record")
    with replicated(redis_client(), project["id"], settings()):
        result = import_labels(redis_client(), project, records)
    try:
        finish_import(redis_client(), project, result, settings())
    except redis.RedisError as error:  # recorded: the workers' upkeep does the rest
        log.warning("labels of project %s recorded; their follow-up is left to the upkeep: "
                    "%s", pid, error)
    if result.to_aggregate:  # aggregate.py may have learned experts' accuracy
        caches().experts.clear()
    return result.answer
