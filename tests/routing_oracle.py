"""The claim rule as ``learning.routing`` states it, read off a project's stored pool.

The Lua claim (queue/lua.py) must lease an item this oracle rates best; the oracle only
gathers arrays from Redis and calls ``eligible``, ``item_fit``, ``label_cost`` and
``value``, so it holds no copy of the rules.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import redis

from taskrank.learning.routing import eligible, item_fit, label_cost, value
from taskrank.queue import keys as K
from taskrank.queue.skills import GENERAL, load_profile


class Rated(NamedTuple):
    """Every item of the project, in id order, as the routing rules see it."""

    ids: list[str]
    candidate: np.ndarray  # bool: pending and eligible for the expert
    fit: np.ndarray
    value: np.ndarray


def _live_priority(r: redis.Redis, pid: str, iid: str, tags: list[str]) -> float:
    # A pending item's live priority is its score in its pool sets (the hash's 'pr' may lag
    # a re-score); other items are no candidates, so any number does.
    pool = K.pool_tag_key(pid, tags[0]) if tags else K.pool_untagged_key(pid)
    score = r.zscore(pool, iid)
    return 0.0 if score is None else score


def rate_pool(r: redis.Redis, project: dict, expert: dict) -> Rated:
    """Eligibility, fit and value of every item of ``project`` for ``expert``."""
    pid, eid = project["id"], expert["id"]
    routing = project["strategy"]["routing"]
    ids = sorted(r.smembers(K.items_key(pid)))
    rows = [r.hmget(K.item_key(pid, iid), "st", "s") for iid in ids]
    item_tags = [tags.split(",") if tags else [] for _, tags in rows]
    profile = load_profile(r, project, expert)
    fits, general = profile.fits()
    seconds = profile.table(profile.seconds)
    universe = sorted({tag for tags in item_tags for tag in tags} | set(fits))
    mask = np.array([[tag in tags for tag in universe] for tags in item_tags],
                    dtype=bool).reshape(len(ids), len(universe))
    held = np.array([tag in fits for tag in universe], dtype=bool)
    # A tag the expert lacks makes the item ineligible, so its accuracy never counts.
    # Flagged on untagged items (general None): those are not eligible.
    fit = item_fit(np.array([fits.get(tag, 0.0) for tag in universe]), mask,
                   default=0.0 if general is None else general)
    seen = np.array([bool(r.sismember(K.item_key(pid, iid) + ":experts", eid)) for iid in ids],
                    dtype=bool)
    pending = np.array([status == "pending" for status, _ in rows], dtype=bool)
    may = eligible(held, mask, seen, expert["active"],
                   r.zcard(K.expert_leases_key(pid, eid)), expert["capacity"])
    priority = np.array([_live_priority(r, pid, iid, tags) for iid, tags in zip(ids, item_tags,
                                                                                strict=True)])
    # An item takes the predicted seconds of its slowest skill.
    slowest = np.array([max((seconds.get(tag, seconds[GENERAL]) for tag in tags),
                            default=seconds[GENERAL]) for tags in item_tags])
    worth = value(priority, fit, label_cost(expert["cost_per_hour"], slowest),
                  routing["fit_exponent"], routing["cost_exponent"])
    open_to = may & pending & (mask.any(axis=1) | (general is not None))
    return Rated(ids, open_to, fit, worth)
