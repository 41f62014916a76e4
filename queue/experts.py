"""Experts: declared skills, capacity, cost and daily hours (learned skill: queue/skills.py)."""

from __future__ import annotations

import json
import time

import redis

from taskrank.learning import routing
from taskrank.queue import keys as K
from taskrank.queue.clock import rfc3339
from taskrank.queue.exceptions import NoSuchExpertError
from taskrank.queue.validation import (
    ID_PATTERN,
    check_int,
    check_keys,
    check_number,
    check_object,
    check_positive_or_null,
    fail,
)

FIELDS = {"skills", "capacity", "cost_per_hour", "active", "max_hours_per_day"}
GENERAL = "_general"  # pseudo-tag: accuracy on items that require no skill


def parse_expert(body: object) -> dict:
    body = check_object(body, "body")
    check_keys(body, "", FIELDS)
    skills = check_object(body.get("skills", {}), "skills")
    if len(skills) > 256:
        raise fail("skills", "at most 256 skill tags")
    for tag, level in skills.items():
        if not ID_PATTERN.fullmatch(tag) or tag == GENERAL:
            raise fail(f"skills.{tag}"[:150], "a tag is 1-128 characters of A-Z a-z 0-9 . _ -")
        check_number(level, f"skills.{tag}", 0.0, 1.0)
    active = body.get("active", True)
    if not isinstance(active, bool):
        raise fail("active", f"must be true or false, got {active!r}"[:200])
    return {"skills": {tag: float(level) for tag, level in skills.items()},
            "capacity": check_int(body.get("capacity", 5), "capacity", 1, 10_000),
            "cost_per_hour": check_number(body.get("cost_per_hour", 100.0), "cost_per_hour",
                                          0.01, 1e6),
            "active": active,
            "max_hours_per_day": check_positive_or_null(
                body.get("max_hours_per_day"), "max_hours_per_day", 24, "no daily limit")}


def put_expert(r: redis.Redis, eid: str, body: object) -> tuple[dict, bool]:
    """Create or replace an expert's declaration (what projects learned is kept); True if
    new."""
    expert = parse_expert(body)
    now = time.time()
    key = K.expert_key(eid)
    created = bool(r.hsetnx(key, "created_at", now))
    r.hset(key, mapping={"skills": json.dumps(expert["skills"]), "capacity": expert["capacity"],
                         "cost_per_hour": expert["cost_per_hour"],
                         "active": int(expert["active"]), "updated_at": now,
                         # '' for null: a hash holds strings only
                         "max_hours_per_day": expert["max_hours_per_day"] or ""})
    r.sadd(K.experts_key(), eid)
    return load_expert(r, eid), created


def load_expert(r: redis.Redis, eid: str) -> dict:
    """The expert as declared (what each project learned of it: ``queue/skills.py``)."""
    expert = _declared(eid, r.hgetall(K.expert_key(eid)))
    if expert is None:
        raise NoSuchExpertError(f"no expert '{eid}'; declare it with PUT /v1/experts/{eid}")
    return expert


def load_experts(r: redis.Redis, eids: list[str]) -> dict[str, dict | None]:
    """The experts as declared, in one round trip; None for an id never declared."""
    pipe = r.pipeline(transaction=False)
    for eid in eids:
        pipe.hgetall(K.expert_key(eid))
    return {eid: _declared(eid, fields) for eid, fields in zip(eids, pipe.execute(),
                                                                strict=True)}


def _declared(eid: str, fields: dict[str, str]) -> dict | None:
    if "skills" not in fields:
        return None
    return {"id": eid, "skills": json.loads(fields["skills"]),
            "capacity": int(fields["capacity"]),
            "cost_per_hour": float(fields["cost_per_hour"]), "active": fields["active"] == "1",
            "max_hours_per_day": float(fields["max_hours_per_day"])
            if fields.get("max_hours_per_day") else None,
            "created_at": rfc3339(fields["created_at"]),
            "updated_at": rfc3339(fields["updated_at"])}


def general_level(skills: dict[str, float]) -> float:
    """Prior accuracy on untagged items (``learning.routing.general_level``)."""
    return routing.general_level(list(skills.values()))


def open_leases(r: redis.Redis, eid: str, pids: list[str]) -> dict[str, int]:
    pipe = r.pipeline(transaction=False)  # several projects: several slots on a cluster
    for pid in pids:
        pipe.zcard(K.expert_leases_key(pid, eid))
    return {pid: n for pid, n in zip(pids, pipe.execute(), strict=True) if n}
