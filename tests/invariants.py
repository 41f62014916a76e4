"""The store's consistency rules, checked against what Redis holds for one project.

Shared by the stateful property test (tests/queue/test_pool_state.py) and the fault tests
(tests/faults/): whatever happened, these must hold.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict

import redis

from taskrank.queue import keys as K
from taskrank.queue.models import current_ranker
from taskrank.queue.pool_map import cover, current_pool_map
from taskrank.queue.scoring import score_items, stored_item


def _tasks(r: redis.Redis, pid: str) -> dict[str, dict[str, str]]:
    prefix = K.task_prefix(pid)
    pipe = r.pipeline(transaction=False)
    tids = [key[len(prefix):] for key in r.scan_iter(match=prefix + "*", count=1000)]
    for tid in tids:
        pipe.hgetall(prefix + tid)
    return dict(zip(tids, pipe.execute(), strict=True))


def _items(r: redis.Redis, pid: str, ids: list[str]) -> dict[str, dict]:
    pipe = r.pipeline(transaction=False)
    for iid in ids:
        pipe.hgetall(K.item_key(pid, iid))
        pipe.lrange(K.item_labels_key(pid, iid), 0, -1)
        pipe.smembers(K.item_experts_key(pid, iid))
    rows = pipe.execute()
    return {iid: {"fields": rows[3 * i], "labels": rows[3 * i + 1], "experts": rows[3 * i + 2]}
            for i, iid in enumerate(ids)}


def check_store(r: redis.Redis, pid: str, scores_are_pr: bool = False) -> dict:
    """Assert every rule; returns counts (items by status, tasks by state, labels).

    ``scores_are_pr``: also require every pending item's score to be its stored 'pr' (true
    while no model was trained: a re-score then reproduces the ingest priorities).
    """
    ids = sorted(r.smembers(K.items_key(pid)))
    items, tasks = _items(r, pid, ids), _tasks(r, pid)
    errors: list[str] = []
    by_item: dict[str, list[tuple[str, dict]]] = defaultdict(list)
    for tid, task in tasks.items():
        if task.get("item") not in items:
            errors.append(f"task {tid} names an unknown item {task.get('item')!r}")
            continue
        by_item[task["item"]].append((tid, task))
    for iid, item in items.items():
        errors += _check_item(iid, item, by_item[iid])
    errors += _check_pools(r, pid, items, scores_are_pr)
    errors += _check_leases(r, pid, tasks)
    counts = _check_labels(r, pid, tasks, errors)
    errors += _check_spend(r, pid, tasks)
    assert not errors, "store inconsistent:\n" + "\n".join(errors[:40])
    counts["items"] = Counter(item["fields"]["st"] for item in items.values())
    counts["tasks"] = Counter(task["st"] for task in tasks.values())
    return counts


def _check_item(iid: str, item: dict, tasks: list[tuple[str, dict]]) -> list[str]:
    """Counts, status and experts of one item against its tasks: its leases and the labels
    it got without a lease (task field 'll'; expert '' when none was named)."""
    fields, errors = item["fields"], []
    if not fields.get("st"):
        return [f"item {iid} is in the items set but has no hash/status"]
    out = sum(task["st"] == "open" for _, task in tasks)
    done = sum(task["st"] == "labeled" for _, task in tasks)
    want = int(fields.get("want", 1))
    if int(fields.get("out", 0)) != out:
        errors.append(f"item {iid}: out={fields.get('out')} but {out} open leases")
    if int(fields.get("done", 0)) != done or len(item["labels"]) != done:
        errors.append(f"item {iid}: done={fields.get('done')}, {len(item['labels'])} labels "
                      f"listed, {done} labeled tasks")
    gold, withdrawn = bool(fields.get("g")), fields.get("wd") == "1"
    if done > want and not gold:  # gold items are served to every expert as checks
        errors.append(f"item {iid}: {done} counted labels but only {want} wanted")
    status = "labeled" if done >= want else "leased" if out + done >= want else "pending"
    status = "withdrawn" if withdrawn else "gold" if gold else status
    if fields["st"] != status:
        errors.append(f"item {iid}: status {fields['st']} but out={out} done={done} "
                      f"want={want} gold={gold} withdrawn={withdrawn} make it {status}")
    if withdrawn and out:
        errors.append(f"item {iid} is withdrawn but {out} leases on it are open")
    leased_by = [task["expert"] for _, task in tasks if not task.get("ll")]
    if len(leased_by) != len(set(leased_by)):
        errors.append(f"item {iid}: one expert holds several leases {sorted(leased_by)}")
    experts = {task["expert"] for _, task in tasks if task["st"] != "recorded"} - {""}
    if not experts <= item["experts"]:
        errors.append(f"item {iid}: task experts {sorted(experts)} not all in its experts set")
    labelers = [entry.split("\t", 1)[0] for entry in item["labels"]]
    named = [eid for eid in labelers if eid]
    if len(named) != len(set(named)):
        errors.append(f"item {iid}: labeled twice by one expert {labelers}")
    return errors


def _check_pools(r: redis.Redis, pid: str, items: dict[str, dict],
                 scores_are_pr: bool) -> list[str]:
    """Each tag set holds exactly the pending items with that tag, the untagged set the
    pending items without tags, each gold set the gold items (not withdrawn) of its tag;
    an item has one score in all its sets (re-scores write
    every set it is in), equal to its stored 'pr' when ``scores_are_pr`` (no re-score
    with a new model happened).  Every tag in use is in the project's tag set, and the
    per-status counters agree with the item hashes."""
    pending = {iid for iid, item in items.items() if item["fields"].get("st") == "pending"}
    wanted: dict[str, set[str]] = defaultdict(set)
    for iid in pending:
        for key in K.pool_keys(pid, _tags(items[iid])):
            wanted[key].add(iid)
    for iid, item in items.items():
        if item["fields"].get("st") == "gold":
            for tag in _tags(item) or ["_general"]:
                wanted[K.gold_key(pid, tag)].add(iid)
    found = {key: dict(r.zrange(key, 0, -1, withscores=True))
             for key in r.scan_iter(match=K.pool_tag_key(pid, "") + "*", count=1000)}
    found[K.pool_untagged_key(pid)] = dict(r.zrange(K.pool_untagged_key(pid), 0, -1,
                                                    withscores=True))
    errors = []
    for key in sorted(set(found) | set(wanted)):
        have, want = set(found.get(key, {})), wanted.get(key, set())
        if have != want:
            errors.append(f"{key}: extra {sorted(have - want)}, missing {sorted(want - have)}")
    for iid in sorted(pending):
        scores = {found.get(key, {}).get(iid) for key in K.pool_keys(pid, _tags(items[iid]))}
        if len(scores) > 1:
            errors.append(f"item {iid} has different scores in its sets: {sorted(scores)}")
            continue
        score, stored = scores.pop(), float(items[iid]["fields"]["pr"])
        if scores_are_pr and score is not None and abs(score - stored) > 1e-9:
            errors.append(f"item {iid}: score {score} differs from its stored 'pr' {stored}")
    tags = {tag for item in items.values() for tag in _tags(item)}
    if not tags <= r.smembers(K.tags_key(pid)):
        errors.append(f"tags {sorted(tags - r.smembers(K.tags_key(pid)))} missing from the "
                      "project's tag set")
    return errors + _check_status_counts(r, pid, items)


def _tags(item: dict) -> list[str]:
    return item["fields"]["s"].split(",") if item["fields"].get("s") else []


def _check_status_counts(r: redis.Redis, pid: str, items: dict[str, dict]) -> list[str]:
    """The counters hash's ``n:<status>`` equal the numbers of items in each status."""
    actual = Counter(item["fields"].get("st") for item in items.values())
    counters = r.hgetall(K.counters_key(pid))
    stored = {name[2:]: int(value) for name, value in counters.items()
              if name.startswith("n:") and int(value)}
    if stored != dict(actual):
        return [f"status counters {stored} but items by status {dict(actual)}"]
    return []


def _check_leases(r: redis.Redis, pid: str, tasks: dict[str, dict]) -> list[str]:
    """The lease set and the per-expert sets hold exactly the open tasks, by expiry."""
    open_tasks = {tid: task for tid, task in tasks.items() if task.get("st") == "open"}
    errors = []
    leases = dict(r.zrange(K.leases_key(pid), 0, -1, withscores=True))
    if set(leases) != set(open_tasks):
        errors.append(f"lease set {sorted(leases)} != open tasks {sorted(open_tasks)}")
    by_expert: dict[str, set[str]] = defaultdict(set)
    for tid, task in open_tasks.items():
        by_expert[task["expert"]].add(tid)
        if tid in leases and abs(leases[tid] - float(task["exp"])) > 1e-6:
            errors.append(f"lease {tid}: score {leases[tid]} but expires at {task['exp']}")
    prefix = K.expert_leases_prefix(pid)
    found = {key[len(prefix):]: set(r.zrange(key, 0, -1))
             for key in r.scan_iter(match=prefix + "*", count=1000)}
    for eid in sorted(set(found) | set(by_expert)):
        if found.get(eid, set()) != by_expert.get(eid, set()):
            errors.append(f"expert {eid}: lease set {sorted(found.get(eid, set()))} != open "
                          f"tasks {sorted(by_expert.get(eid, set()))}")
    return errors


def _check_labels(r: redis.Redis, pid: str, tasks: dict[str, dict], errors: list[str]) -> dict:
    """The stream holds one counted entry per labeled task and at most one late entry per
    other task; the counters agree with it."""
    entries = [fields for _, fields in r.xrange(K.labels_stream_key(pid))]
    per_task = Counter(fields["task"] for fields in entries)
    twice = sorted(tid for tid, n in per_task.items() if n > 1)
    if twice:
        errors.append(f"tasks with more than one label in the export: {twice}")
    counted = [fields for fields in entries if fields["counted"] == "1"]
    late = [fields for fields in entries if fields["counted"] == "0"]
    labeled = {tid for tid, task in tasks.items() if task.get("st") == "labeled"}
    if {fields["task"] for fields in counted} != labeled:
        errors.append("counted labels in the export differ from the labeled tasks")
    for fields in late:  # 'recorded': a label without a lease on a withdrawn item
        if tasks.get(fields["task"], {}).get("st") not in ("expired", "released", "withdrawn",
                                                           "recorded"):
            errors.append(f"late label for task {fields['task']} that is not expired, "
                          "released, withdrawn or recorded")
    counters = r.hgetall(K.counters_key(pid))
    if int(counters.get("counted", 0)) != len(counted):
        errors.append(f"counter counted={counters.get('counted')} but {len(counted)} counted "
                      "labels in the export")
    if int(counters.get("late", 0)) != len(late):
        errors.append(f"counter late={counters.get('late')} but {len(late)} late labels")
    return {"counted": len(counted), "late": len(late)}


def _check_spend(r: redis.Redis, pid: str, tasks: dict[str, dict]) -> list[str]:
    """The dollars reserved are the predicted costs of the open leases; those spent, and
    the spend hash's totals, are rate x seconds of every label in the stream that came
    through a lease (a label without one is never charged)."""
    entries = [fields for _, fields in r.xrange(K.labels_stream_key(pid))
               if not fields.get("ll")]
    spent = sum(float(tasks[fields["task"]].get("rate", 0)) * float(fields["seconds"]) / 3600
                for fields in entries)
    reserved = sum(float(task.get("pc", 0)) for task in tasks.values()
                   if task.get("st") == "open")
    counters, totals = r.hgetall(K.counters_key(pid)), r.hgetall(K.spend_key(pid))
    errors = []
    if abs(float(counters.get("spent_usd", 0)) - spent) > 1e-6 * max(1.0, spent):
        errors.append(f"spent_usd={counters.get('spent_usd')} but the labels cost {spent}")
    if abs(float(counters.get("reserved_usd", 0)) - reserved) > 1e-6 * max(1.0, reserved):
        errors.append(f"reserved_usd={counters.get('reserved_usd')} but open leases "
                      f"predict {reserved}")
    seconds = sum(float(fields["seconds"]) for fields in entries)
    if int(totals.get("n", 0)) != len(entries) or abs(
            float(totals.get("sec", 0)) - seconds) > 1e-6 * max(1.0, seconds):
        errors.append(f"spend totals n={totals.get('n')} sec={totals.get('sec')} but "
                      f"{len(entries)} labels of {seconds} s")
    return errors


def pooled(r: redis.Redis, pid: str) -> dict[str, float]:
    """Every rankable item with its live score, read from the untagged set and every tag
    set (there is no global pool)."""
    keys = [K.pool_untagged_key(pid)] + [K.pool_tag_key(pid, tag)
                                         for tag in sorted(r.smembers(K.tags_key(pid)))]
    scores: dict[str, float] = {}
    for key in keys:
        scores.update(r.zrange(key, 0, -1, withscores=True))
    return scores


def not_rescored(r: redis.Redis, project: dict, ids: list[str]) -> list[str]:
    """The ids among ``ids`` whose live score is not what the current model gives them."""
    pid = project["id"]
    pipe = r.pipeline()
    for iid in ids:
        pipe.hmget(K.item_key(pid, iid), "p", "f", "b")
    items = [stored_item(iid, *fields) for iid, fields in zip(ids, pipe.execute(), strict=True)]
    pool_map = current_pool_map(r, pid)
    expected, _ = score_items(items, project["strategy"], len(project["labels"]),
                              current_ranker(r, project), breakdown=False,
                              coverage=cover(items, pool_map)[0],
                              reference=pool_map.pool_map.reference if pool_map else None)
    live = pooled(r, pid)
    return [iid for iid, score in zip(ids, expected, strict=True)
            if live.get(iid) is None or abs(live[iid] - score) > 1e-9]


def check_aggregation_state(r: redis.Redis, pid: str) -> dict:
    """After a re-aggregation with no new label since: the stored Dawid–Skene sums are the
    sums of the finished items' stored shares, each share covers all its item's labels and
    decides its label, every item sits once in the list of each of its (expert, skill)s
    and in the list of all, and routing holds the sums as agreement evidence.  Returns the
    state."""
    state = json.loads(r.get(K.aggregation_state_key(pid)))
    labels, errors = state["labels"], []
    ids = sorted(r.zrange(K.labeled_key(pid), 0, -1))
    items = {iid: item for iid, item in _items(r, pid, ids).items() if len(item["labels"]) >= 2}
    cells: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    mass, members = [0.0] * len(labels), defaultdict(Counter)
    for iid, item in items.items():
        counted, tag, share = item["fields"]["ds"].split(";")
        share = [float(p) for p in share.split(",")]
        expected = item["fields"].get("g") or labels[share.index(max(share))]
        if int(counted) != len(item["labels"]) or item["fields"]["al"] != expected:
            errors.append(f"item {iid}: share {item['fields']['ds']} for labels "
                          f"{item['labels']}, aggregated {item['fields']['al']}")
        mass = [m + p for m, p in zip(mass, share, strict=True)]
        for entry in item["labels"]:
            eid, label = entry.split("\t", 1)
            cells[f"{eid}:{tag}"][0] += share[labels.index(label)]
            cells[f"{eid}:{tag}"][1] += 1
            members[f"{eid}:{tag}"][iid] += 1
    errors += _check_sums(state, cells, mass, len(items))
    for name in cells:
        eid, tag = name.split(":")
        listed = Counter(r.lrange(K.aggregation_index_key(pid, eid, tag), 0, -1))
        if listed != members[name]:
            errors.append(f"index of {name} lists {sorted(listed)[:5]}..., expected "
                          f"{sorted(members[name])[:5]}... ({len(listed)} vs {len(members[name])})")
        skill = r.hmget(K.expert_skill_key(pid, eid), f"a:{tag}", f"d:{tag}")
        if eid and abs(float(skill[0]) + float(skill[1]) - cells[name][1]) > 1e-3:
            errors.append(f"routing evidence of {name} is {skill}, Dawid–Skene has {cells[name]}")
    if Counter(r.lrange(K.aggregation_items_key(pid), 0, -1)) != Counter(list(items)):
        errors.append("the list of every counted item differs from the finished items")
    assert not errors, "aggregation state inconsistent:\n" + "\n".join(errors[:40])
    return state


def _check_sums(state: dict, cells: dict, mass: list[float], n: int) -> list[str]:
    errors = []
    if set(state["cells"]) != set(cells):
        errors.append(f"cells {sorted(state['cells'])} stored, {sorted(cells)} in the items")
    for name, (right, count) in cells.items():
        stored = state["cells"].get(name, [0.0, 0.0])
        if abs(stored[0] - right) > 1e-6 * max(1, count) or stored[1] != count:
            errors.append(f"cell {name}: stored {stored[:2]}, items sum to {[right, count]}")
    drift = max(abs(a - b) for a, b in zip(state["mass"], mass, strict=True))
    if state["n"] != n or drift > 1e-6 * max(1, n):
        errors.append(f"class mass {state['mass']} of {state['n']} items stored, items sum to "
                      f"{mass} of {n}")
    return errors
