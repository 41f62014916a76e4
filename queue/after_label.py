"""What follows a counted label: aggregation (with adaptive redundancy), its webhook events
and the retrain trigger.

Everything here is idempotent, so a client's retry of a label (which replays the stored
answer) may run it again safely.  A label is acknowledged once the LABEL script stored it,
whatever happens next: the script records in the same write the item that still needs
aggregating (``keys.followup_key``), and the retrain trigger is a counter, so when this
follow-up fails (Redis gone, a worker killed) the workers' upkeep (``drain_followups``)
does it later.
"""

from __future__ import annotations

import redis

from taskrank.queue import keys as K
from taskrank.queue.aggregate import aggregate_item
from taskrank.queue.cadence import late_retrain
from taskrank.queue.connection import rq_redis
from taskrank.queue.events import items_finished, label_events
from taskrank.queue.exceptions import NoSuchProjectError
from taskrank.queue.projects import get_project
from taskrank.queue.retrain import enqueue_retrain
from taskrank.queue.settings import Settings, current
from taskrank.queue.worker import task_queue


def after_label(r: redis.Redis, project: dict, answer: dict,
                settings: Settings | None = None) -> None:
    if not answer.get("aggregated"):  # the LABEL script aggregates an item's only label
        follow_up(r, project, answer["item_id"])
    label_events(r, project, answer)  # item.finished, expert.flagged (never raises)
    maybe_retrain(r, project, int(answer.get("since_retrain") or 0), settings)


def follow_up(r: redis.Redis, project: dict, iid: str) -> None:
    aggregate_item(r, project, iid)
    r.srem(K.followup_key(project["id"]), iid)


def drain_followups(r: redis.Redis, settings: Settings | None = None,
                    batch: int = 1000) -> int:
    """Do the follow-up of labels whose own failed: aggregate up to ``batch`` waiting items
    per project and fire any retrain that is due, or that waits and was lost or is late
    (queue/cadence.py).  Returns the items aggregated."""
    settings = settings or current()
    queue = task_queue(settings, rq_redis(r, settings))
    done = 0
    for pid in sorted(r.smembers(K.projects_key())):
        try:
            project = get_project(r, pid)
        except NoSuchProjectError:  # deleted meanwhile
            continue
        waiting = r.srandmember(K.followup_key(pid), batch)
        for iid in waiting:
            follow_up(r, project, iid)
            done += 1
        items_finished(r, project, waiting)  # their labels' own follow-up never sent it
        since = int(r.hget(K.counters_key(pid), "since_retrain") or 0)
        maybe_retrain(r, project, since, settings)
        if late_retrain(r, queue, pid) == "lost":  # the labels that asked for it reset since
            enqueue_retrain(r, settings, pid, project["strategy"]["retrain"][
                "min_interval_seconds"])
    return done


def maybe_retrain(r: redis.Redis, project: dict, since_retrain: int,
                  settings: Settings | None = None) -> str | None:
    """Queue a retrain every ``retrain.every_labels`` counted labels (once ``min_labels``),
    to start no sooner than ``min_interval_seconds`` after the previous one started."""
    rule = project["strategy"]["retrain"]
    if since_retrain < rule["every_labels"]:
        return None
    pid = project["id"]
    if r.zcard(K.labeled_key(pid)) < rule["min_labels"]:
        return None
    r.hset(K.counters_key(pid), "since_retrain", 0)
    return enqueue_retrain(r, settings or current(), pid, rule["min_interval_seconds"])
