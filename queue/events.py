"""Webhook events: each recorded once in the project's outbox by the code that saw it happen.

Who records what, always after the write that made it happen (never inside that write's Lua
script, never before it):
- ``item.finished`` and ``expert.flagged``: after a counted label (``after_label.py``);
  ``item.finished`` also after a batch of labels without a lease (``label_import.py``,
  Label Studio's annotations too) and after the upkeep's follow-up of labels whose own
  follow-up failed;
- ``model.trained``, and ``expert.flagged`` once Dawid–Skene re-estimated accuracies: the
  retrain job; ``queue.reranked``: the re-score chunk that finishes a run's top;
- ``budget.exhausted``: tasks/next, when it refuses for the budget; ``expert.flagged``: a
  strategy change (its qualification rule may flag experts at once).

Recording is one Lua call (``EMIT_EVENT``): the event's once-marker is set and the event is
appended to the outbox stream in the same atomic step, and a drain job is named when none
waits, which the caller then queues (``queue/delivery.py`` turns outbox entries into one
delivery job per subscribed webhook).  What that guarantees:
- once in the outbox, an event is delivered, at least once and under one ``webhook-id``, to
  every webhook subscribed to it when the outbox is drained, even when the drain job could
  not be queued: every worker also drains left-over outboxes on its upkeep loop;
- an event is recorded once (its marker), and only when a webhook subscribes to it as this
  process last read the subscriptions (at most ``TASKRANK_CACHE_SECONDS`` ago), so a
  project without webhooks pays nothing;
- recording never fails the request or job that caused it: a failure (Redis gone right after
  the write) is logged, and that event is lost, except ``item.finished`` when the label's
  whole follow-up failed: the upkeep redoes it and sends the event (so does the client's
  retry of the label with its ``Idempotency-Key``).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator

import redis

from taskrank.learning import routing
from taskrank.queue import keys as K
from taskrank.queue import lua
from taskrank.queue.clock import now as clock_now
from taskrank.queue.clock import rfc3339
from taskrank.queue.delivery import enqueue_drain
from taskrank.queue.enqueue import new_job_id
from taskrank.queue.exceptions import NoSuchExpertError
from taskrank.queue.experts import load_expert
from taskrank.queue.models import model_info
from taskrank.queue.skills import load_profiles, quality_report
from taskrank.queue.spend import spend_totals
from taskrank.queue.webhooks import subscribed

log = logging.getLogger(__name__)
DRAIN_MARK_SECONDS = 300  # a drain job lost before it ran blocks the next one this long
FLAG_FIELDS = ("reason", "accuracy", "accuracy_interval", "gold_answered", "gold_accuracy",
               "agreement", "labels")


def emit(r: redis.Redis, pid: str, event: str, data: dict,
         marker: tuple[str, str, str]) -> bool:
    """Record ``event`` unless its ``marker`` (hash key, field, value) shows it was; queue
    the drain.  The body is the Standard Webhooks payload every subscriber gets."""
    return emit_many(r, pid, event, [(data, marker)]) > 0


def emit_many(r: redis.Redis, pid: str, event: str,
              events: list[tuple[dict, tuple[str, str, str]]]) -> int:
    """``emit`` for each (data, marker), in one round trip; how many were recorded."""
    job_id, at = new_job_id("webhooks", pid), rfc3339(clock_now())
    keys = [K.webhook_outbox_key(pid), K.webhook_drain_pending_key(pid)]
    calls = []
    for data, (key, field, value) in events:
        body = json.dumps({"type": event, "timestamp": at, "data": {"project_id": pid, **data}},
                          separators=(",", ":"))
        calls.append(([key, *keys], [field, value, event, body, job_id, DRAIN_MARK_SECONDS]))
    recorded = lua.run_many(r, "emit_event", pid, calls)
    if 2 in recorded:  # this call named the drain job
        try:
            enqueue_drain(r, pid, job_id)
        except redis.RedisError as error:  # recorded all the same: the upkeep drains it
            log.warning("webhook drain of project %s not queued (%s); the workers' upkeep "
                        "will drain its outbox", pid, error)
    return sum(1 for outcome in recorded if outcome)


@contextlib.contextmanager
def never_failing(what: str) -> Iterator[None]:
    """Log, never raise: what caused the event is written already, and its answer is a
    success (DESIGN §6); the event alone is lost (see the module docstring)."""
    try:
        yield
    except Exception:
        log.exception("webhook events %s not recorded", what)


def label_events(r: redis.Redis, project: dict, answer: dict) -> None:
    """After a counted label: item.finished, and expert.flagged for its expert (and, when
    it finished an item of several labels, for every expert agreement judged)."""
    with never_failing(f"after the label of task {answer.get('task_id')}"):
        finished = item_finished(r, project, answer["item_id"])
        experts = {answer["expert_id"]}
        if finished and int(answer.get("n_labels") or 0) > 1:
            entries = r.lrange(K.item_labels_key(project["id"], answer["item_id"]), 0, -1)
            experts |= {entry.split("\t", 1)[0] for entry in entries}
        check_flagged(r, project, sorted(experts))


def item_finished(r: redis.Redis, project: dict, iid: str) -> bool:
    """``item.finished`` once, when the item holds its wanted labels and their vote; True
    when the item is finished (whether sent now or before)."""
    return bool(_finished(r, project, [iid]))


def items_finished(r: redis.Redis, project: dict, iids: list[str]) -> None:
    """``item.finished`` for each of ``iids`` that is finished (a batch of imported labels,
    the upkeep's follow-ups), in two round trips; never raises."""
    with never_failing(f"after labels of {len(iids)} items of {project['id']}"):
        _finished(r, project, iids)


def _finished(r: redis.Redis, project: dict, iids: list[str]) -> list[str]:
    """Send item.finished for the finished ones of ``iids`` not sent yet; the finished."""
    pid = project["id"]
    if not iids or not subscribed(r, pid, "item.finished"):
        return []
    pipe = r.pipeline(transaction=False)
    for iid in iids:
        pipe.hmget(K.item_key(pid, iid), "st", "al", "ac", "done", "ev")
    finished = [(iid, row) for iid, row in zip(iids, pipe.execute(), strict=True)
                if row[0] == "labeled" and row[1]]
    emit_many(r, pid, "item.finished", [
        ({"item_id": iid, "label": label, "confidence": float(confidence or 1.0),
          "n_labels": int(done or 0)}, (K.item_key(pid, iid), "ev", "1"))
        for iid, (_, label, confidence, done, sent) in finished if not sent])
    return [iid for iid, _ in finished]


def model_trained(r: redis.Redis, pid: str) -> bool:
    """``model.trained`` once per version: the current model as ``GET /model`` shows it
    (cross-validated ``metrics`` are computed after the re-score, so still ``{}``;
    ``exploration`` is the unbiased estimate so far)."""
    with never_failing(f"after a retrain of {pid}"):
        if subscribed(r, pid, "model.trained"):
            info = model_info(r, pid)
            if info["version"] is not None:
                return emit(r, pid, "model.trained", info,
                            (K.webhook_marks_key(pid), "model.trained", str(info["version"])))
    return False


def queue_reranked(r: redis.Redis, pid: str, run: str) -> bool:
    """``queue.reranked`` once per re-score run, when its top is done (queue/rescore.py)."""
    with never_failing(f"after re-score run {run}"):
        if subscribed(r, pid, "queue.reranked"):
            progress = K.rescore_progress_key(pid, run)
            fields = r.hgetall(progress)
            items = int(fields.get("items_done") or 0)
            data = {"job_id": run, "reason": fields.get("reason"), "items": items,
                    "tail_items": max(0, int(fields.get("total_items") or 0) - items),
                    "window_stale": int(fields.get("window_stale") or 0),
                    "started_at": rfc3339(fields.get("started_at")),
                    "reranked_at": rfc3339(clock_now())}
            return emit(r, pid, "queue.reranked", data, (progress, "ev", "1"))
    return False


def budget_exhausted(r: redis.Redis, project: dict, detail: str) -> bool:
    """``budget.exhausted`` once per ``budget_usd`` value reached (raising the budget and
    reaching it again sends another), not once per refused request."""
    pid, budget = project["id"], project["budget_usd"]
    with never_failing(f"after a budget refusal in {pid}"):
        marks = K.webhook_marks_key(pid)
        if budget is None or not subscribed(r, pid, "budget.exhausted") or (
                r.hget(marks, "budget.exhausted") == repr(budget)):
            return False
        spent, reserved = spend_totals(r, pid)
        return emit(r, pid, "budget.exhausted", {
            "budget_usd": budget, "spent_usd": round(spent, 6),
            "reserved_usd": round(reserved, 6), "detail": detail},
            (marks, "budget.exhausted", repr(budget)))
    return False


def check_flagged(r: redis.Redis, project: dict, expert_ids: list[str]) -> int:
    """``expert.flagged`` for each (expert, skill) of ``expert_ids`` the qualification gate
    now flags and did not at the last check: once per change to flagged (a skill found
    no longer flagged may be flagged, and sent, again).  How many were sent."""
    pid, marks, sent = project["id"], K.webhook_marks_key(project["id"]), 0
    if not expert_ids or not subscribed(r, pid, "expert.flagged"):
        return 0
    for profile in load_profiles(r, project, _experts(r, expert_ids)):
        eid = profile.expert["id"]
        fields = [f"flagged:{eid}:{tag}" for tag in profile.tags]
        report = None  # its credible intervals cost: computed only for a new flag
        for i, (tag, field, mark) in enumerate(zip(profile.tags, fields, r.hmget(
                marks, fields), strict=True)):
            flagged = profile.state[i] == routing.FLAGGED
            if flagged and not mark:
                report = report or quality_report(profile)
                data = {"expert_id": eid, "skill": tag,
                        **{name: report.get(tag, {}).get(name) for name in FLAG_FIELDS}}
                sent += emit(r, pid, "expert.flagged", data, (marks, field, "1"))
            elif mark and not flagged:
                r.hdel(marks, field)
    return sent


def flag_check_all(r: redis.Redis, project: dict, what: str) -> None:
    """``check_flagged`` over every expert with a record in the project; never raises."""
    with never_failing(what):
        pid = project["id"]
        if subscribed(r, pid, "expert.flagged"):
            eids = sorted(r.smembers(K.experts_key()))
            pipe = r.pipeline(transaction=False)
            for eid in eids:
                pipe.exists(K.expert_skill_key(pid, eid))
            check_flagged(r, project, [eid for eid, known in zip(eids, pipe.execute(),
                                                                 strict=True) if known])


def _experts(r: redis.Redis, eids: list[str]) -> list[dict]:
    experts = []
    for eid in eids:
        with contextlib.suppress(NoSuchExpertError):  # removed since: nothing to flag
            experts.append(load_expert(r, eid))
    return experts
