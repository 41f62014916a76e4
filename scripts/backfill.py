"""``taskrank backfill PROJECT``: re-score every pending item, fanned out over RQ workers.

The pending pool is snapshotted and cut into chunks (``--chunk``, default
TASKRANK_RESCORE_CHUNK), one RQ job each, exactly as after a retrain or a strategy change:
more workers (``taskrank worker``, ``taskrank serve --rq-workers N``) finish sooner.  The
progress bar follows the run's progress in Redis.  An interrupted run goes on with
``--resume RUN_ID``: only the chunks not done run again.  ``--direct`` runs the chunks in
this process instead (no worker needed).  ``--from FILE`` instead sets priorities
computed elsewhere (CSV ``id,priority`` or JSONL), for the items still pending.

Works on Redis directly (TASKRANK_REDIS_URL, or the embedded Redis of TASKRANK_DATA_DIR):
run it next to Redis, like ``taskrank worker``.  Exit status: 0 done, 1 a chunk failed,
lines were rejected or the run was interrupted, 2 unusable input.
"""

from __future__ import annotations

import argparse
import json
import secrets
import signal
import sys
import threading
import time

import redis
from rq import Worker
from rq.job import Job, JobStatus
from tqdm import tqdm

from taskrank.queue import keys as K
from taskrank.queue.backfill import rescore_chunks, resume_rescore, set_priorities
from taskrank.queue.connection import connect, connect_rq, rq_redis
from taskrank.queue.exceptions import NoSuchJobError, NoSuchProjectError
from taskrank.queue.projects import get_project
from taskrank.queue.rescore import chunk_job_id, enqueue_rescore, rescore_progress
from taskrank.queue.running import NoServerError, command_settings
from taskrank.queue.settings import Settings, SettingsError, current, install
from taskrank.queue.worker import InProcessWorker, task_queue, task_queues
from taskrank.scripts.cli import positive_int
from taskrank.scripts.item_files import FileFormatError, detect_format, priority_records

SHOWN_REJECTIONS = 20
FROM_BATCH = 1000  # pairs per Lua call: Redis stays responsive between calls
POLL_SECONDS = 0.25
CHECK_SECONDS = 2.0  # how often the chunks' jobs are checked for failures


class Unusable(Exception):
    """Nothing can be done: exit 2 with this one line."""


class Stopped(Exception):
    """The run could not finish (a chunk failed or was lost): exit 1."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="taskrank backfill", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("project", help="project id")
    parser.add_argument("--from", dest="source", metavar="FILE",
                        help="set these priorities (CSV id,priority or JSONL) instead of "
                             "re-scoring")
    parser.add_argument("--format", choices=("csv", "jsonl"), help="format of --from FILE")
    parser.add_argument("--chunk", type=positive_int,
                        help="items per re-score job (default TASKRANK_RESCORE_CHUNK); "
                             f"with --from, ids per Redis call (default {FROM_BATCH})")
    parser.add_argument("--resume", metavar="RUN_ID",
                        help="finish an interrupted run: only its chunks not done run again")
    parser.add_argument("--direct", action="store_true",
                        help="run the chunks in this process, not on the RQ workers")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = Settings.from_env()
        if args.source and args.resume:
            raise Unusable("--from sets priorities itself; it cannot --resume a re-score run")
        with command_settings(settings, say=lambda text: print(f"taskrank backfill: {text}",
                                                                file=sys.stderr)) as found:
            settings = install(found)  # what the queue code it calls reads (rq_redis)
            r = connect(settings, socket_timeout=120.0)
            project = _project(r, args.project)
            summary = (apply_file(r, project["id"], args) if args.source
                       else backfill(r, settings, project["id"], args))
    except (Unusable, SettingsError, FileFormatError, NoServerError) as error:
        print(f"taskrank backfill: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary) if args.json else _describe(summary), flush=True)
    if summary.get("stopped"):
        print(f"taskrank backfill: {summary['stopped']}", file=sys.stderr)
    return 1 if summary.get("stopped") or summary.get("rejected") else 0


def _project(r: redis.Redis, pid: str) -> dict:
    try:
        return get_project(r, pid)
    except NoSuchProjectError as error:
        raise Unusable(error.detail) from None
    except redis.RedisError as error:
        raise Unusable(f"cannot reach Redis: {error}") from None


# --- re-score over RQ -----------------------------------------------------------------------
def backfill(r: redis.Redis, settings: Settings, pid: str, args: argparse.Namespace) -> dict:
    """Start (or resume) a re-score run, follow it to the end; the summary."""
    if args.direct:  # queues of our own, which only this process works
        settings = settings.replace(
            queue_name=f"{settings.queue_name}-backfill-{secrets.token_hex(4)}")
    elif not Worker.count(queue=task_queue(settings, connect_rq(settings))):
        raise Unusable(f"no RQ worker listens on queue '{settings.queue_name}'; start one "
                       "('taskrank worker' or 'taskrank serve') or run here with --direct")
    started = time.perf_counter()
    run = args.resume or enqueue_rescore(r, pid, reason="backfill", settings=settings,
                                         chunk=args.chunk)
    try:
        requeued = resume_rescore(r, pid, run, settings) if args.resume else None
    except NoSuchJobError as error:
        raise Unusable(error.detail) from None
    progress = rescore_progress(r, pid, run)
    print(_start_line(pid, run, progress, requeued), file=sys.stderr, flush=True)
    initial = progress["items_done"]
    bar = tqdm(total=progress["items"], initial=initial, unit=" items",
               unit_scale=True, disable=None, file=sys.stderr, dynamic_ncols=True)
    stopped = None
    try:
        if args.direct:
            stopped = work_here(settings, r, pid, run, bar)
        if stopped is None:
            follow(r, pid, run, bar, check=True)
    except Stopped as error:
        stopped = f"{error}; finish the run with --resume {run}"
    except KeyboardInterrupt:
        where = "the queued chunks still run on the workers" if not args.direct else "stopped"
        stopped = f"interrupted ({where}); finish the run with --resume {run}"
    finally:
        bar.close()
    return _summary(r, pid, run, time.perf_counter() - started, stopped, initial)


def _start_line(pid: str, run: str, progress: dict, requeued: list[int] | None) -> str:
    line = (f"backfill {pid}: run {run}, {progress['items']:,} items in {progress['chunks']} "
            f"chunks")
    if requeued is not None:
        line += (f"; resumed: {progress['chunks_done']} chunks were done, "
                 f"{len(requeued)} enqueued again")
    return line + f" (if interrupted: --resume {run})"


def work_here(settings: Settings, r: redis.Redis, pid: str, run: str, bar: tqdm) -> str | None:
    """Work the run's private queue in this process; a reason when it stopped early."""
    connection = connect_rq(settings)
    queues = task_queues(settings, connection)
    done = threading.Event()
    watcher = threading.Thread(target=follow, args=(r, pid, run, bar), kwargs={"done": done},
                               daemon=True)
    watcher.start()
    previous = current()
    try:
        install(settings)  # the jobs read their queues from the installed settings
        # A burst worker stops after its job on Ctrl-C; what remains waits for --resume.
        InProcessWorker(queues, connection=connection).work(burst=True, logging_level="WARNING")
        left = sum(queue.count for queue in queues)
    finally:
        install(previous)
        done.set()
        watcher.join()
        for queue in queues:
            queue.delete(delete_jobs=True)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.default_int_handler)
    return "interrupted" if left else None


def follow(r: redis.Redis, pid: str, run: str, bar: tqdm, check: bool = False,
           done: threading.Event | None = None) -> None:
    """Feed the bar from the run's progress until it finishes (or ``done`` is set)."""
    checked = time.monotonic()
    while not (done and done.is_set()):
        progress = rescore_progress(r, pid, run)
        bar.update(progress["items_done"] - bar.n)
        if progress["finished"]:
            return
        if check and time.monotonic() - checked > CHECK_SECONDS:
            _check_chunks(r, pid, run)
            checked = time.monotonic()
        time.sleep(POLL_SECONDS)


def _check_chunks(r: redis.Redis, pid: str, run: str) -> None:
    """Raise ``Stopped`` when a chunk not done has no live job (it failed or was lost)."""
    progress = r.hgetall(K.rescore_progress_key(pid, run))
    queued = range(int(progress["chunks"]) if "tail_queued" in progress
                   else int(progress.get("top_chunks") or progress["chunks"]))
    left = [index for index, done in rescore_chunks(r, pid, run).items()
            if done is None and index in queued]  # the tail is queued once the top is done
    jobs = Job.fetch_many([chunk_job_id(progress, run, index) for index in left],
                          connection=rq_redis(r))
    for index, job in zip(left, jobs, strict=True):
        if job is None:
            raise Stopped(f"chunk {index} has no job any more (its queue was emptied?)")
        status = job.get_status(refresh=False)
        if status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
            error = job.latest_result()
            why = error.exc_string.strip().splitlines()[-1] if error and error.exc_string else ""
            raise Stopped(f"chunk {index} {status.value}: {why}".rstrip(": "))


def _summary(r: redis.Redis, pid: str, run: str, seconds: float, stopped: str | None,
             initial: int) -> dict:
    """Counts of the whole run; the rate is of the items done by this invocation."""
    progress = rescore_progress(r, pid, run)
    chunks = rescore_chunks(r, pid, run)
    return {"project": pid, "run": run, "items": progress["items"],
            "items_done": progress["items_done"],
            "updated": sum(done or 0 for done in chunks.values()),
            "chunks": progress["chunks"], "chunks_done": progress["chunks_done"],
            "seconds": round(seconds, 3),
            "items_per_s": round((progress["items_done"] - initial) / seconds, 1)
            if seconds else None, "stopped": stopped}


# --- priorities from a file -----------------------------------------------------------------
def apply_file(r: redis.Redis, pid: str, args: argparse.Namespace) -> dict:
    """Set the file's priorities for items still pending, batch by batch."""
    fmt = detect_format(args.source, args.format)
    records = priority_records(args.source, fmt)
    size = args.chunk or FROM_BATCH
    started = time.perf_counter()
    counts = {"lines": 0, "updated": 0, "not_pending": 0, "rejected": 0}
    batch: list[tuple[int, str, float]] = []
    with tqdm(unit=" items", unit_scale=True, disable=None, file=sys.stderr) as bar:
        for line, iid, value in records:
            counts["lines"] += 1
            if iid is None:
                _reject(bar, counts, line, value)
            else:
                batch.append((line, iid, value))
            if len(batch) >= size:
                _apply(r, pid, batch, counts, bar)
                batch = []
        if batch:
            _apply(r, pid, batch, counts, bar)
    seconds = time.perf_counter() - started
    return {"project": pid, "from": args.source, **counts, "seconds": round(seconds, 3),
            "items_per_s": round(counts["lines"] / seconds, 1) if seconds else None}


def _apply(r: redis.Redis, pid: str, batch: list, counts: dict, bar: tqdm) -> None:
    result = set_priorities(r, pid, [(iid, value) for _, iid, value in batch])
    counts["updated"] += result["updated"]
    counts["not_pending"] += result["not_pending"]
    for position in result["unknown"]:
        line, iid, _ = batch[position]
        _reject(bar, counts, line, f"no item {iid!r} in project {pid!r}")
    bar.update(len(batch))


def _reject(bar: tqdm, counts: dict, line: int, why: str) -> None:
    counts["rejected"] += 1
    if counts["rejected"] <= SHOWN_REJECTIONS:
        bar.write(f"line {line}: {why}", file=sys.stderr)
    elif counts["rejected"] == SHOWN_REJECTIONS + 1:
        bar.write("more rejected lines follow (not shown)", file=sys.stderr)


def _describe(summary: dict) -> str:
    rate = f"{summary['items_per_s'] or 0:,.0f} items/s"
    if "from" in summary:
        return (f"backfill {summary['project']} from {summary['from']}: {summary['lines']:,} "
                f"lines, {summary['updated']:,} updated, {summary['not_pending']:,} not pending "
                f"(left alone), {summary['rejected']:,} rejected in {summary['seconds']:.1f} s "
                f"({rate})")
    return (f"backfill {summary['project']}: run {summary['run']}, {summary['items']:,} items, "
            f"{summary['updated']:,} updated (still pending), {summary['chunks_done']}/"
            f"{summary['chunks']} chunks in {summary['seconds']:.1f} s ({rate})")


if __name__ == "__main__":
    sys.exit(main())
