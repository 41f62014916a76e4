"""The labeling loop end to end over HTTP: project, items, expert, next task, label, export."""

from __future__ import annotations

from tests.cluster import both_backends
from tests.server.helpers import make_expert, make_items, make_project, next_task, post_items

pytestmark = both_backends  # on the single Redis and on the Redis Cluster


def test_next_task_is_the_highest_priority_item(client, auth):
    """The first task is the item the queue ranks first, with its payload and reason."""
    make_project(client, auth)
    assert post_items(client, auth, make_items(20)).json["created"] == 20
    make_expert(client, auth)
    top = client.get("/v1/projects/p1/queue?limit=1", headers=auth("platform")).json["items"][0]
    response = next_task(client, auth)
    assert response.status_code == 200
    task = response.json["task"]
    assert task["item_id"] == top["id"]
    assert task["payload"] == top["payload"]
    assert "priority" in task["reason"] and task["expires_at"].endswith("Z")


def test_label_is_counted_and_exported(client, auth):
    """A label on an open lease is counted, finishes the item and appears in the export."""
    make_project(client, auth)
    post_items(client, auth, make_items(3))
    make_expert(client, auth)
    task = next_task(client, auth).json["task"]
    response = client.post(f"/v1/tasks/{task['id']}/label", json={"label": "pos",
                           "seconds_spent": 12.5}, headers=auth("platform"))
    assert response.status_code == 201, response.json
    assert response.json["counted"] is True and response.json["item_status"] == "labeled"
    export = client.get("/v1/projects/p1/labels", headers=auth("platform")).json
    assert [(x["item_id"], x["label"], x["counted"]) for x in export["labels"]] == [
        (task["item_id"], "pos", True)]
    assert export["next_cursor"] is None
    item = client.get(f"/v1/projects/p1/items/{task['item_id']}", headers=auth("platform")).json
    assert item["status"] == "labeled" and item["aggregated"]["label"] == "pos"
    stats = client.get("/v1/projects/p1/stats", headers=auth("platform")).json
    assert stats["items"] == {"total": 3, "pending": 2, "leased": 0, "labeled": 1,
                              "gold": 0, "withdrawn": 0}
    assert stats["labels"]["counted"] == 1 and stats["labels"]["last_hour"] == 1


def test_nothing_left_answers_204(client, auth):
    """When every item is leased, next task answers 204 with no body."""
    make_project(client, auth)
    post_items(client, auth, make_items(1))
    make_expert(client, auth)
    make_expert(client, auth, "e2")
    assert next_task(client, auth).status_code == 200
    response = next_task(client, auth, eid="e2")
    assert response.status_code == 204 and response.data == b""
