"""Projects: labels, redundancy, lease length, budget and the versioned acquisition
strategy."""

from __future__ import annotations

import json
import time

import redis

from taskrank.learning.priority import DEFAULT_STRATEGY_DICT, Strategy
from taskrank.queue import keys as K
from taskrank.queue.clock import rfc3339
from taskrank.queue.exceptions import NoSuchProjectError, ProjectExistsError
from taskrank.queue.validation import (
    check_id,
    check_int,
    check_keys,
    check_object,
    check_positive_or_null,
    fail,
)

FIELDS = {"id", "labels", "redundancy", "lease_seconds", "strategy", "budget_usd"}
MUTABLE = {"redundancy", "lease_seconds", "strategy", "budget_usd"}
MAX_LABELS = 1000
MAX_BUDGET_USD = 1e12
STRATEGY_HISTORY_KEPT = 20


def parse_strategy(value: object) -> dict:
    """A partial strategy merged onto the defaults and validated as a whole."""
    try:
        return Strategy.from_dict(check_object(value, "strategy")).to_dict()
    except ValueError as error:
        raise fail("strategy", str(error)) from None


def _check_labels(value: object) -> list[str]:
    if not isinstance(value, list) or not 2 <= len(value) <= MAX_LABELS:
        raise fail("labels", f"must be a list of 2 to {MAX_LABELS} class names")
    for index, label in enumerate(value):
        if not isinstance(label, str) or not 1 <= len(label) <= 200:
            raise fail(f"labels[{index}]", "must be a non-empty string of at most 200 characters")
    if len(set(value)) != len(value):
        raise fail("labels", "class names must be distinct")
    return value


def _check_settings(body: dict) -> dict:
    """Validate the fields that both create and PATCH accept."""
    clean = {}
    if "redundancy" in body:
        clean["redundancy"] = check_int(body["redundancy"], "redundancy", 1, 50)
    if "lease_seconds" in body:
        clean["lease_seconds"] = check_int(body["lease_seconds"], "lease_seconds", 10, 7 * 86400)
    if "strategy" in body:
        clean["strategy"] = parse_strategy(body["strategy"])
    if "budget_usd" in body:
        clean["budget_usd"] = check_positive_or_null(body["budget_usd"], "budget_usd",
                                                     MAX_BUDGET_USD, "no budget")
    return clean


def create_project(r: redis.Redis, body: object) -> dict:
    body = check_object(body, "body")
    check_keys(body, "", FIELDS, {"id", "labels"})
    project = {"id": check_id(body["id"], "id"), "labels": _check_labels(body["labels"]),
               "redundancy": 1, "lease_seconds": 900, "strategy": parse_strategy({}),
               "budget_usd": None}
    project.update(_check_settings(body))
    now = time.time()
    fields = _encode({**project, "strategy_version": 1, "created_at": now, "updated_at": now})
    # HSETNX on the id field makes creation race-free: only one creator wins.
    if not r.hsetnx(K.project_key(project["id"]), "id", project["id"]):
        raise ProjectExistsError(f"project '{project['id']}' exists; PATCH it to change it")
    # Two slots on a cluster: the project is listed only once its hash is written.
    pipe = r.pipeline(transaction=False)
    pipe.hset(K.project_key(project["id"]), mapping=fields)
    pipe.sadd(K.projects_key(), project["id"])
    pipe.execute()
    return get_project(r, project["id"])


def update_project(r: redis.Redis, pid: str, body: object) -> tuple[dict, bool]:
    """Apply a PATCH; returns the project and whether the strategy changed."""
    body = check_object(body, "body")
    check_keys(body, "", MUTABLE)
    changes = _check_settings(body)
    current = get_project(r, pid)
    strategy_changed = "strategy" in changes and changes["strategy"] != current["strategy"]
    fields = _encode({**changes, "updated_at": time.time()})
    pipe = r.pipeline()
    if strategy_changed:
        previous = {"version": current["strategy_version"], "strategy": current["strategy"],
                    "replaced_at": rfc3339(fields["updated_at"])}
        pipe.lpush(K.strategy_history_key(pid), json.dumps(previous))
        pipe.ltrim(K.strategy_history_key(pid), 0, STRATEGY_HISTORY_KEPT - 1)
        pipe.hincrby(K.project_key(pid), "strategy_version", 1)
    elif "strategy" in changes:
        del fields["strategy"]
    pipe.hset(K.project_key(pid), mapping=fields)
    pipe.execute()
    return get_project(r, pid), strategy_changed


def get_project(r: redis.Redis, pid: str) -> dict:
    fields = r.hgetall(K.project_key(pid))
    if "labels" not in fields:
        raise NoSuchProjectError(f"no project '{pid}'; create it with POST /v1/projects")
    return _decode(fields)


def strategy_history(r: redis.Redis, pid: str) -> list[dict]:
    return [json.loads(entry) for entry in r.lrange(K.strategy_history_key(pid), 0, -1)]


def list_projects(r: redis.Redis) -> list[dict]:
    pids = sorted(r.smembers(K.projects_key()))
    pipe = r.pipeline(transaction=False)  # several projects: several slots on a cluster
    for pid in pids:
        pipe.hgetall(K.project_key(pid))
    return [_decode(fields) for fields in pipe.execute() if "labels" in fields]


def set_input_schema(r: redis.Redis, pid: str, n_features: int | None,
                     models: list[str]) -> None:
    """Remember the feature length (fixed per project) and every model name seen."""
    if n_features is not None:
        r.hsetnx(K.project_key(pid), "n_features", n_features)
    if models:
        r.hset(K.project_key(pid), "models", json.dumps(sorted(models)))


# budget_usd as JSON too: null (no budget) is stored as such.
_JSON_FIELDS = ("labels", "strategy", "models", "budget_usd")
_INT_FIELDS = ("redundancy", "lease_seconds", "strategy_version", "n_features")


def _encode(project: dict) -> dict:
    return {key: json.dumps(value) if key in _JSON_FIELDS else value
            for key, value in project.items()}


def _decode(fields: dict) -> dict:
    project = dict(fields)
    for key in _JSON_FIELDS:
        if key in project:
            project[key] = json.loads(project[key])
    for key in _INT_FIELDS:
        if key in project:
            project[key] = int(project[key])
    for key in ("created_at", "updated_at"):
        project[key] = rfc3339(project[key])  # DESIGN §3: times are RFC 3339 UTC
    project.setdefault("models", [])
    project.setdefault("n_features", None)
    project.setdefault("budget_usd", None)  # projects stored before budgets had none
    # Sections and fields added after a project was stored take their defaults.
    project["strategy"] = _with_defaults(DEFAULT_STRATEGY_DICT, project["strategy"])
    return project


def _with_defaults(defaults: dict, stored: dict) -> dict:
    """``stored`` with what it lacks of ``defaults``, section by section."""
    return {**defaults, **{key: _with_defaults(defaults[key], value)
                           if isinstance(value, dict) and isinstance(defaults.get(key), dict)
                           else value for key, value in stored.items()}}
