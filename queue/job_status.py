"""What ``GET /v1/jobs/{jid}`` answers: the status of an RQ job, or of a whole re-score run
(whose id names no single job: its chunks are the jobs)."""

from __future__ import annotations

import redis
from rq.job import Job

from taskrank.queue.enqueue import job_project
from taskrank.queue.rescore import rescore_progress


def job_view(connection: redis.Redis, r: redis.Redis, job_id: str) -> dict | None:
    """``{"id", "status", "progress", "result"}`` of an RQ job or of a re-score run."""
    run_pid = job_project(job_id, "rescore")
    if run_pid:
        progress = rescore_progress(r, run_pid, job_id)
        if progress is not None:
            status = "finished" if progress["finished"] else "started"
            share = progress["chunks_done"] / progress["chunks"]
            return {"id": job_id, "status": status, "progress": round(share, 4),
                    "result": progress}
    try:
        job = Job.fetch(job_id, connection=connection)
    except Exception:  # rq raises NoSuchJobError, or a decode error for a foreign key
        return None
    status = job.get_status(refresh=False)
    return {"id": job_id, "status": str(getattr(status, "value", status)),
            "progress": 1.0 if str(getattr(status, "value", status)) == "finished" else 0.0,
            "result": job.return_value(), "error": _last_error(job),
            "retries_left": job.retries_left}


def _last_error(job: Job) -> str | None:
    result = job.latest_result() if hasattr(job, "latest_result") else None
    if result is not None and getattr(result, "exc_string", None):
        return result.exc_string.strip().splitlines()[-1]
    return None
