"""Item and task life cycle over HTTP: withdrawing an item (DELETE), several tasks in one
claim (tasks/next with n) on both paths, and an expert's open tasks."""

from __future__ import annotations

import pytest

from taskrank.queue import keys as K
from taskrank.queue.tasks import MAX_TASKS_PER_CLAIM
from taskrank.server import create_app
from tests.cluster import both_backends
from tests.invariants import check_store, pooled
from tests.server.helpers import (
    assert_problem,
    make_expert,
    make_items,
    make_project,
    next_task,
    post_items,
)

pytestmark = both_backends  # on the single Redis and on the Redis Cluster


@pytest.fixture
def pool(client, auth):
    """Project p1 (redundancy 1) with items i0..i9; expert e1 (capacity 3) and e2."""
    make_project(client, auth)
    post_items(client, auth, make_items(10))
    make_expert(client, auth, "e1", capacity=3)
    make_expert(client, auth, "e2")


def claim_n(client, auth, n, eid="e1", role="platform"):
    return client.post("/v1/projects/p1/tasks/next", json={"expert_id": eid, "n": n},
                       headers=auth(role))


def test_withdrawal_during_a_lease_ends_it_and_a_late_label_is_not_counted(client, auth, r,
                                                                            pool):
    """DELETE ends the open lease (state withdrawn), takes the item out of the pool; the
    label sent on that lease afterwards is recorded, not counted (409 saying why), and a
    second DELETE answers the same item with nothing ended."""
    task = next_task(client, auth).json["task"]
    iid = task["item_id"]
    response = client.delete(f"/v1/projects/p1/items/{iid}", headers=auth("platform"))
    assert response.status_code == 200, response.json
    body = response.json
    assert body["withdrawn"] is True and body["ended_tasks"] == [task["id"]]
    assert body["status"] == "withdrawn" and body["withdrawn_at"]
    assert r.hget(K.task_key("p1", task["id"]), "st") == "withdrawn"
    assert r.zcard(K.expert_leases_key("p1", "e1")) == 0
    late = client.post(f"/v1/tasks/{task['id']}/label", json={"label": "pos"},
                       headers=auth("platform"))
    problem = assert_problem(late, 409, "withdrawn before the label arrived",
                             "recorded, not counted")
    assert problem["counted"] is False and problem["item_status"] == "withdrawn"
    again = client.delete(f"/v1/projects/p1/items/{iid}", headers=auth("platform")).json
    assert again["withdrawn"] is False and again["ended_tasks"] == []
    stats = client.get("/v1/projects/p1/stats", headers=auth("platform")).json
    assert stats["labels"] == {"counted": 0, "late": 1, "last_hour": 0}
    assert stats["items"]["withdrawn"] == 1 and stats["open_leases"] == 0
    assert client.get("/v1/projects/p1/labels", headers=auth("platform")).json["labels"][0][
        "counted"] is False
    check_store(r, "p1")


def test_a_withdrawn_item_is_never_served_nor_ingested_again(client, auth, r, pool):
    """It leaves the pool (and its gold set), no expert is served it, extend and release
    of its ended lease are 409, and an upsert of its id is rejected with the reason."""
    post_items(client, auth, [{"id": "g0", "predictions": {"m1": [0.5, 0.5]}, "gold": "pos"}])
    held = next_task(client, auth, eid="e2").json["task"]
    for iid in ("i3", "g0", held["item_id"]):
        assert client.delete(f"/v1/projects/p1/items/{iid}",
                             headers=auth("platform")).status_code == 200
    assert not {"i3", held["item_id"]} & set(pooled(r, "p1"))
    assert not r.exists(K.gold_key("p1", "_general"))
    served = {next_task(client, auth, eid=eid).json["task"]["item_id"]
              for eid in ("e1", "e1", "e1", "e2", "e2", "e2")}
    assert not served & {"i3", "g0", held["item_id"]}
    for action in ("extend", "release"):
        assert_problem(client.post(f"/v1/tasks/{held['id']}/{action}",
                                   headers=auth("platform")), 409, "withdrawn")
    result = post_items(client, auth, make_items(5)).json
    assert result["updated"] == 4 and result["rejected"] == [
        {"index": 3, "id": "i3", "detail": "this item was withdrawn (DELETE); a withdrawn "
                                           "item stays withdrawn: send it under a new id"}]
    assert client.get("/v1/projects/p1/items/i3", headers=auth("platform")).json[
        "status"] == "withdrawn"
    check_store(r, "p1")


def test_withdrawal_needs_a_platform_token_and_a_known_item(client, auth, pool):
    """An expert token is refused, an unknown item or project is a 404."""
    assert_problem(client.delete("/v1/projects/p1/items/i0", headers=auth("expert")), 403)
    assert_problem(client.delete("/v1/projects/p1/items/nope", headers=auth("platform")), 404,
                   "no item 'nope'")
    assert_problem(client.delete("/v1/projects/p2/items/i0", headers=auth("platform")), 404)


@pytest.mark.parametrize("fast", [True, False])
def test_n_tasks_in_one_claim_within_capacity(settings, r, auth, tokens, fast):
    """n leases distinct items, best first, up to the expert's capacity; fewer than n say
    why in the headers; absent n keeps the single-task answer; at capacity a 204. Both
    the fast path and the Flask views answer so."""
    client = create_app(settings.replace(fast_path=fast)).test_client()
    make_project(client, auth)
    post_items(client, auth, make_items(10))
    make_expert(client, auth, "e1", capacity=3)
    two = claim_n(client, auth, 2)
    assert two.status_code == 200 and "Taskrank-Reason" not in two.headers
    assert len(two.json["tasks"]) == 2 and "task" not in two.json
    priorities = [task["priority"] for task in two.json["tasks"]]
    assert priorities == sorted(priorities, reverse=True)
    more = claim_n(client, auth, 5, role="expert")  # the expert token acts for e1 itself
    assert more.status_code == 200 and len(more.json["tasks"]) == 1
    assert more.headers["Taskrank-Reason"] == "at_capacity"
    assert "holds 3 open leases" in more.headers["Taskrank-Reason-Detail"]
    items = [task["item_id"] for task in two.json["tasks"] + more.json["tasks"]]
    assert len(set(items)) == 3 and not set(items) & set(pooled(r, "p1"))
    full = claim_n(client, auth, 1)
    assert full.status_code == 204 and full.headers["Taskrank-Reason"] == "at_capacity"
    assert r.zcard(K.expert_leases_key("p1", "e1")) == 3
    single = next_task(client, auth, eid="e1")
    assert single.status_code == 204
    check_store(r, "p1")


def test_n_stops_when_the_pool_runs_dry(client, auth, r, pool):
    """Asking for more than the pool holds leases what there is, and says nothing is
    left; n out of range is a 422 naming it."""
    make_expert(client, auth, "e3", capacity=50)
    response = claim_n(client, auth, 50, eid="e3")
    assert len(response.json["tasks"]) == 10
    assert response.headers["Taskrank-Reason"] == "nothing_eligible"
    for bad in (0, MAX_TASKS_PER_CLAIM + 1, 2.5, "3", True):
        problem = assert_problem(claim_n(client, auth, bad, eid="e3"), 422, "n:")
        assert problem["errors"][0]["field"] == "n"
    assert claim_n(client, auth, None, eid="e1").status_code == 204  # null: one task
    check_store(r, "p1")


def test_open_tasks_of_an_expert_across_projects(client, auth, r, pool):
    """GET /v1/experts/{eid}/tasks lists its open leases in every project with payloads,
    soonest to expire first; labeled and released ones leave the list."""
    make_project(client, auth, pid="p2")
    post_items(client, auth, make_items(2), pid="p2")
    first, second = claim_n(client, auth, 2).json["tasks"]
    other = client.post("/v1/projects/p2/tasks/next", json={"expert_id": "e1"},
                        headers=auth("platform")).json["task"]
    next_task(client, auth, eid="e2")
    listed = client.get("/v1/experts/e1/tasks", headers=auth("expert")).json["tasks"]
    # the two leased in one claim expire together, before the third
    assert {task["id"] for task in listed[:2]} == {first["id"], second["id"]}
    assert listed[2]["id"] == other["id"] and listed[2]["project_id"] == "p2"
    by_id = {task["id"]: task for task in listed}
    assert by_id[first["id"]]["payload"] == first["payload"]
    assert {(task["state"], task["expert_id"]) for task in listed} == {("open", "e1")}
    client.post(f"/v1/tasks/{first['id']}/label", json={"label": "pos"},
                headers=auth("platform"))
    client.post(f"/v1/tasks/{other['id']}/release", headers=auth("platform"))
    listed = client.get("/v1/experts/e1/tasks", headers=auth("platform")).json["tasks"]
    assert [task["id"] for task in listed] == [second["id"]]


def test_open_tasks_auth(client, auth, pool):
    """An expert token reads its own list only; platform and admin read any; an expert
    never declared is a 404."""
    assert client.get("/v1/experts/e1/tasks", headers=auth("expert")).status_code == 200
    assert_problem(client.get("/v1/experts/e2/tasks", headers=auth("expert")), 403,
                   "may only act for expert 'e1'")
    for role in ("platform", "admin"):
        assert client.get("/v1/experts/e2/tasks", headers=auth(role)).json == {"tasks": []}
    assert_problem(client.get("/v1/experts/ghost/tasks", headers=auth("platform")), 404)
    assert_problem(client.get("/v1/experts/e1/tasks"), 401)


def test_a_retried_n_claim_gets_the_same_tasks(client, auth, r, pool):
    """With an Idempotency-Key, a retry of an n-task claim answers the tasks the first
    one leased and leases nothing more."""
    headers = {**auth("platform"), "Idempotency-Key": "claim-1"}
    body = {"expert_id": "e2", "n": 3}
    first = client.post("/v1/projects/p1/tasks/next", json=body, headers=headers)
    again = client.post("/v1/projects/p1/tasks/next", json=body, headers=headers)
    assert first.status_code == again.status_code == 200
    assert [t["id"] for t in again.json["tasks"]] == [t["id"] for t in first.json["tasks"]]
    assert r.zcard(K.expert_leases_key("p1", "e2")) == 3
    check_store(r, "p1")
