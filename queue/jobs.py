"""RQ jobs: retrain the ranking model and re-score the pool in parallel chunks.

Jobs take ids, load what they need, call ``taskrank.learning``, store the result and
return a small dict; exceptions reach RQ, which retries them (``Retry``).
"""

from __future__ import annotations

import contextlib
import gc
import json
import secrets
import time
from collections import defaultdict
from collections.abc import Iterator

import numpy as np
import redis
from rq import Queue, Retry, get_current_job
from rq.job import Job, JobStatus

from taskrank.learning.quality import cross_validated_metrics
from taskrank.learning.ranker import TaskRanker
from taskrank.queue import keys as K
from taskrank.queue import lua
from taskrank.queue.aggregate import reaggregate_project
from taskrank.queue.connection import same_server, send_many
from taskrank.queue.exceptions import NoSuchJobError
from taskrank.queue.metrics import observe_retrain
from taskrank.queue.models import LoadedModel, current_ranker, set_metrics, store_model
from taskrank.queue.pool_map import cover, current_pool_map, fit_project_map, needs_map
from taskrank.queue.projects import get_project
from taskrank.queue.quality import evaluate_exploration
from taskrank.queue.scoring import ItemInput, model_inputs, score_items, stored_item
from taskrank.queue.settings import Settings
from taskrank.queue.worker import task_queue

RETRY = Retry(max=3)  # immediate re-queue: no scheduler needed
JOB_TIMEOUT = 600
# Items per Redis round trip of a re-score chunk: each call (a pipeline of HMGETs, one
# ZADD per set) then holds Redis for milliseconds, while an RQ chunk stays large (every
# job forks a work horse).
RESCORE_BATCH = 2_000


def _job_redis() -> redis.Redis:
    return same_server(get_current_job().connection, decode_responses=True)


# --- retrain --------------------------------------------------------------------------------
def enqueue_retrain(r: redis.Redis, settings: Settings, pid: str) -> str:
    """Queue a retrain unless one is already waiting: a burst of labels merges into one."""
    return _enqueue_once(r, settings, K.retrain_pending_key(pid), "retrain", retrain, pid)


def _enqueue_once(r: redis.Redis, settings: Settings, pending: str, kind: str, job: object,
                  pid: str) -> str:
    """Queue ``job(pid)`` unless the ``pending`` mark names one still waiting; its id.

    The job clears the mark when it starts, so what arrives later queues the next one; the
    mark expires so that a job lost before it started cannot block its kind forever.
    """
    job_id = _job_id(kind, pid)
    if not r.set(pending, job_id, nx=True, ex=3600):
        return r.get(pending) or job_id
    queue = task_queue(settings, same_server(r, decode_responses=False))
    queue.enqueue(job, pid, job_id=job_id, retry=RETRY, job_timeout=JOB_TIMEOUT,
                  description=f"{kind} {pid}")
    return job_id


def retrain(pid: str) -> dict:
    """Fit the ranker on every aggregated label, store it as a new version, re-score."""
    started = time.perf_counter()
    r = _job_redis()
    # Clear the pending mark before reading labels: any label counted after this point
    # queues a new retrain, so the last label always reaches a model.
    r.delete(K.retrain_pending_key(pid))
    project = get_project(r, pid)
    trained_on = int(r.hget(K.counters_key(pid), "counted") or 0)
    aggregation = reaggregate_project(r, project)
    items, labels, weights = _training_set(r, project)
    # After the training set is read, so the model in use never trained on what it is
    # scored on (see queue/quality.py).
    evaluate_exploration(r, project, lambda: current_ranker(r, project))
    strategy = project["strategy"]
    if len(items) < strategy["retrain"]["min_labels"] or len(set(labels)) < 2:
        return {"skipped": f"{len(items)} labeled items of {len(set(labels))} classes; need "
                           f"{strategy['retrain']['min_labels']} of at least 2 classes"}
    model = _fit(project, items, labels, weights)
    seconds = round(time.perf_counter() - started, 4)  # aggregation and fit
    # The run's id is stored with the version: the queue views no longer show which model
    # scored a priority, so a client waits for this run to know the queue is re-ranked.
    run = _job_id("rescore", pid)
    version = store_model(r, pid, model, {
        "n_labels": len(items), "trained_on": trained_on, "metrics": {},
        "model": strategy["committee"]["model"],
        "strategy_version": project["strategy_version"], "train_seconds": seconds,
        "rescore_job_id": run}, _settings().model_versions_kept)
    observe_retrain(r, pid, seconds)
    rescore_job = enqueue_rescore(r, pid, f"model v{version}", run=run) if version else None
    if version:
        # Cross-validation fits the ranker once per fold, ~4x the fit: queued after the
        # re-score chunks, so the queue is re-ranked before it runs.
        enqueue_evaluation(r, pid, version)
    return {"version": version, "n_labels": len(items), "train_seconds": seconds,
            "rescore_job_id": rescore_job, "dawid_skene": aggregation}


def enqueue_evaluation(r: redis.Redis, pid: str, version: int) -> str:
    job_id = f"{_job_id('evaluate', pid)}-v{version}"
    queue = task_queue(_settings(), same_server(r, decode_responses=False))
    queue.enqueue(evaluate_model, pid, version, job_id=job_id, retry=RETRY,
                  job_timeout=JOB_TIMEOUT, description=f"evaluate {pid} v{version}")
    return job_id


def evaluate_model(pid: str, version: int) -> dict:
    """Cross-validated metrics of model ``version`` (its ranker refitted per fold on the
    labels there are now), stored with the version; skipped once a newer one is current."""
    r = _job_redis()
    project = get_project(r, pid)
    model = current_ranker(r, project)
    if model is None or model.version != version:
        return {"skipped": f"model v{version} is no longer current"}
    items, labels, weights = _training_set(r, project)
    metrics = cross_validated_metrics(model.ranker, _inputs(model, items), labels, weights)
    set_metrics(r, pid, version, metrics)
    return {"version": version, "metrics": metrics}


def _training_set(r: redis.Redis, project: dict) -> tuple[list[ItemInput], np.ndarray,
                                                          np.ndarray]:
    pid = project["id"]
    ids = r.zrange(K.labeled_key(pid), 0, -1)
    pipe = r.pipeline()
    for iid in ids:
        pipe.hmget(K.item_key(pid, iid), "p", "f", "al", "ac")
    items, labels, weights = [], [], []
    for iid, (preds, feats, label, confidence) in zip(ids, pipe.execute(), strict=True):
        if label in project["labels"]:
            items.append(stored_item(iid, preds, feats))
            labels.append(project["labels"].index(label))
            weights.append(max(float(confidence or 1.0), 1e-3))
    return items, np.array(labels, dtype=int), np.array(weights)


def _fit(project: dict, items: list[ItemInput], labels: np.ndarray,
         weights: np.ndarray) -> LoadedModel:
    k = len(project["labels"])
    n_features = project.get("n_features") or 0
    if n_features and any(item.features is None for item in items):
        n_features = 0  # some labeled items lack features: learn from predictions only
    model = LoadedModel(None, list(project.get("models") or []), n_features, k, 0)
    committee = project["strategy"]["committee"]
    model.ranker = TaskRanker(model=committee["model"], members=committee["members"],
                              classes=list(range(k)), random_state=0)
    model.ranker.fit(_inputs(model, items), labels, sample_weight=weights)
    return model


def _inputs(model: LoadedModel, items: list[ItemInput]) -> np.ndarray:
    return model_inputs(items, model.models, model.n_features, model.n_classes)


def _settings() -> Settings:
    """Queue name and sizes from the environment; connections always come from the job."""
    return Settings.from_env()


# --- pool map -------------------------------------------------------------------------------
def enqueue_pool_map(r: redis.Redis, settings: Settings, pid: str) -> str:
    """Queue a refit of the pool map unless one is already waiting (ingest bursts merge)."""
    return _enqueue_once(r, settings, K.pool_map_pending_key(pid), "poolmap", map_pool, pid)


def maybe_map_pool(r: redis.Redis, settings: Settings, project: dict) -> str | None:
    """After an ingest: refit the pool map when the pool has none or outgrew it."""
    return enqueue_pool_map(r, settings, project["id"]) if needs_map(r, project) else None


def map_pool(pid: str) -> dict:
    """Fit the pool map on the pending pool, then re-score it: every pending item gets its
    coverage priority (the cold-start order) and its cluster."""
    r = _job_redis()
    r.delete(K.pool_map_pending_key(pid))  # items ingested from now on ask for a new fit
    started = time.perf_counter()
    loaded = fit_project_map(r, get_project(r, pid))
    if loaded is None:
        return {"skipped": "fewer than 2 pending items with the map's inputs"}
    run = enqueue_rescore(r, pid, f"pool map v{loaded.version}", clusters=True)
    return {"version": loaded.version, "clusters": loaded.pool_map.n_clusters,
            "n_items": loaded.n_items, "fit_seconds": round(time.perf_counter() - started, 4),
            "rescore_job_id": run}


# --- re-score ---------------------------------------------------------------------------------
def enqueue_rescore(r: redis.Redis, pid: str, reason: str, settings: Settings | None = None,
                    chunk: int | None = None, run: str | None = None,
                    clusters: bool = False) -> str:
    """Snapshot every pool set, a chunk at a time, and fan the chunks out as jobs; returns
    the run's job id (``run`` when given).  ``clusters``: a new pool map, so every item's
    cluster is recomputed too (other runs leave clusters as they are)."""
    settings = settings or _settings()
    chunk = chunk or settings.rescore_chunk
    run = run or _job_id("rescore", pid)
    tags = [""] + sorted(r.smembers(K.tags_key(pid)))  # "" stands for the untagged set
    layout = _chunk_layout(r, pid, tags, chunk)
    progress = K.rescore_progress_key(pid, run)
    r.hset(progress, mapping={
        "total_items": 0, "chunks": len(layout), "chunk_size": chunk, "reason": reason,
        "tags": json.dumps(tags), "layout": json.dumps(layout), "started_at": time.time(),
        "clusters": int(clusters)})
    r.expire(progress, 7 * 86400)
    # Each chunk goes to the workers as soon as it is captured (1M items take ~1-2 s to
    # capture).  An item re-scored meanwhile may move into a range captured later and be
    # scored twice, with the same result; an item not yet re-scored keeps its score, so
    # it is never missed.
    queue = task_queue(settings, same_server(r, decode_responses=False))
    for index, segments in enumerate(layout):
        captured = sum(_snapshot(r, K.rescore_snapshot_key(pid, run, index, n),
                                 _pool_of(pid, tags[part]), high, low)
                       for n, (part, high, low) in enumerate(segments))
        r.hincrby(progress, "total_items", captured)
        r.hincrby(progress, "captured", 1)  # resume_rescore needs every chunk captured
        _enqueue_chunk(queue, pid, run, index, chunk)
    return run


def _pool_of(pid: str, tag: str) -> str:
    return K.pool_tag_key(pid, tag) if tag else K.pool_untagged_key(pid)


def _chunk_layout(r: redis.Redis, pid: str, tags: list[str],
                  chunk: int) -> list[list[tuple[int, str, str]]]:
    """The segments (part, highest score, lowest score) of each chunk, as ZRANGE BYSCORE
    bounds.

    A segment is a score range of one set holding about ``chunk`` items or fewer, so its
    snapshot is one short call (one ``ZRANGESTORE`` of a whole 1M-item set holds Redis
    ~1.7 s).  Ranges partition the scores, so every item that keeps its score is in exactly
    one segment (ties all go to one).  Range 0 of every set comes first (the top of each
    set is re-scored first); consecutive small ranges (small tag sets, the ends of sets)
    share a chunk, since every chunk job forks a work horse.
    """
    per_part = [[(part, *bounds) for bounds in _score_ranges(r, _pool_of(pid, tag), chunk)]
                for part, tag in enumerate(tags)]
    ranges = [ranges[index] for index in range(max(map(len, per_part)))
              for ranges in per_part if index < len(ranges)]
    layout: list[list[tuple[int, str, str]]] = [[]]
    size = 0
    for part, high, low, count in ranges:
        if layout[-1] and size + count > chunk:
            layout.append([])
            size = 0
        layout[-1].append((part, high, low))
        size += count
    return layout  # an empty run has one chunk without segments


def _score_ranges(r: redis.Redis, pool: str, chunk: int) -> list[tuple[str, str, int]]:
    """(high, low, about how many items) of ranges of ``chunk`` items or fewer, top first;
    high inclusive."""
    size = r.zcard(pool)
    if not size:
        return []
    pipe = r.pipeline(transaction=False)
    for rank in range(chunk, size, chunk):
        pipe.zrevrange(pool, rank, rank, withscores=True)
    cuts = sorted({rows[0][1] for rows in pipe.execute() if rows}, reverse=True)
    highs = ["+inf"] + [repr(score) for score in cuts]
    lows = [f"({score!r}" for score in cuts] + ["-inf"]
    counts = [chunk] * len(cuts) + [size - chunk * len(cuts)]
    return list(zip(highs, lows, counts, strict=True))


def _snapshot(r: redis.Redis, key: str, pool: str, high: str, low: str) -> int:
    """Copy one segment's items (still in score order) aside; returns how many."""
    size = r.zrangestore(key, pool, high, low, byscore=True, desc=True)
    r.expire(key, 86400)
    return size


def enqueue_chunks(r: redis.Redis, settings: Settings, pid: str, run: str, indexes: object,
                   chunk: int) -> None:
    queue = task_queue(settings, same_server(r, decode_responses=False))
    for index in indexes:
        _enqueue_chunk(queue, pid, run, index, chunk)


def _enqueue_chunk(queue: Queue, pid: str, run: str, index: int, chunk: int) -> None:
    queue.enqueue(rescore_chunk, pid, run, index, chunk, job_id=f"{run}-c{index}",
                  retry=RETRY, job_timeout=JOB_TIMEOUT)


def rescore_chunk(pid: str, run: str, index: int, chunk: int) -> dict:
    """Re-score one chunk of a run's snapshot; only items still pending are updated."""
    r = _job_redis()
    progress = K.rescore_progress_key(pid, run)
    if r.hexists(progress, f"done:{index}"):
        result = {"skipped": "chunk already done"}  # a retry after the work was stored
    else:
        project = get_project(r, pid)
        tags, layout, clusters = (json.loads(value or "0") for value in
                                  r.hmget(progress, "tags", "layout", "clusters"))
        # Chunk 0 holds the top of the untagged set (the workers take chunks in order), so
        # the items experts are about to get are re-scored first.
        items = updated = 0
        for segment, (part, _, _) in enumerate(layout[index]):
            ids = r.zrange(K.rescore_snapshot_key(pid, run, index, segment), 0, -1, desc=True)
            updated += rescore_items(r, project, ids, tag=tags[part], clusters=bool(clusters))
            items += len(ids)
        # Atomic and counted once: a work horse killed here leaves the chunk both done and
        # counted, or neither (then its retry redoes it).
        lua.run(r, "finish_chunk", pid, [progress], [index, updated, items])
        result = {"items": items, "updated": updated}
    _finish_run(r, pid, run)  # also on a retry: the killed attempt may have stopped before
    return result


def _finish_run(r: redis.Redis, pid: str, run: str) -> None:
    progress = K.rescore_progress_key(pid, run)
    done, chunks, finished, layout = r.hmget(progress, "chunks_done", "chunks", "finished_at",
                                             "layout")
    if finished is None and int(done or 0) >= int(chunks):
        r.hset(progress, "finished_at", time.time())
        # Diversity counts leases per cluster since the last re-rank: this was one.
        r.delete(K.claimed_clusters_key(pid))
        keys = _snapshot_keys(pid, run, layout)
        if keys:
            r.unlink(*keys)  # freed off Redis's main thread


def _snapshot_keys(pid: str, run: str, layout: str) -> list[str]:
    return [K.rescore_snapshot_key(pid, run, index, segment)
            for index, segments in enumerate(json.loads(layout))
            for segment in range(len(segments))]


def rescore_items(r: redis.Redis, project: dict, ids: list[str], tag: str | None = None,
                  clusters: bool = True) -> int:
    """Score ``ids`` with the current committee and store the priorities of those still
    pending; returns how many were pending.

    ``tag`` names the set ``ids`` were read from ("" for the untagged one): an item with
    several tags is in several snapshots and is re-scored only from its first tag's.
    ``clusters``: also bring each item's pool-map cluster up to date.
    """
    ranker = current_ranker(r, project)
    return sum(_rescore_batch(r, project, ranker, ids[start:start + RESCORE_BATCH], tag,
                              clusters)
               for start in range(0, len(ids), RESCORE_BATCH))


def _rescore_batch(r: redis.Redis, project: dict, ranker: LoadedModel | None, ids: list[str],
                   tag: str | None, clusters: bool) -> int:
    """One Redis round trip to read, one to write: each call holds Redis for milliseconds.

    The pool map is consulted only when it matters: a new map (``clusters``), no model yet
    (coverage ranks every item then), or items without supplied predictions.
    """
    pid, prefix = project["id"], K.item_prefix(project["id"])
    replies = send_many(r, [("HMGET", prefix + iid, "p", "f", "b", "s", "st", "cl")
                            for iid in ids])
    rows = [(iid, row) for iid, row in zip(ids, replies, strict=True)
            if row[4] == "pending" and (tag is None or row[3].partition(",")[0] == tag)]
    if not rows:
        return 0
    pool_map = current_pool_map(r, pid)
    with _gc_paused():
        items = _decode_items(rows)
        coverage, assigned = None, None
        if clusters or ranker is None or not all(item.predictions for item in items):
            coverage, assigned = cover(items, pool_map)
        priorities, _ = score_items(
            items, project["strategy"], len(project["labels"]), ranker, breakdown=False,
            coverage=coverage, reference=pool_map.pool_map.reference if pool_map else None)
    # A new pool map moves items between clusters; only the changed ones are written.
    moved = [] if not clusters else [
        ("HSET", prefix + iid, "cl", cluster) for (iid, row), cluster
        in zip(rows, assigned.tolist(), strict=True) if row[5] != str(cluster)]
    # XX: only members still there. A claimed item has left its sets, so a re-score never
    # puts it back (no read-then-write race); nothing else of the item is written.
    by_set: dict[str, list] = defaultdict(list)
    keys_of: dict[str, list[str]] = {}
    for (iid, row), priority in zip(rows, priorities.tolist(), strict=True):
        tags = row[3] or ""
        if tags not in keys_of:
            keys_of[tags] = K.pool_keys(pid, tags.split(",") if tags else [])
        for key in keys_of[tags]:
            by_set[key] += (priority, iid)
    send_many(r, [("ZADD", key, "XX", *args) for key, args in by_set.items()] + moved)
    return len(rows)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a batch's ~10^4 small objects are built: with
    scikit-learn loaded, the collections they trigger cost more than the decoding itself
    (they hold no cycles; reference counting frees them)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _decode_items(rows: list[tuple[str, list]]) -> list[ItemInput]:
    """Items to score from their HMGET rows; all JSON decoded in two ``json.loads`` calls
    (one per field) instead of one per item."""
    predictions = json.loads("[" + ",".join(row[0] or "{}" for _, row in rows) + "]")
    features = json.loads("[" + ",".join(row[1] or "null" for _, row in rows) + "]")
    return [ItemInput(iid, preds, feats, [], None, float(row[2] or 0), None)
            for (iid, row), preds, feats in zip(rows, predictions, features, strict=True)]


def rescore_progress(r: redis.Redis, pid: str, run: str) -> dict | None:
    fields = r.hgetall(K.rescore_progress_key(pid, run))
    if not fields:
        return None
    return {"chunks": int(fields["chunks"]), "chunks_done": int(fields.get("chunks_done", 0)),
            "items": int(fields["total_items"]), "items_done": int(fields.get("items_done", 0)),
            "finished": "finished_at" in fields, "reason": fields.get("reason")}


def job_view(connection: redis.Redis, r: redis.Redis, job_id: str) -> dict | None:
    """``{"id", "status", "progress", "result"}`` of an RQ job or of a re-score run."""
    run_pid = _rescore_run_project(job_id)
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


def _job_id(kind: str, pid: str) -> str:
    """``kind-<random>-<hex of pid>``: RQ ids allow only letters, digits, _ and -."""
    return f"{kind}-{secrets.token_hex(4)}-{pid.encode().hex()}"


def _rescore_run_project(job_id: str) -> str | None:
    """The project of a re-score run id, else None."""
    kind, _, rest = job_id.partition("-")
    token, _, pid_hex = rest.partition("-")
    if kind != "rescore" or len(token) != 8 or not pid_hex:
        return None
    try:
        return bytes.fromhex(pid_hex).decode()
    except ValueError:
        return None


def _last_error(job: Job) -> str | None:
    result = job.latest_result() if hasattr(job, "latest_result") else None
    if result is not None and getattr(result, "exc_string", None):
        return result.exc_string.strip().splitlines()[-1]
    return None


# --- backfill: resume a re-score run, set priorities computed elsewhere ---------------------
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
    nothing, a worker popped the job and holds it), so no chunk runs twice at once.
    Returns the chunk indexes enqueued.
    """
    settings = settings or _settings()
    left = [index for index, done in rescore_chunks(r, pid, run).items() if done is None]
    progress = r.hgetall(K.rescore_progress_key(pid, run))
    if int(progress.get("captured", progress["chunks"])) < int(progress["chunks"]):
        raise NoSuchJobError(f"run '{run}' stopped while capturing its items; start a new "
                             "re-score")
    if left and int(progress["total_items"]) and not r.exists(
            *_snapshot_keys(pid, run, progress["layout"])):
        raise NoSuchJobError(f"the item snapshot of run '{run}' expired (it is kept a day); "
                             "start a new re-score")
    binary = same_server(r, decode_responses=False)
    jobs = Job.fetch_many([f"{run}-c{index}" for index in left], connection=binary)
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
    updated, not_pending, unknown = lua.run(r, "set_priorities", pid, [], args)
    return {"updated": updated, "not_pending": not_pending, "unknown": unknown}
