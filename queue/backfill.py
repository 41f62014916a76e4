"""Backfill: resume a re-score run that lost chunks, and store priorities computed outside
taskrank (what ``taskrank backfill`` calls)."""

from __future__ import annotations

import redis
from rq import Queue
from rq.job import Job, JobStatus

from taskrank.queue import keys as K
from taskrank.queue import lua
from taskrank.queue.connection import rq_redis
from taskrank.queue.exceptions import NoSuchJobError
from taskrank.queue.projects import get_project
from taskrank.queue.rerank import mark_reranked
from taskrank.queue.rescore import chunk_job_id, enqueue_chunks, queue_tail
from taskrank.queue.settings import Settings, current


def rescore_chunks(r: redis.Redis, pid: str, run: str) -> dict[int, int | None]:
    """Chunk index -> items it updated once done, None while not done."""
    fields = r.hgetall(K.rescore_progress_key(pid, run))
    if not fields:
        raise NoSuchJobError(f"no re-score run '{run}' of project '{pid}' (runs are kept 7 days)")
    done = {int(name[5:]): int(value) for name, value in fields.items()
            if name.startswith("done:")}
    return {index: done.get(index) for index in range(int(fields["chunks"]))}


def resume_rescore(r: redis.Redis, pid: str, run: str,
                   settings: Settings | None = None) -> list[int]:
    """Enqueue again the chunks of ``run`` that are not done and that no worker holds.

    A chunk job still waiting in a queue is taken off it first (one LREM: when it finds
    nothing, a worker popped the job and holds it), so no chunk runs twice at once.  A
    chunk captures its items when it starts, so one whose snapshot is gone captures them
    again (an item that kept its score is still in its range).  Returns the chunk indexes
    enqueued.
    """
    settings = settings or current()
    left = [index for index, done in rescore_chunks(r, pid, run).items() if done is None]
    progress = r.hgetall(K.rescore_progress_key(pid, run))
    top = int(progress.get("top_chunks", 0))
    if top and "tail_queued" not in progress:  # the tail is queued once the top is done
        if all(index >= top for index in left):  # its last job died before it queued it
            if mark_reranked(r, pid, run):
                queue_tail(r, settings, pid, run)
            return left
        left = [index for index in left if index < top]
    binary = rq_redis(r, settings)
    jobs = Job.fetch_many([chunk_job_id(progress, run, index) for index in left],
                          connection=binary)
    free = [index for index, job in zip(left, jobs, strict=True)
            if job is None or _release(binary, job)]
    enqueue_chunks(r, settings, pid, run, free, int(progress["chunk_size"]))
    return free


def _release(connection: redis.Redis, job: Job) -> bool:
    """Whether no worker holds ``job``; if so it is deleted, to be enqueued afresh."""
    status = job.get_status(refresh=False)
    if status == JobStatus.STARTED:
        return False
    if status == JobStatus.QUEUED and not Queue(job.origin, connection=connection).remove(job.id):
        return False
    job.delete(remove_from_queue=False)
    return True


def set_priorities(r: redis.Redis, pid: str, pairs: list[tuple[str, float]]) -> dict:
    """Store priorities computed outside taskrank for the items still pending.

    Returns ``{"updated", "not_pending", "unknown"}``; ``unknown`` lists the positions in
    ``pairs`` of ids with no item.
    """
    project = get_project(r, pid)
    model_version = r.hget(K.model_meta_key(pid), "version") or 0
    args = [model_version, project["strategy_version"]]
    args += [value for iid, priority in pairs for value in (iid, repr(float(priority)))]
    items = [K.item_key(pid, iid) for iid, _ in pairs]
    updated, not_pending, unknown = lua.run(r, "set_priorities", pid, items, args)
    return {"updated": updated, "not_pending": not_pending, "unknown": unknown}
