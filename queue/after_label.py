"""What follows a counted label: aggregation (with adaptive redundancy), its webhook events
and the retrain trigger.

Everything here is idempotent, so a client's retry of a label (which replays the stored
answer) may run it again safely.
"""

from __future__ import annotations

import redis

from taskrank.queue import keys as K
from taskrank.queue.aggregate import aggregate_item
from taskrank.queue.events import label_events
from taskrank.queue.retrain import enqueue_retrain
from taskrank.queue.settings import Settings, current


def after_label(r: redis.Redis, project: dict, answer: dict,
                settings: Settings | None = None) -> None:
    if not answer.get("aggregated"):  # the LABEL script aggregates an item's only label
        aggregate_item(r, project, answer["item_id"])
    label_events(r, project, answer)  # item.finished, expert.flagged (never raises)
    maybe_retrain(r, project, int(answer.get("since_retrain") or 0), settings)


def maybe_retrain(r: redis.Redis, project: dict, since_retrain: int,
                  settings: Settings | None = None) -> str | None:
    """Queue a retrain every ``retrain.every_labels`` counted labels (once ``min_labels``)."""
    rule = project["strategy"]["retrain"]
    if since_retrain < rule["every_labels"]:
        return None
    pid = project["id"]
    if r.zcard(K.labeled_key(pid)) < rule["min_labels"]:
        return None
    r.hset(K.counters_key(pid), "since_retrain", 0)
    return enqueue_retrain(r, settings or current(), pid)
