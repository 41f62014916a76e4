"""The ranking model of a project, retrain on demand, and background job status."""

from __future__ import annotations

from flask import Blueprint

from taskrank.queue.connection import rq_redis
from taskrank.queue.exceptions import NoSuchJobError
from taskrank.queue.job_status import job_view
from taskrank.queue.models import model_info
from taskrank.queue.projects import get_project
from taskrank.queue.reaggregate import request_full
from taskrank.queue.retrain import enqueue_retrain
from taskrank.queue.validation import check_id, check_job_id
from taskrank.server.auth import require
from taskrank.server.context import redis_client, settings
from taskrank.server.validation import query_bool

bp = Blueprint("models", __name__)


@bp.get("/v1/projects/<pid>/model")
@require("platform")
def get_model(pid: str) -> dict:
    get_project(redis_client(), check_id(pid, "project id"))
    return model_info(redis_client(), pid)


@bp.post("/v1/projects/<pid>/retrain")
@require("platform")
def post_retrain(pid: str) -> tuple[dict, int, dict]:
    get_project(redis_client(), check_id(pid, "project id"))
    if query_bool("full"):
        request_full(redis_client(), pid)
    job_id = enqueue_retrain(redis_client(), settings(), pid)
    return {"job_id": job_id}, 202, {"Location": f"/v1/jobs/{job_id}"}


@bp.get("/v1/jobs/<jid>")
@require("platform")
def get_job(jid: str) -> dict:
    r = redis_client()
    view = job_view(rq_redis(r), r, check_job_id(jid))
    if view is None:
        raise NoSuchJobError(f"no job '{jid}' (finished jobs are kept for a limited time)")
    return view
