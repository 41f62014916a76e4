"""Leases: expiry returns the item to the pool, late labels are kept but not counted,
extend and release, and the periodic sweep.  Time moves through the queue functions' ``now``."""

from __future__ import annotations

import time

import pytest

from taskrank.queue import keys as K
from taskrank.queue import tasks
from taskrank.queue.exceptions import LeaseNotOpenError
from taskrank.queue.experts import load_expert
from taskrank.queue.projects import get_project
from tests.cluster import both_backends
from tests.invariants import pooled
from tests.server.helpers import assert_problem, make_expert, make_items, make_project, post_items

pytestmark = both_backends  # on the single Redis and on the Redis Cluster

LEASE = 60


@pytest.fixture
def pool(client, auth, r):
    """Project p1 (60 s leases) with three items and experts e1, e2."""
    make_project(client, auth, lease_seconds=LEASE)
    post_items(client, auth, make_items(3))
    make_expert(client, auth, "e1")
    make_expert(client, auth, "e2")
    return lambda: get_project(r, "p1")


def claim(r, project, eid, now):
    return tasks.claim(r, project, load_expert(r, eid), depth=32, now=now)


def item_status(r, iid):
    return r.hget(K.item_key("p1", iid), "st")




def test_expired_lease_returns_the_item_to_the_pool(r, pool):
    """After expires_at the item is rankable again and goes to another expert, not the first."""
    project, t0 = pool(), time.time()
    first = claim(r, project, "e1", t0)
    assert item_status(r, first["item_id"]) == "leased"
    assert first["item_id"] not in pooled(r, "p1")
    assert claim(r, project, "e2", t0 + LEASE - 1)["item_id"] != first["item_id"]
    # e2 now holds a second item; once e1's lease is past, its item is back in the pool.
    tasks.sweep(r, "p1", now=t0 + LEASE + 1)
    assert item_status(r, first["item_id"]) == "pending"
    assert first["item_id"] in pooled(r, "p1")
    assert r.hget(K.task_key("p1", first["id"]), "st") == "expired"
    assert r.zcard(K.expert_leases_key("p1", "e1")) == 0
    again = claim(r, project, "e2", t0 + LEASE + 2)
    assert again["item_id"] == first["item_id"]
    # The first expert is never served an item it already held, even when it is pending.
    tasks.release(r, project, again["id"], now=t0 + LEASE + 3)
    assert item_status(r, first["item_id"]) == "pending"
    assert claim(r, project, "e1", t0 + LEASE + 4)["item_id"] != first["item_id"]
    assert claim(r, project, "e1", t0 + LEASE + 5) is None


def test_claim_sweeps_expired_leases_on_access(r, pool):
    """A claim after expiry returns expired leases first, so the item is served again."""
    project, t0 = pool(), time.time()
    held = [claim(r, project, "e1", t0) for _ in range(3)]
    assert claim(r, project, "e2", t0 + 1) is None
    task = claim(r, project, "e2", t0 + LEASE + 1)
    assert task is not None and task["item_id"] in {t["item_id"] for t in held}
    states = {r.hget(K.task_key("p1", t["id"]), "st") for t in held}
    assert states == {"expired"}


def test_late_label_is_recorded_not_counted_and_409(client, auth, r, pool):
    """A label after expiry answers 409 saying why; the export has it with counted false."""
    project = pool()
    task = claim(r, project, "e1", time.time() - LEASE - 5)  # already past its expiry
    response = client.post(f"/v1/tasks/{task['id']}/label",
                           json={"label": "pos", "seconds_spent": 700},
                           headers=auth("platform"))
    body = assert_problem(response, 409, "expired before the label arrived", "not counted")
    assert body["counted"] is False and body["task_id"] == task["id"]
    assert body["item_id"] == task["item_id"] and body["item_status"] == "pending"
    export = client.get("/v1/projects/p1/labels", headers=auth("platform")).json["labels"]
    assert [(x["task_id"], x["label"], x["counted"], x["seconds_spent"]) for x in export] == [
        (task["id"], "pos", False, 700.0)]
    stats = client.get("/v1/projects/p1/stats", headers=auth("platform")).json
    assert stats["labels"]["counted"] == 0 and stats["labels"]["late"] == 1
    assert stats["items"]["pending"] == 3 and stats["open_leases"] == 0
    # A second late label for the same task is not recorded twice.
    again = client.post(f"/v1/tasks/{task['id']}/label", json={"label": "neg"},
                        headers=auth("platform"))
    assert_problem(again, 409, "already recorded")
    export = client.get("/v1/projects/p1/labels", headers=auth("platform")).json["labels"]
    assert len(export) == 1


def test_label_on_a_released_lease_is_late(client, auth, r, pool):
    """A label after release is recorded, not counted, and the 409 says it was released."""
    project = pool()
    task = claim(r, project, "e1", time.time())
    assert client.post(f"/v1/tasks/{task['id']}/release",
                       headers=auth("platform")).status_code == 200
    response = client.post(f"/v1/tasks/{task['id']}/label", json={"label": "neg"},
                           headers=auth("platform"))
    assert_problem(response, 409, "released")
    assert response.json["counted"] is False


def test_label_twice_is_409_and_counted_once(client, auth, r, pool):
    """A second label on a labeled task (no Idempotency-Key) is a 409; one label counted."""
    task = claim(r, pool(), "e1", time.time())
    first = client.post(f"/v1/tasks/{task['id']}/label", json={"label": "pos"},
                        headers=auth("platform"))
    assert first.status_code == 201
    second = client.post(f"/v1/tasks/{task['id']}/label", json={"label": "neg"},
                         headers=auth("platform"))
    assert_problem(second, 409, "already labeled")
    export = client.get("/v1/projects/p1/labels", headers=auth("platform")).json["labels"]
    assert [(x["label"], x["counted"]) for x in export] == [("pos", True)]


def test_extend_moves_expiry_and_keeps_the_lease(r, pool):
    """Extend sets expires_at to now + lease_seconds; the lease stays open past the old expiry."""
    project, t0 = pool(), time.time()
    task = claim(r, project, "e1", t0)
    view = tasks.extend(r, project, task["id"], now=t0 + LEASE - 10)
    assert view["state"] == "open"
    assert r.zscore(K.leases_key("p1"), task["id"]) == pytest.approx(t0 + 2 * LEASE - 10)
    assert r.zscore(K.expert_leases_key("p1", "e1"), task["id"]) == pytest.approx(
        t0 + 2 * LEASE - 10)
    assert view["expires_at"] > task["expires_at"]
    assert tasks.sweep(r, "p1", now=t0 + LEASE + 5) == 0
    assert item_status(r, task["item_id"]) == "leased"
    status, answer = tasks.submit_label(r, project, task["id"], "pos", 3.0,
                                        now=t0 + LEASE + 20)
    assert status == 201 and answer["counted"] is True


def test_extend_over_http(client, auth, pool):
    """POST extend answers 200 with the open task and an expires_at no earlier than before."""
    response = client.post("/v1/projects/p1/tasks/next", json={"expert_id": "e1"},
                           headers=auth("platform"))
    task = response.json["task"]
    extended = client.post(f"/v1/tasks/{task['id']}/extend", headers=auth("platform"))
    assert extended.status_code == 200
    view = extended.json["task"]
    assert view["state"] == "open" and view["item_id"] == task["item_id"]
    assert view["expert_id"] == "e1" and view["expires_at"] >= task["expires_at"]


def test_extend_after_expiry_is_409(r, pool):
    """An expired lease cannot be extended; the item is back in the pool."""
    project, t0 = pool(), time.time()
    task = claim(r, project, "e1", t0)
    with pytest.raises(LeaseNotOpenError, match="expired"):
        tasks.extend(r, project, task["id"], now=t0 + LEASE + 1)
    assert item_status(r, task["item_id"]) == "pending"


def test_release_gives_the_item_back_and_replays(client, auth, r, pool):
    """Release answers 200 with the released task, the item is pending again, and a second
    release answers exactly the same."""
    task = client.post("/v1/projects/p1/tasks/next", json={"expert_id": "e1"},
                       headers=auth("platform")).json["task"]
    assert item_status(r, task["item_id"]) == "leased"
    first = client.post(f"/v1/tasks/{task['id']}/release", headers=auth("platform"))
    assert first.status_code == 200
    assert first.json["task"]["state"] == "released"
    assert item_status(r, task["item_id"]) == "pending"
    assert task["item_id"] in pooled(r, "p1")
    second = client.post(f"/v1/tasks/{task['id']}/release", headers=auth("platform"))
    assert (second.status_code, second.json) == (first.status_code, first.json)
    expert = client.get("/v1/experts/e1", headers=auth("admin")).json
    assert expert["open_leases"] == 0
    other = client.post("/v1/projects/p1/tasks/next", json={"expert_id": "e2"},
                        headers=auth("platform")).json["task"]
    assert other["item_id"] == task["item_id"]


def test_extend_of_a_released_task_is_409(client, auth, pool):
    """Extending a released task is a 409 problem that names the state."""
    task = client.post("/v1/projects/p1/tasks/next", json={"expert_id": "e1"},
                       headers=auth("platform")).json["task"]
    client.post(f"/v1/tasks/{task['id']}/release", headers=auth("platform"))
    response = client.post(f"/v1/tasks/{task['id']}/extend", headers=auth("platform"))
    body = assert_problem(response, 409, "released", "only an open lease")
    assert body["state"] == "released"


def test_release_of_a_labeled_task_is_409(client, auth, pool):
    """A labeled task cannot be released: 409 naming the state; the label stays counted."""
    task = client.post("/v1/projects/p1/tasks/next", json={"expert_id": "e1"},
                       headers=auth("platform")).json["task"]
    client.post(f"/v1/tasks/{task['id']}/label", json={"label": "pos"},
                headers=auth("platform"))
    response = client.post(f"/v1/tasks/{task['id']}/release", headers=auth("platform"))
    assert_problem(response, 409, "labeled")
    stats = client.get("/v1/projects/p1/stats", headers=auth("platform")).json
    assert stats["items"]["labeled"] == 1 and stats["labels"]["counted"] == 1


def test_unknown_task_is_404_for_extend_and_release(client, auth, pool):
    """Extend or release of a task that never existed is a 404 problem."""
    for action in ("extend", "release"):
        response = client.post(f"/v1/tasks/0000.p1/{action}", headers=auth("platform"))
        assert_problem(response, 404, "no task")


def test_sweep_all_projects_returns_expired_leases(client, auth, r, pool):
    """The periodic sweep returns expired leases of every project and leaves open ones."""
    make_project(client, auth, pid="p2", lease_seconds=LEASE)
    post_items(client, auth, make_items(2), pid="p2")
    live = claim(r, pool(), "e2", time.time())  # first: a claim sweeps its project itself
    long_ago = time.time() - LEASE - 10
    expired = [claim(r, pool(), "e1", long_ago), claim(r, get_project(r, "p2"), "e1", long_ago)]
    assert tasks.sweep_all_projects(r) == 2
    for task, pid in zip(expired, ("p1", "p2"), strict=True):
        assert r.hget(K.task_key(pid, task["id"]), "st") == "expired"
        assert r.hget(K.item_key(pid, task["item_id"]), "st") == "pending"
    assert r.hget(K.task_key("p1", live["id"]), "st") == "open"
    assert tasks.sweep_all_projects(r) == 0


def test_sweep_handles_more_than_one_batch(r, pool):
    """A sweep returns every expired lease even beyond its per-call limit."""
    project, t0 = pool(), time.time()
    held = [claim(r, project, "e1", t0) for _ in range(3)]
    assert tasks.sweep(r, "p1", now=t0 + LEASE + 1, limit=2) == 3
    assert {item_status(r, t["item_id"]) for t in held} == {"pending"}
