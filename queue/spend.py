"""Spend: what a project's labels cost (in total, reserved by open leases, by expert, skill
and day) and each expert's counted hours per UTC day, across projects.

The project's dollars are written by its Lua scripts (``queue/lua.py``): CLAIM reserves a
lease's predicted cost, LABEL charges rate x seconds for every recorded label, and a lease
that closes gives its reservation back.  An expert's day spans projects, so no project's
script may write it (one Cluster slot per script): ``add_expert_seconds`` does, once per
task, after the label is stored.
"""

from __future__ import annotations

import redis

from taskrank.queue import keys as K
from taskrank.queue import lua
from taskrank.queue.clock import utc_day

# A day's total is read only while that day lasts; kept a little longer for a look back.
EXPERT_DAY_TTL = 3 * 86400
BREAKDOWNS = {"e": "by_expert", "s": "by_skill", "d": "by_day"}  # spend hash field parts


def add_expert_seconds(r: redis.Redis, answer: dict, seconds: float) -> None:
    """Count a counted label's seconds in its expert's day (the day LABEL charged it on):
    a replayed answer adds nothing, since the day keeps seconds per task."""
    lua.run_global(r, "add_expert_seconds",
                   [K.expert_day_key(answer["expert_id"], answer["day"])],
                   [answer["task_id"], seconds, EXPERT_DAY_TTL])


def hours_on_day(r: redis.Redis, eid: str, now: float) -> tuple[str, float]:
    """The UTC day of ``now`` and the hours of counted labels ``eid`` gave on it."""
    day = utc_day(now)
    return day, float(r.hget(K.expert_day_key(eid, day), "_total") or 0) / 3600


def spend_totals(r: redis.Redis, pid: str) -> tuple[float, float]:
    """Dollars spent on the project's labels and reserved by its open leases."""
    spent, reserved = r.hmget(K.counters_key(pid), "spent_usd", "reserved_usd")
    return float(spent or 0), float(reserved or 0)


def project_spend(r: redis.Redis, project: dict) -> dict:
    """The project's budget, dollars spent and reserved, and the breakdowns of the
    charged labels (dollars, hours, labels) by expert, skill and UTC day."""
    pid, budget = project["id"], project["budget_usd"]
    spent, reserved = spend_totals(r, pid)
    fields = r.hgetall(K.spend_key(pid))
    answer = {"budget_usd": budget, "spent_usd": _usd(spent), "reserved_usd": _usd(reserved),
              # negative when labels cost more than their leases reserved
              "remaining_usd": None if budget is None else _usd(budget - spent - reserved),
              "labels": int(fields.get("n", 0)),
              "hours": _hours(fields.get("sec", 0))}
    return {**answer, **_breakdowns(fields)}


def _breakdowns(fields: dict[str, str]) -> dict[str, dict]:
    """{by_expert, by_skill, by_day: {name: {usd, hours, labels}}} from the spend hash's
    ``usd:<part>:<name>``, ``sec:...`` and ``n:...`` fields, names in order."""
    found: dict[str, dict] = {name: {} for name in BREAKDOWNS.values()}
    for field in fields:
        measure, _, rest = field.partition(":")
        part, _, name = rest.partition(":")
        if measure == "n" and part in BREAKDOWNS:
            found[BREAKDOWNS[part]][name] = {
                "usd": _usd(fields.get(f"usd:{rest}", 0)),
                "hours": _hours(fields.get(f"sec:{rest}", 0)),
                "labels": int(fields[field])}
    return {kind: dict(sorted(entries.items())) for kind, entries in found.items()}


def _usd(value: float | str) -> float:
    return round(float(value), 6)  # reservations are whole micro-dollars


def _hours(seconds: float | str) -> float:
    return round(float(seconds) / 3600, 6)
