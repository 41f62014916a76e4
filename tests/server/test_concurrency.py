"""Many experts leasing and labeling one project at once (one task or several a claim): no
item is held beyond its redundancy, none is lost, and every counted label is exported
exactly once.

The two large runs (16 threads x 200 cycles, and redundancy 2) call the queue functions
directly, one Redis client per thread: through Flask's test client the same 3,200 cycles
took 10-20 s on the 2-core machine, too much for this suite, and the atomicity under test
lives in the Lua scripts those functions run.  A 16 x 40 run goes through HTTP, one test
client per thread, to cover the whole stack.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor

from taskrank.queue import keys as K
from taskrank.queue import tasks
from taskrank.queue.connection import connect
from taskrank.queue.experts import load_expert
from taskrank.queue.labels import export_labels
from taskrank.queue.projects import get_project
from tests.invariants import check_store, pooled
from tests.server.helpers import make_expert, make_items, make_project, post_items

THREADS = 16
HTTP_CYCLES = 40


class Holders:
    """Who holds each item right now, as the clients see it.

    A client forgets its lease *before* it sends the label or release, so the server can
    only hand the item to someone else after that: a second holder seen here beyond the
    redundancy is a real double lease, never a race of the bookkeeping.
    """

    def __init__(self, redundancy: int) -> None:
        self.redundancy = redundancy
        self.lock = threading.Lock()
        self.now: dict[str, set[str]] = defaultdict(set)
        self.ever: dict[str, list[str]] = defaultdict(list)
        self.violations: list[str] = []

    def took(self, iid: str, eid: str) -> None:
        with self.lock:
            if len(self.now[iid]) >= self.redundancy or eid in self.now[iid]:
                self.violations.append(f"{iid} leased to {eid} while {self.now[iid]} hold it")
            if eid in self.ever[iid]:
                self.violations.append(f"{iid} served to {eid} a second time")
            self.now[iid].add(eid)
            self.ever[iid].append(eid)

    def gives_back(self, iid: str, eid: str) -> None:
        with self.lock:
            self.now[iid].discard(eid)


def setup_pool(client, auth, n_items: int, redundancy: int) -> None:
    make_project(client, auth, redundancy=redundancy,
                 strategy={"retrain": {"every_labels": 10**6}})
    for start in range(0, n_items, 1000):
        items = make_items(min(1000, n_items - start), seed=start)
        for entry in items:
            entry["id"] = f"b{start}-{entry['id']}"
        assert post_items(client, auth, items).json["created"] == len(items)
    for i in range(THREADS):
        make_expert(client, auth, f"x{i}", capacity=50)


def export_all(r) -> list[dict]:
    records, cursor = [], None
    while True:
        page = export_labels(r, "p1", cursor, 1000)
        records += page["labels"]
        cursor = page["next_cursor"]
        if cursor is None:
            return records


def check_pool(r, holders: Holders, acknowledged: list[tuple[str, str, str]]) -> dict:
    """Every item is pending, leased or labeled and its counts agree with the tasks and the
    export; every acknowledged (201) label is exported once as counted.  Returns the
    items' statuses counted, plus 'spot_checked': items the project's spot checks
    (qa.review_rate) sent back for a second label, each wanting one label more."""
    assert holders.violations == []
    records = export_all(r)
    counted = [x for x in records if x["counted"]]
    assert Counter(x["task_id"] for x in counted) == Counter(t for t, _, _ in acknowledged)
    assert max(Counter(x["task_id"] for x in counted).values(), default=1) == 1
    assert {(x["task_id"], x["item_id"], x["expert_id"]) for x in counted} == set(acknowledged)
    assert int(r.hget(K.counters_key("p1"), "counted") or 0) == len(acknowledged)
    assert not any(not x["counted"] for x in records), "no lease expired, so nothing is late"
    open_by_item = Counter(r.hget(K.task_key("p1", tid), "item")
                           for tid in r.zrange(K.leases_key("p1"), 0, -1))
    labels_by_item = defaultdict(list)
    for record in counted:
        labels_by_item[record["item_id"]].append(record["expert_id"])
    statuses = Counter()
    pool = set(pooled(r, "p1"))
    for iid in r.smembers(K.items_key("p1")):
        fields = r.hgetall(K.item_key("p1", iid))
        out, done, want = int(fields["out"]), int(fields["done"]), int(fields["want"])
        experts = labels_by_item[iid]
        assert done == len(experts) <= want and len(set(experts)) == len(experts), iid
        assert out == open_by_item[iid], iid
        expected = ("labeled" if done >= want else "leased" if out + done >= want
                    else "pending")
        assert fields["st"] == expected, (iid, fields)
        assert (iid in pool) == (expected == "pending"), iid
        statuses[expected] += 1
        if fields.get("rc") == "1":
            assert want == holders.redundancy + 1, (iid, fields)
            statuses["spot_checked"] += 1
        else:
            assert want == holders.redundancy, (iid, fields)
    assert sum(statuses.values()) - statuses["spot_checked"] == r.scard(K.items_key("p1"))
    return statuses


def labeled_items(acknowledged: list[tuple[str, str, str]]) -> set[str]:
    return {iid for _, iid, _ in acknowledged}


def run_threads(worker, n: int = THREADS) -> list:
    with ThreadPoolExecutor(max_workers=n) as pool:
        return [future.result() for future in [pool.submit(worker, i) for i in range(n)]]


def test_sixteen_experts_two_hundred_cycles_each(client, auth, settings, r):
    """16 threads x 200 next/label cycles (some releases, some leases left open): no item
    is leased twice at once, none is lost, and every counted label is exported once."""
    setup_pool(client, auth, 3400, redundancy=1)
    project = get_project(r, "p1")
    holders, acknowledged, lock = Holders(1), [], threading.Lock()

    def expert_loop(index: int) -> Counter:
        rng, done = random.Random(index), Counter()
        own = connect(settings)
        expert = load_expert(own, f"x{index}")
        try:
            for _ in range(200):
                task = tasks.claim(own, project, expert, settings.claim_depth)
                assert task is not None, "the pool holds more items than the cycles use"
                holders.took(task["item_id"], expert["id"])
                time.sleep(rng.random() * 0.0005)  # the expert at work, others racing
                roll = rng.random()
                if roll < 0.03:
                    done["kept"] += 1  # left open: the item must stay leased
                    continue
                holders.gives_back(task["item_id"], expert["id"])
                if roll < 0.15:
                    tasks.release(own, project, task["id"])
                    done["released"] += 1
                    continue
                status, body = tasks.submit_label(own, project, task["id"],
                                                  rng.choice(project["labels"]), 3.0)
                assert status == 201 and body["counted"], body
                with lock:
                    acknowledged.append((task["id"], task["item_id"], expert["id"]))
                done["labeled"] += 1
        finally:
            own.close()
        return done

    totals = sum(run_threads(expert_loop), Counter())
    assert sum(totals.values()) == THREADS * 200
    statuses = check_pool(r, holders, acknowledged)
    assert totals["labeled"] == len(acknowledged)
    touched = labeled_items(acknowledged)
    # the default spot checks (2 %) send some labeled items back for a second label
    assert 0 < statuses["spot_checked"] < 0.05 * len(touched)
    assert statuses["labeled"] + statuses["spot_checked"] >= len(touched) >= statuses["labeled"]
    assert statuses["leased"] == totals["kept"] == r.zcard(K.leases_key("p1"))
    assert statuses["pending"] + statuses["labeled"] + statuses["leased"] == 3400


def test_redundancy_two_gives_each_item_two_labels_from_two_experts(client, auth, settings, r):
    """With redundancy 2 and 16 experts racing, every item ends with exactly 2 counted
    labels from 2 distinct experts, and never more than 2 holders at once."""
    n_items = 150
    setup_pool(client, auth, n_items, redundancy=2)
    project = get_project(r, "p1")
    holders, acknowledged, lock = Holders(2), [], threading.Lock()
    deadline = time.monotonic() + 30

    def expert_loop(index: int) -> None:
        rng = random.Random(100 + index)
        own = connect(settings)
        expert = load_expert(own, f"x{index}")
        try:
            while time.monotonic() < deadline:
                with lock:
                    if len(acknowledged) == 2 * n_items:
                        return
                task = tasks.claim(own, project, expert, settings.claim_depth)
                if task is None:
                    time.sleep(0.002)  # the rest is leased to others or was labeled by us
                    continue
                holders.took(task["item_id"], expert["id"])
                time.sleep(rng.random() * 0.0005)
                holders.gives_back(task["item_id"], expert["id"])
                if rng.random() < 0.1:
                    tasks.release(own, project, task["id"])
                    continue
                status, body = tasks.submit_label(own, project, task["id"], "pos", 1.0)
                assert status == 201, body
                with lock:
                    acknowledged.append((task["id"], task["item_id"], expert["id"]))
        finally:
            own.close()

    run_threads(expert_loop)
    assert len(acknowledged) == 2 * n_items, "the run did not finish in time"
    statuses = check_pool(r, holders, acknowledged)
    assert statuses["labeled"] == n_items and statuses["spot_checked"] == 0
    by_item = defaultdict(set)
    for _, iid, eid in acknowledged:
        by_item[iid].add(eid)
    assert len(by_item) == n_items and {len(e) for e in by_item.values()} == {2}


def test_concurrent_experts_over_http(app, client, auth, r):
    """16 threads x 40 cycles, each its own expert and test client, racing next/label over
    HTTP: the same guarantees hold through the whole stack (auth, validation, after-label)."""
    setup_pool(client, auth, 800, redundancy=1)
    holders, acknowledged, lock = Holders(1), [], threading.Lock()
    headers = auth("platform")

    def expert_loop(index: int) -> None:
        own = app.test_client()
        eid = f"x{index}"
        for cycle in range(HTTP_CYCLES):
            response = own.post("/v1/projects/p1/tasks/next", json={"expert_id": eid},
                                headers=headers)
            assert response.status_code == 200, response.get_data(as_text=True)
            task = response.json["task"]
            holders.took(task["item_id"], eid)
            holders.gives_back(task["item_id"], eid)
            if cycle % 5 == 4:
                response = own.post(f"/v1/tasks/{task['id']}/release", headers=headers)
                assert response.status_code == 200
                continue
            response = own.post(f"/v1/tasks/{task['id']}/label",
                                json={"label": "pos", "seconds_spent": 2},
                                headers={**headers, "Idempotency-Key": f"{eid}-{cycle}"})
            assert response.status_code == 201, response.get_data(as_text=True)
            with lock:
                acknowledged.append((task["id"], task["item_id"], eid))

    run_threads(expert_loop)
    statuses = check_pool(r, holders, acknowledged)
    assert len(acknowledged) == THREADS * HTTP_CYCLES * 4 // 5
    assert statuses["spot_checked"] < 0.05 * len(labeled_items(acknowledged))
    stats = client.get("/v1/projects/p1/stats", headers=headers).json
    assert stats["items"] == {"total": 800, "pending": statuses["pending"], "leased": 0,
                              "labeled": statuses["labeled"], "gold": 0,
                              "withdrawn": 0}
    assert stats["labels"]["counted"] == len(acknowledged)


def test_eight_experts_claiming_several_tasks_at_once(client, auth, settings, r):
    """8 experts (capacity 5, redundancy 2) each ask for 1-8 tasks per claim, 40 rounds,
    labeling or releasing some and keeping others: a claim never passes the expert's
    capacity, leases only distinct items, and no item is held by more than 2 experts or
    twice by one; the store stays consistent."""
    n_experts, capacity = 8, 5
    make_project(client, auth, redundancy=2, strategy={"retrain": {"every_labels": 10**6}})
    assert post_items(client, auth, make_items(1000)).json["created"] == 1000
    for i in range(n_experts):
        make_expert(client, auth, f"x{i}", capacity=capacity)
    project = get_project(r, "p1")
    holders, shortfalls = Holders(2), Counter()

    def expert_loop(index: int) -> int:
        rng, held, leased_total = random.Random(index), [], 0
        own = connect(settings)
        expert = load_expert(own, f"x{index}")
        try:
            for _ in range(40):
                n = rng.randint(1, 8)
                leased, refusal = tasks.lease_tasks(own, project, expert,
                                                    settings.claim_depth, n)
                assert len(leased) == min(n, capacity - len(held)), (n, len(held))
                assert (refusal is None) == (len(leased) == n)
                if refusal is not None:
                    assert refusal.reason == "at_capacity", refusal
                    shortfalls[refusal.reason] += 1
                assert len({task["item_id"] for task in leased}) == len(leased)
                for task in leased:
                    holders.took(task["item_id"], expert["id"])
                held += leased
                leased_total += len(leased)
                assert own.zcard(K.expert_leases_key("p1", expert["id"])) <= capacity
                time.sleep(rng.random() * 0.0005)  # others racing
                rng.shuffle(held)
                for task in held[:rng.randint(0, len(held))]:
                    holders.gives_back(task["item_id"], expert["id"])
                    if rng.random() < 0.2:
                        tasks.release(own, project, task["id"])
                    else:
                        status, body = tasks.submit_label(own, project, task["id"], "pos", 1.0)
                        assert status == 201, body
                    held.remove(task)
        finally:
            own.close()
        return leased_total

    leased_total = sum(run_threads(expert_loop, n_experts))
    assert holders.violations == []
    assert shortfalls["at_capacity"] > 0 and leased_total > n_experts * 40
    counts = check_store(r, "p1")
    assert counts["tasks"]["open"] == r.zcard(K.leases_key("p1"))


def test_eight_experts_claiming_several_tasks_over_http(app, client, auth, r):
    """The same through the whole stack: 8 test clients ask for n (1-4) tasks a claim and
    label them all; no item is leased twice, every label counts once."""
    setup_pool(client, auth, 400, redundancy=1)
    holders, acknowledged, lock = Holders(1), [], threading.Lock()
    headers = auth("platform")

    def expert_loop(index: int) -> None:
        own, rng, eid = app.test_client(), random.Random(index), f"x{index}"
        for _ in range(10):
            response = own.post("/v1/projects/p1/tasks/next", headers=headers,
                                json={"expert_id": eid, "n": rng.randint(1, 4)})
            assert response.status_code == 200, response.get_data(as_text=True)
            for task in response.json["tasks"]:
                holders.took(task["item_id"], eid)
            for task in response.json["tasks"]:
                holders.gives_back(task["item_id"], eid)
                answer = own.post(f"/v1/tasks/{task['id']}/label", json={"label": "neg"},
                                  headers=headers)
                assert answer.status_code == 201, answer.get_data(as_text=True)
                with lock:
                    acknowledged.append((task["id"], task["item_id"], eid))

    run_threads(expert_loop, 8)
    check_pool(r, holders, acknowledged)
    assert len(acknowledged) > 8 * 10
    check_store(r, "p1")
