"""The store's consistency rules, checked against what Redis holds for one project.

Shared by the stateful property test (tests/queue/test_pool_state.py) and the fault tests
(tests/faults/): whatever happened, these must hold.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import redis

from taskrank.queue import keys as K


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


def check_store(r: redis.Redis, pid: str) -> dict:
    """Assert every rule; returns counts (items by status, tasks by state, labels)."""
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
    errors += _check_pools(r, pid, items)
    errors += _check_leases(r, pid, tasks)
    counts = _check_labels(r, pid, tasks, errors)
    assert not errors, "store inconsistent:\n" + "\n".join(errors[:40])
    counts["items"] = Counter(item["fields"]["st"] for item in items.values())
    counts["tasks"] = Counter(task["st"] for task in tasks.values())
    return counts


def _check_item(iid: str, item: dict, tasks: list[tuple[str, dict]]) -> list[str]:
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
    if done > want:
        errors.append(f"item {iid}: {done} counted labels but only {want} wanted")
    status = "labeled" if done >= want else "leased" if out + done >= want else "pending"
    if fields["st"] != status:
        errors.append(f"item {iid}: status {fields['st']} but out={out} done={done} "
                      f"want={want} make it {status}")
    experts = [task["expert"] for _, task in tasks]
    if len(experts) != len(set(experts)):
        errors.append(f"item {iid}: one expert holds several tasks {sorted(experts)}")
    if not set(experts) <= item["experts"]:
        errors.append(f"item {iid}: task experts {sorted(experts)} not all in its experts set")
    labelers = [entry.split("\t", 1)[0] for entry in item["labels"]]
    if len(labelers) != len(set(labelers)):
        errors.append(f"item {iid}: labeled twice by one expert {labelers}")
    return errors


def _check_pools(r: redis.Redis, pid: str, items: dict[str, dict]) -> list[str]:
    """The pool holds exactly the pending items; each tag set exactly the pending items
    with that tag (untagged ones in their own set), all at the item's priority."""
    pending = {iid for iid, item in items.items() if item["fields"].get("st") == "pending"}
    wanted: dict[str, dict[str, float]] = defaultdict(dict)
    for iid in pending:
        fields = items[iid]["fields"]
        tags = fields["s"].split(",") if fields.get("s") else []
        for key in [K.pool_tag_key(pid, tag) for tag in tags] or [K.pool_untagged_key(pid)]:
            wanted[key][iid] = float(fields.get("pr") or 0)
        wanted[K.pool_key(pid)][iid] = float(fields.get("pr") or 0)
    found = {key: dict(r.zrange(key, 0, -1, withscores=True))
             for key in r.scan_iter(match=K.pool_tag_key(pid, "") + "*", count=1000)}
    for key in (K.pool_key(pid), K.pool_untagged_key(pid)):
        found[key] = dict(r.zrange(key, 0, -1, withscores=True))
    errors = []
    for key in sorted(set(found) | set(wanted)):
        have, want = found.get(key, {}), wanted.get(key, {})
        if set(have) != set(want):
            errors.append(f"{key}: extra {sorted(set(have) - set(want))}, "
                          f"missing {sorted(set(want) - set(have))}")
        wrong = [iid for iid in set(have) & set(want) if abs(have[iid] - want[iid]) > 1e-9]
        if wrong:
            errors.append(f"{key}: score differs from the item's priority for {sorted(wrong)}")
    return errors


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
    for fields in late:
        if tasks.get(fields["task"], {}).get("st") not in ("expired", "released"):
            errors.append(f"late label for task {fields['task']} that is not expired/released")
    counters = r.hgetall(K.counters_key(pid))
    if int(counters.get("counted", 0)) != len(counted):
        errors.append(f"counter counted={counters.get('counted')} but {len(counted)} counted "
                      "labels in the export")
    if int(counters.get("late", 0)) != len(late):
        errors.append(f"counter late={counters.get('late')} but {len(late)} late labels")
    return {"counted": len(counted), "late": len(late)}
