"""Prometheus metrics kept in Redis, so every web process and worker reports the same numbers.

Request counts and latencies are one Redis hash that every web process adds to in batches
(its buffer and flusher thread: ``server/recorder.py``); this module owns the hash's field
format, writes the batches and renders them. Project gauges (queue depth, open leases,
label counts, model version) are read from the store when scraped; retrain durations are
recorded by the retrain job (``observe_retrain``).
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

import redis

from taskrank.queue import keys as K

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0)
RETRAIN_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
_SEP = "\t"  # between the parts of a stored field name; no method, route or status has one


# --- recording --------------------------------------------------------------------------------
def _bucket(bounds: Sequence[float], value: float) -> int:
    """Index of the first bound >= value (``len(bounds)``: the +Inf bucket)."""
    return bisect.bisect_left(bounds, value)


def request_fields(method: str, route: str, status: int, seconds: float
                   ) -> tuple[str, str, str]:
    """The fields of the requests hash one answered request adds to: its count, its
    latency bucket's count (both +1) and its latency sum (+seconds)."""
    series = _SEP.join((method, route, str(status)))
    return (f"{series}{_SEP}n", f"{series}{_SEP}b{_bucket(REQUEST_BUCKETS, seconds)}",
            f"{series}{_SEP}s")


def add_requests(r: redis.Redis, ints: Counter, floats: dict[str, float]) -> None:
    """Add a web process's buffered counts and sums (fields of ``request_fields``)."""
    # MULTI/EXEC: a batch lands whole or not at all, so a retried batch counts once.
    pipe = r.pipeline(transaction=True)
    for field, value in ints.items():
        pipe.hincrby(K.metrics_http_key(), field, value)
    for field, value in floats.items():
        pipe.hincrbyfloat(K.metrics_http_key(), field, value)
    pipe.execute()


def count_rejected(r: redis.Redis, rejected: Counter) -> None:
    """Add refused labels to the counters of the projects that exist (ids come from URLs)."""
    pids = sorted(rejected)
    known = r.smismember(K.projects_key(), pids)
    pipe = r.pipeline(transaction=False)
    for pid, exists in zip(pids, known, strict=True):
        if exists:
            pipe.hincrby(K.counters_key(pid), "rejected", rejected[pid])
    pipe.execute()


def observe_retrain(r: redis.Redis, pid: str, seconds: float) -> None:
    """Record how long one retrain took (called by the retrain job)."""
    key = K.retrain_durations_key(pid)
    pipe = r.pipeline(transaction=True)
    pipe.hincrby(key, "n", 1)
    pipe.hincrby(key, f"b{_bucket(RETRAIN_BUCKETS, seconds)}", 1)
    pipe.hincrbyfloat(key, "s", seconds)
    pipe.execute()


# --- exposition -------------------------------------------------------------------------------
def render(r: redis.Redis) -> str:
    """Every metric in the Prometheus text exposition format 0.0.4."""
    lines: list[str] = []
    _render_requests(lines, r.hgetall(K.metrics_http_key()))
    _render_projects(lines, r)
    return "\n".join(lines) + "\n"


def _render_requests(lines: list[str], fields: dict[str, str]) -> None:
    series: dict[tuple[str, str, str], dict[str, str]] = defaultdict(dict)
    for field, value in fields.items():
        parts = field.split(_SEP)
        if len(parts) == 4:
            series[(parts[0], parts[1], parts[2])][parts[3]] = value
    ordered = sorted(series.items())
    _header(lines, "taskrank_http_requests_total", "counter",
            "HTTP requests answered, by method, route template and status.")
    for (method, route, status), values in ordered:
        labels = {"method": method, "route": route, "status": status}
        lines.append(_sample("taskrank_http_requests_total", labels, int(values.get("n", 0))))
    _header(lines, "taskrank_http_request_duration_seconds", "histogram",
            "Time to answer HTTP requests, by method, route template and status.")
    for (method, route, status), values in ordered:
        _histogram(lines, "taskrank_http_request_duration_seconds",
                   {"method": method, "route": route, "status": status}, REQUEST_BUCKETS,
                   values)


# Items by status, kept by the Lua scripts in the counters hash (there is no global pool
# to count).
STATUSES = ("pending", "leased", "labeled", "gold", "withdrawn")
STATUS_COUNTERS = tuple(f"n:{status}" for status in STATUSES)

_PROJECT_FAMILIES = (
    ("taskrank_queue_pending", "gauge", "Rankable (pending) items in the project's pool."),
    ("taskrank_items", "gauge", "Items by status."),
    ("taskrank_leases_open", "gauge", "Open leases (tasks handed out, not yet returned)."),
    ("taskrank_labels_total", "counter", "Labels submitted: counted, late (recorded on an "
     "expired or released lease, not counted) and rejected (422)."),
    ("taskrank_model_version", "gauge", "Current model version (0 before any training)."),
)


def _render_projects(lines: list[str], r: redis.Redis) -> None:
    pids = sorted(r.smembers(K.projects_key()))
    pipe = r.pipeline(transaction=False)
    for pid in pids:
        pipe.scard(K.items_key(pid))
        pipe.hmget(K.counters_key(pid), *STATUS_COUNTERS)
        pipe.zcard(K.leases_key(pid))
        pipe.hmget(K.counters_key(pid), "counted", "late", "rejected")
        pipe.hget(K.model_meta_key(pid), "version")
        pipe.hgetall(K.retrain_durations_key(pid))
    rows = pipe.execute()
    projects = [(pid, rows[6 * i:6 * i + 6]) for i, pid in enumerate(pids)]
    samples = {pid: _project_samples(*row[1:5]) for pid, row in projects}
    for name, kind, help_text in _PROJECT_FAMILIES:
        _header(lines, name, kind, help_text)
        for pid in pids:
            for labels, value in samples[pid][name]:
                lines.append(_sample(name, {"project": pid, **labels}, value))
    _header(lines, "taskrank_retrain_duration_seconds", "histogram",
            "Time a retrain took to fit and evaluate the ranking model.")
    for pid, row in projects:
        _histogram(lines, "taskrank_retrain_duration_seconds", {"project": pid},
                   RETRAIN_BUCKETS, row[5])


def _project_samples(by_status: list[str | None], leases: int, labels: list[str | None],
                     version: str | None) -> dict[str, list]:
    """Family name -> [(labels, value)] of one project."""
    counts = {status: int(count or 0) for status, count in zip(STATUSES, by_status,
                                                               strict=True)}
    return {
        "taskrank_queue_pending": [({}, counts["pending"])],
        "taskrank_items": [({"status": status}, count) for status, count in counts.items()],
        "taskrank_leases_open": [({}, leases)],
        "taskrank_labels_total": [({"outcome": outcome}, int(count or 0)) for outcome, count
                                  in zip(("counted", "late", "rejected"), labels, strict=True)],
        "taskrank_model_version": [({}, int(version or 0))],
    }


def _histogram(lines: list[str], name: str, labels: dict[str, str],
               bounds: Sequence[float], values: dict[str, str]) -> None:
    """Cumulative ``_bucket`` samples from the stored per-bucket counts, then sum and count."""
    running = 0
    for index, bound in enumerate([*bounds, float("inf")]):
        running += int(values.get(f"b{index}", 0))
        lines.append(_sample(name + "_bucket", {**labels, "le": _number(bound)}, running))
    lines.append(_sample(name + "_sum", labels, float(values.get("s", 0.0))))
    lines.append(_sample(name + "_count", labels, int(values.get("n", 0))))


def _header(lines: list[str], name: str, kind: str, help_text: str) -> None:
    lines.append(f"# HELP {name} {help_text}")
    lines.append(f"# TYPE {name} {kind}")


def _sample(name: str, labels: dict[str, str], value: float) -> str:
    inner = ",".join(f'{key}="{_escape(str(val))}"' for key, val in labels.items())
    return f"{name}{{{inner}}} {_number(value)}" if inner else f"{name} {_number(value)}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if value == float("inf"):
        return "+Inf"
    return repr(float(value))


def metric_names() -> Iterable[str]:
    """The metric families ``render`` writes."""
    return ("taskrank_http_requests_total", "taskrank_http_request_duration_seconds",
            *(name for name, _, _ in _PROJECT_FAMILIES), "taskrank_retrain_duration_seconds")
