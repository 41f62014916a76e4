"""Item and task life cycle beyond lease and label: withdraw an item, list an expert's open
tasks across projects."""

from __future__ import annotations

import json

import redis

from taskrank.queue import keys as K
from taskrank.queue import lua
from taskrank.queue.clock import now as clock_now
from taskrank.queue.clock import rfc3339
from taskrank.queue.exceptions import NoSuchItemError


def withdraw_item(r: redis.Redis, project: dict, iid: str, now: float | None = None) -> dict:
    """Withdraw an item for good (the WITHDRAW script): ``withdrawn`` (false when it was
    already) and ``ended_tasks``, the ids of the open leases it ended."""
    pid = project["id"]
    reply = lua.run(r, "withdraw", pid, [K.item_key(pid, iid), K.item_experts_key(pid, iid)],
                    [clock_now() if now is None else now, iid])
    if reply[0] == "missing":
        raise NoSuchItemError(f"no item '{iid}' in project '{pid}'")
    return {"withdrawn": bool(reply[1]), "ended_tasks": list(reply[2])}


def expert_open_tasks(r: redis.Redis, eid: str, now: float | None = None) -> list[dict]:
    """The expert's open leases in every project, soonest to expire first, each with its
    item's payload (what a client needs to resume it).  A lease past its expiry that no
    sweep has returned yet is not open any more, so it is left out."""
    now = clock_now() if now is None else now
    pids = sorted(r.smembers(K.projects_key()))
    pipe = r.pipeline(transaction=False)
    for pid in pids:
        pipe.zrangebyscore(K.expert_leases_key(pid, eid), now, "+inf")
    leases = [(pid, tid) for pid, tids in zip(pids, pipe.execute(), strict=True)
              for tid in tids]
    for pid, tid in leases:
        pipe.hmget(K.task_key(pid, tid), "item", "exp", "ca", "st")
    tasks = pipe.execute()
    for (pid, _), (iid, *_rest) in zip(leases, tasks, strict=True):
        pipe.hget(K.item_key(pid, iid), "pl")
    payloads = pipe.execute()
    rows = sorted((float(expires), pid, tid, iid, created, payload)
                  for (pid, tid), (iid, expires, created, state), payload
                  in zip(leases, tasks, payloads, strict=True) if state == "open")
    return [{"id": tid, "project_id": pid, "item_id": iid, "expert_id": eid, "state": "open",
             "expires_at": rfc3339(expires), "created_at": rfc3339(created),
             "payload": json.loads(payload) if payload else None}
            for expires, pid, tid, iid, created, payload in rows]
