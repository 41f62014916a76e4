"""Re-aggregation before each retrain: Dawid–Skene over the finished items with two labels
or more, kept up to date incrementally, and its accuracies fed back into routing.

Labels and each expert's accuracy per skill are learned together, so the model trains on
the jointly estimated labels, and those accuracies become the agreement evidence of the
routing posteriors (``queue/skills.py``).  Each (expert, skill) starts from its declared
level and its gold answers.  An item with one label keeps the vote it got (its expert's
answer): one label says nothing about its expert, and in the EM it is decided by class
prevalence against accuracies it cannot inform, which, on imbalanced classes, turned every
single-label item into the majority class (taskrank demo, breast_cancer: 200 labels of
both classes aggregated to one, so no model could train).  A gold item keeps its gold.

The EM's sufficient statistics (``learning.dawid_skene``: per (expert, skill) the soft
count of right labels and the labels; per class the posterior mass) are kept as running
sums (``keys.aggregation_state_key``), and each item's share of them in its hash (field
``ds``: labels counted, skill, posterior), so an item is decided again by taking its share
out and putting the new one in (incremental EM).  A pass is one of:

- incremental, the usual one: the items new in the labeled set since the last pass
  (``keys.relabeled_key``) are decided against the statistics of all the others, together
  with up to ``REFRESH_ITEMS`` items of the (expert, skill)s whose accuracy moved by more
  than ``TOLERANCE`` since their items were last decided (``keys.aggregation_index_key``),
  or of every item when a class share moved so (``keys.aggregation_items_key``); such a
  refresh goes on over the following passes until it reaches the end of its list (and
  starts over once when its accuracy moved again meanwhile).  So a pass reads the new
  items and at most ``REFRESH_ITEMS`` others, whatever the project's size;
- full: every finished item from scratch, one EM, as the re-aggregation always did; when
  no state is stored (the first retrain after an upgrade, or after one died half-way)
  or when asked (``request_full``: ``POST /v1/projects/{pid}/retrain?full=true``).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import redis

from taskrank.learning.dawid_skene import (
    dawid_skene_parameters,
    dawid_skene_statistics,
    dawid_skene_update,
)
from taskrank.queue import keys as K
from taskrank.queue.aggregate import ANONYMOUS, skill_prior
from taskrank.queue.aggregation_state import (
    CHUNK,
    EVERY_ITEM,
    Cells,
    Row,
    State,
    load_state,
    read_rows,
    share_record,
    source_key,
)
from taskrank.queue.enqueue import JOB_TIMEOUT
from taskrank.queue.skills import replace_agreement

# How far an accuracy (or a class share) may move before the items decided at the old one
# are decided again.  A label of an expert of accuracy a weighs log(a / (1 - a)) in its
# item's vote, so a move of 0.01 changes it by about 0.01 / (a (1 - a)): 0.06 at a = 0.8,
# 0.11 at 0.95, against the 1.4-2.9 a whole label weighs, which flips only items within a
# few per cent of a tie.  And 0.01 is below the uncertainty of any (expert, skill) with
# fewer than ~1,600 labels (the Beta posterior's sd at 0.8), the only ones whose estimate
# still moves that much from one retrain to the next.
TOLERANCE = 0.01
# Items decided again per pass because an accuracy moved: about 0.1 s of reads and EM
# (scripts/bench/retrain.py), next to a fit of ~0.5 s.
REFRESH_ITEMS = 2000


def request_full(r: redis.Redis, pid: str) -> None:
    """Make the next re-aggregation a full pass."""
    r.set(K.full_reaggregation_key(pid), 1)


def reaggregate(r: redis.Redis, project: dict) -> tuple[dict, list[str]]:
    """Dawid–Skene before a retrain, incremental unless a full pass is due: (what it did,
    the items new in the labeled set since the last pass)."""
    pid = project["id"]
    lock = K.aggregation_lock_key(pid)
    if not r.set(lock, 1, nx=True, ex=JOB_TIMEOUT):
        return {"skipped": "another re-aggregation of the project is running"}, []
    try:
        asked = r.getdel(K.full_reaggregation_key(pid)) is not None  # (taken either way)
        state = load_state(r, project)
        full = asked or state is None
        recent = _take_relabeled(r, pid)
        if full:
            _forget(r, pid, state)
            state, refresh = State(list(project["labels"])), []
            iids = r.zrange(K.labeled_key(pid), 0, -1)
        else:
            refresh = _take_refresh(r, pid, state)
            iids = list(dict.fromkeys(recent + refresh))
        rows = read_rows(r, pid, iids, fresh=full)
        changed = _decide(r, project, state, rows, full)
    finally:
        r.delete(lock)
    return {"mode": "full" if full else "incremental", "items": len(rows), "new": len(recent),
            "refreshed": len(refresh), "changed": changed, "refreshing": len(state.refresh)}, recent


def _forget(r: redis.Redis, pid: str, state: State | None) -> None:
    """Drop the stored state first: a full pass that dies half-way leaves none, so the
    next pass is full again (the item shares it rewrote no longer match any sums)."""
    names = [K.aggregation_state_key(pid), K.aggregation_items_key(pid)]
    names += [source_key(pid, cell) for cell in (state.cells if state else ())]
    r.delete(*names)


def _take_relabeled(r: redis.Redis, pid: str) -> list[str]:
    """The new items, moved aside in one step: labels counted meanwhile wait for the next
    pass, and the items of a pass that died (still aside) are taken again."""
    taken = K.relabeled_taken_key(pid)
    pipe = r.pipeline()
    # As a raw command: redis-py's cluster pipeline refuses the multi-key method, though
    # both keys are in the project's slot.
    pipe.execute_command("SUNIONSTORE", taken, taken, K.relabeled_key(pid))
    pipe.delete(K.relabeled_key(pid))
    pipe.smembers(taken)
    return sorted(pipe.execute()[-1])


def _take_refresh(r: redis.Redis, pid: str, state: State) -> list[str]:
    """Up to ``REFRESH_ITEMS`` items of the refreshes in progress, shared evenly; each
    refresh's offset moves past them, and one that reached its end is done (or starts
    over, when it moved again meanwhile)."""
    if not state.refresh:
        return []
    share = max(1, REFRESH_ITEMS // len(state.refresh))
    pipe = r.pipeline(transaction=False)
    for source, (offset, _) in state.refresh.items():
        pipe.lrange(source_key(pid, source), offset, offset + share - 1)
    taken = []
    for (source, (offset, again)), items in zip(list(state.refresh.items()), pipe.execute(),
                                                strict=True):
        taken += items
        if len(items) == share:
            state.refresh[source] = [offset + share, again]
        elif again:
            state.refresh[source] = [0, 0]
        else:
            del state.refresh[source]
    return taken


def _decide(r: redis.Redis, project: dict, state: State, rows: list[Row], full: bool) -> int:
    """Decide ``rows`` against the statistics of every other item; store their labels and
    shares, the new sums and the accuracies routing learns from.  Labels changed."""
    cells, labels = Cells.of(state, rows), {label: i for i, label in enumerate(state.labels)}
    if not cells.experts:
        _store(r, project["id"], state, rows, np.zeros((0, len(labels))), full)
        return 0
    prior = skill_prior(r, project, list(cells.experts), list(cells.tags))
    rest = _rest(state, rows, cells, labels)
    items, who, given, skill = cells.triples(rows, labels, counted=False)
    posterior, _ = dawid_skene_update(items, who, given, len(rows), cells.shape[0], len(labels),
                                      rest=rest, item_tag=skill, n_tags=cells.shape[1],
                                      prior=prior)
    posterior = np.round(posterior, 6)
    mine = dawid_skene_statistics(items, who, given, posterior, cells.shape[0], item_tag=skill,
                                  n_tags=cells.shape[1])
    correct, total, mass, n = (part + own for part, own in zip(rest, mine, strict=True))
    correct, mass = np.clip(correct, 0.0, total), np.clip(mass, 0.0, None)
    accuracy, prevalence = dawid_skene_parameters(correct, total, mass, n, prior=prior)
    _update_state(state, cells, (correct, total, mass, n), accuracy, prevalence)
    changed = _store(r, project["id"], state, rows, posterior, full)
    _feed_routing(r, project["id"], state)
    return changed


def _rest(state: State, rows: list[Row], cells: Cells, labels: dict[str, int]) -> tuple:
    """The stored sums without the rows' stored shares: what every other item taught."""
    correct, total = np.zeros(cells.shape), np.zeros(cells.shape)
    for name, (right, count, _) in state.cells.items():
        eid, tag = name.split(":")
        correct[cells.experts[eid], cells.tags[tag]] = right
        total[cells.experts[eid], cells.tags[tag]] = count
    shares = np.array([row.share or [0.0] * len(labels) for row in rows]).reshape(-1, len(labels))
    items, who, given, skill = cells.triples(rows, labels, counted=True)
    old = dawid_skene_statistics(items, who, given, shares, cells.shape[0], item_tag=skill,
                                 n_tags=cells.shape[1])
    return (correct - old[0], total - old[1], np.array(state.mass) - old[2],
            state.n - old[3])


def _update_state(state: State, cells: Cells, sums: tuple, accuracy: np.ndarray,
                  prevalence: np.ndarray) -> None:
    """New sums; a refresh (from the start of its list) for every cell whose accuracy, and
    of every item when a class share, moved more than ``TOLERANCE`` since last decided."""
    correct, total, mass, n = sums
    experts, tags = list(cells.experts), list(cells.tags)
    kept = {}
    for e, t in zip(*np.nonzero(total > 0), strict=True):
        name, now = f"{experts[e]}:{tags[t]}", float(accuracy[e, t])
        decided_at = state.cells.get(name, [0.0, 0.0, now])[2]
        if abs(now - decided_at) > TOLERANCE:
            decided_at = now
            _refresh(state, name)
        kept[name] = [float(correct[e, t]), float(total[e, t]), decided_at]
    state.cells, state.n, state.mass = kept, int(n), mass.tolist()
    if state.prevalence is None:
        state.prevalence = prevalence.tolist()
    elif np.max(np.abs(prevalence - state.prevalence)) > TOLERANCE:
        state.prevalence = prevalence.tolist()
        _refresh(state, EVERY_ITEM)


def _refresh(state: State, source: str) -> None:
    """Decide the items of ``source`` again: from the start of its list, or, when a refresh
    of it is under way, once more after that one (which never restarts: with moves more
    frequent than a refresh takes, the end of a list would never be reached)."""
    if source in state.refresh:
        state.refresh[source][1] = 1
    else:
        state.refresh[source] = [0, 0]


def _store(r: redis.Redis, pid: str, state: State, rows: list[Row], posterior: np.ndarray,
           full: bool) -> int:
    """Write the rows, then the state and the end of the taken items in one transaction
    (all of it in that one transaction for an incremental pass: the sums and the shares
    must never disagree).  A full pass rebuilds the index lists."""
    final = r.pipeline()
    if full:
        r.delete(*[source_key(pid, name) for name in state.cells], K.aggregation_items_key(pid))
    changed, size = 0, CHUNK if full else max(len(rows), 1)
    for start in range(0, len(rows), size):
        pipe = r.pipeline(transaction=False) if full else final
        changed += _write_rows(pipe, pid, state.labels, rows[start:start + size],
                               posterior[start:start + size])
        if full:
            pipe.execute()
    final.set(K.aggregation_state_key(pid), state.to_json())
    final.delete(K.relabeled_taken_key(pid))
    final.execute()
    return changed


def _write_rows(pipe: redis.client.Pipeline, pid: str, labels: list[str], rows: list[Row],
                posterior: np.ndarray) -> int:
    """Each row's label and share; each new label's item onto its cell's list, each new
    item onto the list of all (one RPUSH per list).  Labels changed."""
    changed, listed = 0, defaultdict(list)
    for row, p in zip(rows, posterior, strict=True):
        label = row.gold or labels[int(p.argmax())]
        changed += label != row.label
        pipe.hset(K.item_key(pid, row.iid), mapping={
            "al": label, "ac": 1.0 if row.gold else float(p.max()),
            "ds": share_record(row, p)})
        first = row.counted if row.counted_tag == row.tag else 0
        for eid, _ in row.votes[first:]:  # each label joins its cell's list once
            listed[K.aggregation_index_key(pid, eid, row.tag)].append(row.iid)
        if not row.counted:
            listed[K.aggregation_items_key(pid)].append(row.iid)
    for key, iids in listed.items():
        pipe.rpush(key, *iids)
    return changed


def _feed_routing(r: redis.Redis, pid: str, state: State) -> None:
    """Each (expert, skill)'s soft count of right labels, and of wrong ones, becomes its
    agreement evidence (labels without an expert teach no one)."""
    evidence = {}
    for name, (right, count, _) in state.cells.items():
        eid, tag = name.split(":")
        if eid != ANONYMOUS:
            evidence[(eid, tag)] = (right, count - right)
    replace_agreement(r, pid, evidence)
