"""Tasks (leases): claim the best item for an expert, label, extend, release, sweep."""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass

import redis

from taskrank.learning.aggregation import ACCURACY_BOUNDS
from taskrank.learning.routing import NEEDS_GOLD
from taskrank.queue import keys as K
from taskrank.queue import lua
from taskrank.queue.clock import now as clock_now
from taskrank.queue.clock import rfc3339, utc_day
from taskrank.queue.exceptions import (
    IdempotencyConflictError,
    LeaseNotOpenError,
    NoSuchTaskError,
)
from taskrank.queue.skills import GENERAL, Profile, best_experts_by_tag, load_profile
from taskrank.queue.spend import add_expert_seconds, hours_on_day
from taskrank.queue.validation import fail

IDEMPOTENCY_TTL = 24 * 3600
MAX_TASKS_PER_CLAIM = 50  # tasks/next "n": leases one atomic claim may hand out
SWEEP_LIMIT = 100  # expired leases returned per claim; the periodic sweep does the rest
CLAIM_PAGES = 8  # pages of `claim_depth` candidates read per pool set before giving up
GOLD_REASON = ("gold check: an item whose answer the project knows, served in place of the "
               "chosen one (strategy.qa: before real items of a skill, then at a share that "
               "falls as the expert's accuracy posterior tightens);")
EXPLORATION_REASON = ("exploration: drawn uniformly from the eligible pending pool, whatever "
                      "its priority (strategy.explore), so the model's blind spots get labels "
                      "and its accuracy has an unbiased estimate;")


def new_task_id(pid: str) -> str:
    """An opaque id that still says which project the task belongs to."""
    return f"{secrets.token_hex(10)}.{pid}"


def project_of_task(tid: str) -> str:
    token, _, pid = tid.partition(".")
    if not token or not pid:
        raise NoSuchTaskError(f"no task '{tid}'")
    return pid


@dataclass(frozen=True)
class NoTask:
    """Why no task was leased: a code a platform can act on (one of ``NO_TASK_REASONS``)
    and one sentence naming the numbers behind it."""

    reason: str
    detail: str


NO_TASK_REASONS = ("nothing_eligible", "at_capacity", "inactive", "budget_exhausted",
                   "daily_hours_reached")


def claim(r: redis.Redis, project: dict, expert: dict, depth: int,
          now: float | None = None) -> dict | None:
    """Lease the eligible item of highest value to ``expert``; None when nothing fits
    (``lease_task`` says why)."""
    task = lease_task(r, project, expert, depth, now)
    return None if isinstance(task, NoTask) else task


def lease_task(r: redis.Redis, project: dict, expert: dict, depth: int,
               now: float | None = None, idempotency_key: str | None = None) -> dict | NoTask:
    """Lease the eligible item of highest value to ``expert``, or say why there is none.
    With ``idempotency_key``, a retry gets the lease the first request was granted (kept
    :data:`IDEMPOTENCY_TTL`), whatever has changed since."""
    leased, refusal = lease_tasks(r, project, expert, depth, 1, now, idempotency_key)
    return leased[0] if leased else refusal


def lease_tasks(r: redis.Redis, project: dict, expert: dict, depth: int, n: int,
                now: float | None = None, idempotency_key: str | None = None
                ) -> tuple[list[dict], NoTask | None]:
    """Lease up to ``n`` eligible items to ``expert`` in one atomic claim, best first, within
    its capacity and the budget; the tasks, and why no more (None when ``n`` were leased).
    With ``idempotency_key``, a retry gets what the first request was granted."""
    if not 1 <= n <= MAX_TASKS_PER_CLAIM:
        raise ValueError(f"n must be from 1 to {MAX_TASKS_PER_CLAIM}, got {n}")
    now = clock_now() if now is None else now
    idem_key = (K.project_key(project["id"]) if idempotency_key is None  # untouched
                else K.claim_idempotency_key(project["id"], expert["id"], idempotency_key))
    if idempotency_key is not None and r.exists(idem_key):
        refusal = None  # the leases were granted before any refusal now applies
    else:
        refusal = _expert_refusal(r, expert, now)
    if refusal is not None:
        return [], refusal
    profile = load_profile(r, project, expert)
    answers = _run_claim(r, project, profile, depth, now, n, idem_key,
                         "" if idempotency_key is None else IDEMPOTENCY_TTL)
    if answers and isinstance(answers[0], str):  # one answer, as stored before n existed
        answers = [answers]
    routing = project["strategy"]["routing"]
    leased = [_task(profile, routing, answer) for answer in answers if answer[0] == "ok"]
    last = answers[-1]
    return leased, None if last[0] == "ok" else _claim_refusal(project, expert, last)


def _expert_refusal(r: redis.Redis, expert: dict, now: float) -> NoTask | None:
    """Why the expert gets no task in any project now (None: it may get one)."""
    eid, limit = expert["id"], expert["max_hours_per_day"]
    if not expert["active"]:
        return NoTask("inactive", f"expert {eid} is inactive; PUT it with active true to "
                                  "serve it again")
    if limit is None:
        return None
    # Read before the claim, not inside it: the day spans projects (other Cluster slots).
    # A label still in progress may pass the limit by that one label.
    day, hours = hours_on_day(r, eid, now)
    if hours < limit:
        return None
    return NoTask("daily_hours_reached",
                  f"expert {eid} max_hours_per_day {limit:.2f} reached: {hours:.2f} hours "
                  f"of counted labels on {day} (UTC)")


def _claim_refusal(project: dict, expert: dict, answer: list) -> NoTask:
    """The refusal the CLAIM script answered, in words."""
    pid, eid = project["id"], expert["id"]
    if answer[0] == "capacity":
        return NoTask("at_capacity", f"expert {eid} holds {answer[1]} open leases in project "
                                     f"{pid}, its capacity {expert['capacity']}")
    if answer[0] == "budget":
        budget, spent, reserved, cost = (float(value) for value in answer[1:5])
        detail = (f"project budget_usd {budget:.2f} reached: spent {spent:.2f}, reserved "
                  f"{reserved:.2f}")
        if cost > 0:
            detail += f", the best item left would cost {cost:.2f}"
        return NoTask("budget_exhausted", detail)
    return NoTask("nothing_eligible",
                  f"no pending item of project {pid} is open to expert {eid} (each requires a "
                  "skill it lacks, was leased or labeled by it, or waits for a better fit)")


def _run_claim(r: redis.Redis, project: dict, profile: Profile, depth: int,
               now: float, n: int, idem_key: str, keep_seconds: int | str) -> list[list]:
    pid, expert = project["id"], profile.expert
    eid = expert["id"]
    fits, general_fit = profile.fits()
    strategy = project["strategy"]
    routing = strategy["routing"]
    pools = [K.pool_untagged_key(pid)] + [K.pool_tag_key(pid, tag) for tag in sorted(fits)]
    budget = project["budget_usd"]
    gated = profile.state == NEEDS_GOLD
    task_ids = [new_task_id(pid) for _ in range(n)]
    best = best_experts_by_tag(r, project, now) if routing["holdback_seconds"] > 0 else {}
    return lua.run(r, "claim", pid, [K.expert_leases_key(pid, eid),
                                       K.claimed_clusters_key(pid),
                                       K.expert_skill_key(pid, eid),
                                       K.working_experts_key(pid), idem_key, *pools,
                                       *_claim_may_touch(pid, eid, task_ids, best, fits)], [
        now, eid, ",".join(task_ids), project["lease_seconds"],
        expert["capacity"], depth,
        CLAIM_PAGES, routing["fit_exponent"], json.dumps(fits),
        "" if general_fit is None else general_fit, SWEEP_LIMIT,
        routing["holdback_seconds"], routing["holdback_margin"], json.dumps(best),
        strategy["explore"]["share"], strategy["explore"]["decay_labels"],
        strategy["diversity"]["factor"], expert["cost_per_hour"], routing["cost_exponent"],
        "" if budget is None else budget, json.dumps(profile.table(profile.seconds)),
        json.dumps({tag: 1 for tag, needs in zip(profile.tags, gated, strict=True) if needs}),
        json.dumps(profile.table(profile.gold_share)),
        json.dumps(profile.table(profile.review_share)), keep_seconds, len(pools)])


def _claim_may_touch(pid: str, eid: str, task_ids: list[str], best: dict[str, list],
                     fits: dict[str, float]) -> list[str]:
    """The keys beyond the pools that a claim may touch and its caller can name, declared to
    the script: the new tasks, the leases of the experts the hold-back compares with
    (``best``), the gold sets of the expert's skills."""
    others = {other[0] for ranked in best.values() for other in ranked} - {eid}
    return ([K.task_key(pid, tid) for tid in task_ids]
            + [K.expert_leases_key(pid, other) for other in sorted(others)]
            + [K.gold_key(pid, tag) for tag in [GENERAL, *sorted(fits)]])


def _task(profile: Profile, routing: dict, answer: list) -> dict:
    """The lease the CLAIM script granted, as the API shows it."""
    tid, iid, priority, fit, value, payload, expires, tags, explored, gold = answer[1:]
    reason = _reason(profile, tags.split(",") if tags else [], float(priority), float(fit),
                     routing)
    if int(explored):
        reason = EXPLORATION_REASON + reason.partition(";")[2]
    if int(gold):
        reason = GOLD_REASON + reason.partition(";")[2]
    return {"id": tid, "item_id": iid, "payload": json.loads(payload) if payload else None,
            "priority": float(priority), "fit": float(fit),
            "value": float(value), "expires_at": rfc3339(expires),
            "exploration": bool(int(explored)), "reason": reason}


def _reason(profile: Profile, tags: list[str], priority: float, fit: float,
            routing: dict) -> str:
    index = {tag: i for i, tag in enumerate(profile.tags)}
    post, cost = profile.posterior, profile.cost()
    basis = ", ".join(
        f"{tag}: Beta({post.alpha[index[tag]]:g}, {post.beta[index[tag]]:g}) mean "
        f"{post.mean[index[tag]]:.3f}, ${cost[index[tag]]:.2f} a label"
        for tag in (tags or [GENERAL]) if tag in index)
    return (f"highest value among the eligible top of the queue: priority {priority:.4f} x "
            f"fit {fit:.3f}^{routing['fit_exponent']:g} / cost^{routing['cost_exponent']:g}; "
            f"fit is the lowest accuracy posterior over the item's skills, cost the hourly "
            f"rate x the predicted seconds of its slowest ({basis})")


def submit_label(r: redis.Redis, project: dict, tid: str, label: object, seconds: float,
                 idempotency_key: str | None = None, now: float | None = None,
                 comment: str = "", answer: str = "") -> tuple[int, dict]:
    """Record a label, with its ``comment`` and ``answer`` (JSON text; see
    ``validation.check_comment``/``check_answer``, '' for none); (201, body) when counted,
    (409, body) when kept but not counted.  Either way it is charged (rate x seconds) to
    the project's spend."""
    if label not in project["labels"]:
        raise fail("label", f"must be one of the project's labels {project['labels']}"[:300])
    pid = project["id"]
    fingerprint = ""
    idem_key = K.project_key(pid)  # a key of the project's slot; untouched without a key
    if idempotency_key:
        request = f"{tid}\n{label}\n{seconds!r}"
        if comment or answer:  # so keys stored before labels had them replay alike
            request += f"\n{comment}\n{answer}"
        fingerprint = hashlib.sha256(request.encode()).hexdigest()
        idem_key = K.label_idempotency_key(pid, tid, idempotency_key)
    now = clock_now() if now is None else now
    raw = lua.run(r, "label", pid, [K.labels_stream_key(pid), K.counters_key(pid), idem_key,
                                    K.labeled_key(pid), K.explore_labels_key(pid),
                                    K.spend_key(pid), K.followup_key(pid), K.task_key(pid, tid)],
                  [now, tid, label, seconds, fingerprint, IDEMPOTENCY_TTL,
                   len(project["labels"]), *ACCURACY_BOUNDS, utc_day(now), comment, answer])
    reply = json.loads(raw)
    if reply["status"] == 404:
        raise NoSuchTaskError(f"no task '{tid}'")
    if reply.get("conflict"):
        raise IdempotencyConflictError(
            "this Idempotency-Key was used with a different label, seconds_spent, comment "
            "or answer; use a new key for a new request")
    if reply["status"] == 201 and reply["body"].get("day"):  # answers stored before
        add_expert_seconds(r, reply["body"], seconds)  # budgets carry no day
    return reply["status"], reply["body"]


def task_view(r: redis.Redis, pid: str, tid: str) -> dict:
    fields = r.hgetall(K.task_key(pid, tid))
    if not fields:
        raise NoSuchTaskError(f"no task '{tid}'")
    return {"id": tid, "project_id": pid, "item_id": fields["item"],
            "expert_id": fields["expert"], "state": fields["st"],
            "expires_at": rfc3339(fields["exp"]), "created_at": rfc3339(fields["ca"])}


def task_expert(r: redis.Redis, pid: str, tid: str) -> str:
    eid = r.hget(K.task_key(pid, tid), "expert")
    if eid is None:
        raise NoSuchTaskError(f"no task '{tid}'")
    return eid


def extend(r: redis.Redis, project: dict, tid: str, now: float | None = None) -> dict:
    now = clock_now() if now is None else now
    state, _ = lua.run(r, "extend", project["id"], [K.task_key(project["id"], tid)],
                       [now, tid, project["lease_seconds"]])
    return _lease_answer(r, project, tid, state, "open", "extended")


def release(r: redis.Redis, project: dict, tid: str, now: float | None = None) -> dict:
    """Give the item back; releasing an already released task answers the same again."""
    now = clock_now() if now is None else now
    state = lua.run(r, "release", project["id"], [K.task_key(project["id"], tid)], [now, tid])
    return _lease_answer(r, project, tid, state, "released", "released")


def _lease_answer(r: redis.Redis, project: dict, tid: str, state: str, expected: str,
                  done: str) -> dict:
    """The task after extend/release, or the error its state calls for."""
    if state == "":
        raise NoSuchTaskError(f"no task '{tid}'")
    if state != expected:
        raise LeaseNotOpenError(f"task '{tid}' is {state}; only an open lease can be {done}",
                                state=state)
    return task_view(r, project["id"], tid)


def sweep(r: redis.Redis, pid: str, now: float | None = None, limit: int = 1000) -> int:
    """Return every expired lease of a project to the pool; the number returned."""
    now = clock_now() if now is None else now
    total = 0
    while True:
        swept = lua.run(r, "sweep", pid, [], [now, limit])
        total += swept
        if swept < limit:
            return total


def sweep_all_projects(r: redis.Redis) -> int:
    return sum(sweep(r, pid) for pid in r.smembers(K.projects_key()))
