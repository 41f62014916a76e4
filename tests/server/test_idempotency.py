"""Idempotent labels: a retry with the same Idempotency-Key replays the first answer, and no
schedule of retries, duplicates and late sends ever counts a label twice."""

from __future__ import annotations

import random
import time
from collections import Counter, defaultdict

import pytest
import redis

from taskrank.queue import keys as K
from taskrank.queue import tasks
from taskrank.queue.exceptions import IdempotencyConflictError
from taskrank.queue.experts import load_expert
from taskrank.queue.labels import export_labels
from taskrank.queue.projects import get_project
from taskrank.server import tasks as task_views
from tests.pools import NO_CHECKS
from tests.server.helpers import make_expert, make_items, make_project, next_task, post_items


@pytest.fixture
def task(client, auth):
    make_project(client, auth)
    post_items(client, auth, make_items(4))
    make_expert(client, auth)
    return next_task(client, auth).json["task"]


def label(client, auth, tid, body, key=None):
    headers = {**auth("platform"), **({"Idempotency-Key": key} if key else {})}
    return client.post(f"/v1/tasks/{tid}/label", json=body, headers=headers)


def exported(client, auth):
    return client.get("/v1/projects/p1/labels", headers=auth("platform")).json["labels"]


def test_retry_with_same_key_replays_the_first_answer(client, auth, task):
    """The same key and body answer exactly the first 201 (status, type, body); one label."""
    body = {"label": "pos", "seconds_spent": 42}
    first = label(client, auth, task["id"], body, key="k-1")
    assert first.status_code == 201
    for _ in range(3):
        again = label(client, auth, task["id"], body, key="k-1")
        assert (again.status_code, again.mimetype, again.get_data()) == (
            first.status_code, first.mimetype, first.get_data())
    assert [(x["label"], x["counted"]) for x in exported(client, auth)] == [("pos", True)]
    stats = client.get("/v1/projects/p1/stats", headers=auth("platform")).json
    assert stats["labels"]["counted"] == 1


def test_retry_of_a_late_label_replays_the_409(client, auth, r):
    """A late label's 409 is replayed as is for the same key, and recorded once."""
    make_project(client, auth)
    post_items(client, auth, make_items(2))
    make_expert(client, auth)
    project = get_project(r, "p1")
    stale = tasks.claim(r, project, load_expert(r, "e1"), 32, now=time.time() - 10_000)
    body = {"label": "neg", "seconds_spent": 1}
    first = label(client, auth, stale["id"], body, key="late-key")
    assert first.status_code == 409 and first.json["counted"] is False
    again = label(client, auth, stale["id"], body, key="late-key")
    assert (again.status_code, again.get_data()) == (first.status_code, first.get_data())
    assert [(x["counted"]) for x in exported(client, auth)] == [False]


@pytest.mark.parametrize("changed", [{"label": "neg"}, {"seconds_spent": 43},
                                     {"label": "neg", "seconds_spent": 0}])
def test_same_key_different_body_is_422(client, auth, task, changed):
    """Reusing a key with a different label or seconds_spent is a 422; the first answer stands."""
    body = {"label": "pos", "seconds_spent": 42}
    first = label(client, auth, task["id"], body, key="k-2")
    response = label(client, auth, task["id"], {**body, **changed}, key="k-2")
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    assert "Idempotency-Key" in response.json["detail"] and "new key" in response.json["detail"]
    assert label(client, auth, task["id"], body, key="k-2").get_data() == first.get_data()
    assert [(x["label"], x["counted"]) for x in exported(client, auth)] == [("pos", True)]


def test_int_and_float_seconds_are_the_same_request(client, auth, task):
    """seconds_spent 42 and 42.0 are the same request for the key (JSON numbers)."""
    first = label(client, auth, task["id"], {"label": "pos", "seconds_spent": 42}, key="k")
    again = label(client, auth, task["id"], {"label": "pos", "seconds_spent": 42.0}, key="k")
    assert (again.status_code, again.get_data()) == (201, first.get_data())


def test_a_new_key_or_no_key_after_a_label_is_409(client, auth, task):
    """A second request for a labeled task (new key or none) is a 409 and not counted."""
    assert label(client, auth, task["id"], {"label": "pos"}, key="a").status_code == 201
    for key in ("b", None):
        response = label(client, auth, task["id"], {"label": "neg"}, key=key)
        assert response.status_code == 409 and response.json["counted"] is False
        assert "already labeled" in response.json["detail"]
    assert [(x["label"], x["counted"]) for x in exported(client, auth)] == [("pos", True)]


def test_keys_are_scoped_to_their_task(client, auth, task):
    """The same key on two tasks is two requests: both labels count."""
    other = next_task(client, auth).json["task"]
    assert label(client, auth, task["id"], {"label": "pos"}, key="same").status_code == 201
    response = label(client, auth, other["id"], {"label": "neg"}, key="same")
    assert response.status_code == 201 and response.json["task_id"] == other["id"]
    assert sorted(x["task_id"] for x in exported(client, auth)) == sorted(
        [task["id"], other["id"]])


# --- property: random retry schedules --------------------------------------------------------

SCHEDULES = 1000
LEASE = 900
LABELS = ["neg", "pos"]


class Model:
    """What the label script must do, in (status, counted) terms, per task."""

    def __init__(self) -> None:
        self.state: dict[str, str] = {}
        self.expires: dict[str, float] = {}
        self.late_recorded: set[str] = set()
        self.stored: dict[tuple[str, str], tuple[tuple, tuple[int, bool]]] = {}

    def send(self, tid: str, request: tuple, key: str | None, now: float) -> object:
        if key and (tid, key) in self.stored:
            first_request, answer = self.stored[(tid, key)]
            return "conflict" if first_request != request else answer
        if self.state[tid] == "open" and self.expires[tid] < now:
            self.state[tid] = "expired"
        if self.state[tid] == "open":
            self.state[tid], answer = "labeled", (201, True)
        elif self.state[tid] == "labeled" or tid in self.late_recorded:
            return 409, False  # answered, not stored under the key
        else:
            self.late_recorded.add(tid)
            answer = (409, False)
        if key:
            self.stored[(tid, key)] = (request, answer)
        return answer


def _sends(rng: random.Random, tid: str, claimed_at: float) -> list[tuple]:
    """The requests one client makes for one task: logical requests, each retried 1-4 times."""
    sends = []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        key = f"key-{rng.randrange(10**9)}" if rng.random() < 0.7 else None
        request = (rng.choice(LABELS), float(rng.choice([0, 5, 12.5])))
        if sends and rng.random() < 0.3:
            key = sends[-1][2]  # the same key again: same body or (a client bug) another
            request = sends[-1][1] if rng.random() < 0.5 else request
        for _ in range(rng.randint(1, 4)):
            late = rng.random() < 0.15
            now = claimed_at + (LEASE + rng.uniform(1, 100) if late else rng.uniform(0, LEASE - 1))
            sends.append((tid, request, key, now))
    return sends


def test_random_retry_schedules_never_double_count(client, auth, r):
    """1,000 seeded schedules of retries (keyed or not), duplicates, late sends and other
    tasks interleaved: replays match the first answer, each task counts at most once, the
    counters equal the distinct tasks labeled and each counted label is exported once."""
    rng = random.Random(20240611)
    make_project(client, auth, lease_seconds=LEASE)
    for start in (0, 1000):
        items = make_items(1000, seed=start)
        for entry in items:
            entry["id"] = f"s{start}-{entry['id']}"
        assert post_items(client, auth, items).json["created"] == 1000
    experts = [f"x{i}" for i in range(6)]
    for eid in experts:
        make_expert(client, auth, eid, capacity=50)
    project = get_project(r, "p1")
    loaded = {eid: load_expert(r, eid) for eid in experts}
    model, first_answer, mix = Model(), {}, Counter()
    counted_tasks, answers_201 = set(), defaultdict(set)
    for _ in range(SCHEDULES):
        schedule = []
        for _ in range(rng.choice([1, 1, 2, 3])):
            claimed_at = time.time()
            task = tasks.claim(r, project, loaded[rng.choice(experts)], 32, now=claimed_at)
            assert task is not None
            model.state[task["id"]], model.expires[task["id"]] = "open", claimed_at + LEASE
            schedule += _sends(rng, task["id"], claimed_at)
        rng.shuffle(schedule)
        for tid, (label_, seconds), key, now in schedule:
            was_stored = (tid, key) in model.stored
            expected = model.send(tid, (label_, seconds), key, now)
            stores_now = not was_stored and (tid, key) in model.stored
            try:
                status, body = tasks.submit_label(r, project, tid, label_, seconds, key, now=now)
            except IdempotencyConflictError:
                assert expected == "conflict"
                mix["conflict"] += 1
                continue
            assert (status, body["counted"]) == expected, (tid, key, body)
            if stores_now:
                first_answer[(tid, key)] = (status, body)
            elif was_stored:
                assert (status, body) == first_answer[(tid, key)], "a replay differs"
                mix["replay"] += 1
            if status == 201:
                counted_tasks.add(tid)
                answers_201[tid].add(body["label"])
    assert all(len(labels) == 1 for labels in answers_201.values())
    counters = r.hgetall(K.counters_key("p1"))
    assert int(counters["counted"]) == len(counted_tasks)
    assert int(counters.get("late", 0)) == len(model.late_recorded)
    records, cursor = [], None
    while True:
        page = export_labels(r, "p1", cursor, 1000)
        records += page["labels"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    counted = Counter(x["task_id"] for x in records if x["counted"])
    assert set(counted) == counted_tasks and set(counted.values()) == {1}
    assert all(answers_201[x["task_id"]] == {x["label"]} for x in records if x["counted"])
    late = Counter(x["task_id"] for x in records if not x["counted"])
    assert set(late) == model.late_recorded and set(late.values()) <= {1}
    labeled = [tid for tid in model.state if r.hget(K.task_key("p1", tid), "st") == "labeled"]
    assert set(labeled) == counted_tasks
    # The mix is real: many counted and late labels, replays and conflicting reuses.
    assert len(counted_tasks) > 500 and len(model.late_recorded) > 50
    assert mix["replay"] > 500 and mix["conflict"] > 20


def test_a_label_stored_is_answered_201_when_its_follow_up_fails(client, auth, r,
                                                                  monkeypatch):
    """The label is written; the aggregation after it fails (Redis gone at that moment,
    injected here): the answer is still 201 (a 503 would say "not applied"), and the item
    waits in the follow-up set for the workers' upkeep."""
    make_project(client, auth, redundancy=2, strategy=NO_CHECKS)
    post_items(client, auth, make_items(1))
    make_expert(client, auth, "e1")
    make_expert(client, auth, "e2")

    def redis_gone(*args, **kwargs):
        raise redis.ConnectionError("Connection refused")

    monkeypatch.setattr(task_views, "after_label", redis_gone)
    for eid in ("e1", "e2"):
        task = next_task(client, auth, eid=eid).json["task"]
        response = client.post(f"/v1/tasks/{task['id']}/label", headers=auth("platform"),
                               json={"label": "pos"})
        assert response.status_code == 201, response.json
    assert r.smembers(K.followup_key("p1")) == {task["item_id"]}


def test_next_task_with_an_idempotency_key_gives_the_same_lease_on_retry(client, auth, r):
    """A tasks/next whose answer was lost is retried with its Idempotency-Key: the same
    lease comes back and no second one is granted; another key gets another task."""
    make_project(client, auth)
    post_items(client, auth, make_items(5))
    make_expert(client, auth, "e1")
    ask = {"headers": {**auth("platform"), "Idempotency-Key": "k1"},
           "json": {"expert_id": "e1"}}
    first = client.post("/v1/projects/p1/tasks/next", **ask)
    again = client.post("/v1/projects/p1/tasks/next", **ask)
    assert first.status_code == again.status_code == 200
    assert again.json == first.json
    assert r.zcard(K.expert_leases_key("p1", "e1")) == 1
    other = client.post("/v1/projects/p1/tasks/next", json={"expert_id": "e1"},
                        headers={**auth("platform"), "Idempotency-Key": "k2"})
    assert other.json["task"]["id"] != first.json["task"]["id"]
    assert r.zcard(K.expert_leases_key("p1", "e1")) == 2
    long_key = client.post("/v1/projects/p1/tasks/next", json={"expert_id": "e1"},
                           headers={**auth("platform"), "Idempotency-Key": "x" * 201})
    assert long_key.status_code == 400
