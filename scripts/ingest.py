"""``taskrank ingest PROJECT FILE``: stream items from JSONL, CSV, .npz or a Label Studio
JSON export into a project.

Items go in batches through the HTTP API (``--url``, ``--token``) or straight to Redis
(``--direct``), a few batches in flight at once.  Ingest upserts by item id, so running
the same file again creates nothing new.  A bad line is reported with its line number
(``.npz``: row index; Label Studio export: task position) and reason; the good ones still
go in.  A Label Studio task becomes the item ``data.taskrank_id`` (else its task id), with
``data`` as payload, ``data.features`` as features, each prediction (a chosen label and its
score) as a probability row, and a ground-truth annotation as the gold answer.

Exit status: 0 every item went in, 1 some were rejected (or the run stopped midway),
2 unusable input (missing file, unknown format, unknown project, bad CSV header).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import redis
from tqdm import tqdm

from taskrank.client import ApiError, Client, ClientError
from taskrank.queue.exceptions import InvalidInputError, TaskrankError
from taskrank.queue.settings import Settings, SettingsError
from taskrank.scripts.cli import add_server_arguments, positive_int
from taskrank.scripts.item_files import (
    FORMATS,
    FileFormatError,
    Record,
    csv_records,
    detect_format,
    jsonl_records,
    label_studio_records,
    npz_records,
)

SHOWN_REJECTIONS = 20
UNITS = {"npz": "row", "labelstudio": "task"}  # what a record's number counts
_FIRST_AT = re.compile(r"first at index (\d+)")


class Unusable(Exception):
    """Nothing can be ingested: exit 2 with this one line."""


class Stopped(Exception):
    """The run failed midway (server or Redis error): exit 1."""


def parse_args(argv: list[str] | None, settings: Settings) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="taskrank ingest", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("project", help="project id (it must exist)")
    parser.add_argument("file", help="items: .jsonl, .csv, .npz, .json (Label Studio's JSON "
                                     "export) (.gz too but .npz; - stdin)")
    parser.add_argument("--batch", type=positive_int, default=1000,
                        help="items per request (default 1000, the server's usual limit)")
    parser.add_argument("--jobs", type=positive_int, default=2,
                        help="batches in flight at once (default 2)")
    parser.add_argument("--format", choices=FORMATS, help="override the file extension")
    parser.add_argument("--direct", action="store_true",
                        help="write to Redis (TASKRANK_REDIS_URL or the embedded one) "
                             "instead of the HTTP API")
    parser.add_argument("--rejects", metavar="FILE",
                        help="write every rejected line to FILE as JSONL {line, id, detail}")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_server_arguments(parser, settings)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        return _fail(str(error))
    args = parse_args(argv, settings)
    try:
        fmt = detect_format(args.file, args.format)
        if args.file != "-" and not os.path.isfile(args.file):
            raise Unusable(f"no file {args.file!r}")
        if args.direct:
            from taskrank.queue.running import NoServerError, command_settings

            try:
                with command_settings(settings, say=lambda text: print(
                        f"taskrank ingest: {text}", file=sys.stderr)) as found:
                    return run(args, fmt, DirectTarget(found, args.project))
            except (NoServerError, SettingsError) as error:
                raise Unusable(str(error)) from None
        with HttpTarget(args.url, args.token, args.project) as target:
            return run(args, fmt, target)
    except (Unusable, FileFormatError) as error:
        return _fail(str(error))


def run(args: argparse.Namespace, fmt: str, target: HttpTarget | DirectTarget) -> int:
    """Stream the file into ``target``; print the summary; the exit status."""
    project = target.project()
    total, records = open_records(args.file, fmt, project["labels"], args.batch)
    report = Report(args.rejects, UNITS.get(fmt, "line"), total)
    started = time.perf_counter()
    stopped = None
    try:
        stream(records, target, args.batch, args.jobs, report)
    except (Stopped, FileFormatError) as error:
        stopped = str(error)
    except KeyboardInterrupt:
        stopped = "interrupted"
    finally:
        report.close()
    seconds = time.perf_counter() - started
    summary = report.summary(project["id"], seconds)
    print(json.dumps(summary) if args.json else _describe(summary), flush=True)
    if stopped:
        print(f"taskrank ingest: {stopped}; the items before it went in, and running the same "
              "file again is safe (ingest upserts by id)", file=sys.stderr)
    return 1 if stopped or report.rejected else 0


def open_records(path: str, fmt: str, labels: list[str],
                 slice_rows: int) -> tuple[int | None, Iterator[Record]]:
    """(rows when known, records); checks the CSV header and .npz arrays now."""
    if fmt == "npz":
        if path == "-":
            raise Unusable("an .npz cannot be read from standard input; give its path")
        return npz_records(path, labels, slice_rows)
    if fmt == "csv":
        return None, csv_records(path, labels)
    if fmt == "labelstudio":
        return None, label_studio_records(path, labels)
    return None, jsonl_records(path)


def stream(records: Iterable[Record], target: HttpTarget | DirectTarget, size: int, jobs: int,
           report: Report) -> None:
    """Send batches of good records, ``jobs`` at a time; bad ones go to the report."""
    with ThreadPoolExecutor(jobs, thread_name_prefix="ingest") as pool:
        pending: deque = deque()
        try:
            for batch in batches(records, size, report):
                pending.append((batch, pool.submit(target.send, batch)))
                while len(pending) > jobs:
                    report.add(*_result(*pending.popleft()))
            while pending:
                report.add(*_result(*pending.popleft()))
        finally:
            for _, future in pending:
                future.cancel()


def batches(records: Iterable[Record], size: int, report: Report) -> Iterator[list[Record]]:
    batch: list[Record] = []
    for record in records:
        if record.error:
            report.reject(record.line, None, record.error)
            continue
        batch.append(record)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _result(batch: list[Record], future: object) -> tuple[list[Record], dict]:
    try:
        return batch, future.result()
    except (ClientError, redis.RedisError, TaskrankError) as error:
        raise Stopped(f"stopped at line {batch[0].line}: {error}") from None


class HttpTarget:
    """Batches to ``POST /v1/projects/{pid}/items``, one keep-alive client per thread."""

    def __init__(self, url: str, token: str | None, pid: str) -> None:
        self.url, self.token, self.pid = url, token, pid
        self._local = threading.local()
        self._clients: list[Client] = []

    def _client(self) -> Client:
        if not hasattr(self._local, "client"):
            self._local.client = Client(self.url, self.token)
            self._clients.append(self._local.client)
        return self._local.client

    def project(self) -> dict:
        try:
            return self._client().get(f"/v1/projects/{self.pid}")
        except ClientError as error:
            raise Unusable(str(error)) from None

    def send(self, batch: list[Record]) -> dict:
        body = b'{"items":[' + b",".join(
            record.raw if record.raw is not None else json.dumps(
                record.item, separators=(",", ":")).encode() for record in batch) + b"]}"
        try:
            return self._client().post(f"/v1/projects/{self.pid}/items", body)
        except ApiError as error:
            if error.status == 422 and isinstance(error.body, dict) and "rejected" in error.body:
                return {"created": 0, "updated": 0, "rejected": error.body["rejected"]}
            if error.status == 413 and len(batch) > 1:
                return _split(self.send, batch)  # over the server's batch or body limit
            raise

    def __enter__(self) -> HttpTarget:
        return self

    def __exit__(self, *exc: object) -> None:
        for client in self._clients:
            client.close()


class DirectTarget:
    """Batches to ``taskrank.queue.items.ingest`` on Redis: what the API does, minus HTTP."""

    def __init__(self, settings: Settings, pid: str) -> None:
        from taskrank.queue.connection import connect, rq_url
        from taskrank.queue.settings import install

        rq_url(settings)  # an ingest may queue a job: a cluster needs a Redis for RQ
        install(settings)  # what the queue code reads when it queues a job (rq_redis)
        self.r = connect(settings, socket_timeout=120.0)
        self.pid = pid

    def project(self) -> dict:
        from taskrank.queue.projects import get_project

        try:
            return get_project(self.r, self.pid)
        except TaskrankError as error:
            raise Unusable(error.detail) from None
        except redis.RedisError as error:
            raise Unusable(f"cannot reach Redis: {error}") from None

    def send(self, batch: list[Record]) -> dict:
        from taskrank.queue.items import ingest
        from taskrank.queue.models import current_ranker
        from taskrank.queue.projects import get_project

        project = get_project(self.r, self.pid)  # fresh: the feature length may be set now
        try:
            return ingest(self.r, project, [record.item for record in batch],
                          current_ranker(self.r, project))
        except InvalidInputError as error:
            return {"created": 0, "updated": 0, "rejected": error.extra.get("rejected", [])}


def _split(send: object, batch: list[Record]) -> dict:
    half = len(batch) // 2
    first, second = send(batch[:half]), send(batch[half:])
    moved = [{**entry, "index": entry["index"] + half} for entry in second["rejected"]]
    return {"created": first["created"] + second["created"],
            "updated": first["updated"] + second["updated"],
            "rejected": first["rejected"] + moved}


@dataclass
class Report:
    """Counts, the progress bar and the list of rejected lines."""

    rejects_path: str | None
    unit: str  # "line", "row" or "task"
    total: int | None
    created: int = 0
    updated: int = 0
    rejected: int = 0
    bar: tqdm = field(init=False)

    def __post_init__(self) -> None:
        self._rejects = open(self.rejects_path, "w") if self.rejects_path else None  # noqa: SIM115
        self.bar = tqdm(total=self.total, unit=" items", unit_scale=True, disable=None,
                        file=sys.stderr, dynamic_ncols=True, smoothing=0.1)

    def add(self, batch: list[Record], result: dict) -> None:
        self.created += result["created"]
        self.updated += result["updated"]
        for entry in sorted(result["rejected"], key=lambda e: e["index"]):
            detail = _FIRST_AT.sub(lambda m: f"first at {self.unit} {batch[int(m[1])].line}",
                                   entry["detail"])
            self.reject(batch[entry["index"]].line, entry.get("id"), detail, counted=False)
        self.bar.update(len(batch))
        self.bar.set_postfix(rejected=self.rejected, refresh=False)

    def reject(self, line: int, iid: str | None, detail: str, counted: bool = True) -> None:
        """Record one bad line; ``counted``: it never reached the bar (a local error)."""
        self.rejected += 1
        if counted:
            self.bar.update(1)
        if self._rejects:
            self._rejects.write(json.dumps({self.unit: line, "id": iid, "detail": detail}) + "\n")
        if self.rejected <= SHOWN_REJECTIONS:
            who = f" (id {iid!r})" if iid else ""
            self.bar.write(f"{self.unit} {line}{who}: {detail}", file=sys.stderr)
        elif self.rejected == SHOWN_REJECTIONS + 1:
            more = f"see {self.rejects_path}" if self._rejects else "list them all with --rejects"
            self.bar.write(f"more rejected {self.unit}s follow; {more}", file=sys.stderr)

    def close(self) -> None:
        self.bar.close()
        if self._rejects:
            self._rejects.close()

    def summary(self, pid: str, seconds: float) -> dict:
        handled = self.created + self.updated + self.rejected
        return {"project": pid, "created": self.created, "updated": self.updated,
                "rejected": self.rejected, "seconds": round(seconds, 3),
                "items_per_s": round(handled / seconds, 1) if seconds > 0 else None}


def _describe(summary: dict) -> str:
    return (f"ingest {summary['project']}: created {summary['created']}, updated "
            f"{summary['updated']}, rejected {summary['rejected']} in {summary['seconds']:.1f} s "
            f"({summary['items_per_s'] or 0:,.0f} items/s)")


def _fail(message: str) -> int:
    print(f"taskrank ingest: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
