"""Per-process caches of the next-task and label routes: fresh where this process changed
something, bounded staleness otherwise."""

from __future__ import annotations

from taskrank.queue.experts import put_expert
from taskrank.queue.projects import update_project
from taskrank.server import create_app


def _setup(client, auth):
    client.post("/v1/projects", json={"id": "p", "labels": ["a", "b"]}, headers=auth())
    client.put("/v1/experts/e1", json={"skills": {}, "capacity": 5}, headers=auth())
    client.post("/v1/projects/p/items", headers=auth("platform"), json={"items": [
        {"id": f"i{i}", "predictions": {"m": [0.5, 0.5]}} for i in range(4)]})


def _next(client, auth):
    return client.post("/v1/projects/p/tasks/next", json={"expert_id": "e1"},
                       headers=auth("platform"))


def test_changes_through_this_app_apply_at_once(client, auth):
    """A PUT of the expert and a PATCH of the project answered by this process are seen by
    its very next task request, cache or not."""
    _setup(client, auth)
    assert _next(client, auth).status_code == 200
    client.put("/v1/experts/e1", json={"skills": {}, "active": False}, headers=auth())
    assert _next(client, auth).status_code == 204
    client.put("/v1/experts/e1", json={"skills": {}, "active": True}, headers=auth())
    client.patch("/v1/projects/p", json={"lease_seconds": 30}, headers=auth())
    task = _next(client, auth).get_json()["task"]
    lease = client.post(f"/v1/tasks/{task['id']}/extend", headers=auth("platform"))
    assert lease.status_code == 200
    label = client.post(f"/v1/tasks/{task['id']}/label", json={"label": "c"},
                        headers=auth("platform"))
    assert label.status_code == 422  # not a label of the project


def test_a_change_elsewhere_is_seen_within_the_cache_time(r, settings, client, auth):
    """A change made behind this process's back (another web process) is served stale from
    the cache, and fresh by an app without one."""
    _setup(client, auth)
    cached = create_app(settings.replace(cache_seconds=60)).test_client()
    assert _next(cached, auth).status_code == 200
    put_expert(r, "e1", {"skills": {}, "active": False})  # as another process would
    assert _next(cached, auth).status_code == 200  # within cache_seconds: still cached
    uncached = create_app(settings.replace(cache_seconds=0)).test_client()
    assert _next(uncached, auth).status_code == 204
    update_project(r, "p", {"lease_seconds": 20})
    assert create_app(settings).test_client().get(
        "/v1/projects/p", headers=auth("platform")).get_json()["lease_seconds"] == 20


def test_an_unknown_token_is_not_remembered(r, client, auth):
    """A token refused once works as soon as it exists: only known tokens are cached."""
    from taskrank.queue import keys
    from taskrank.queue.tokens import hash_token

    _setup(client, auth)
    token = "tr_later"
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/v1/projects/p", headers=headers).status_code == 401
    r.hset(keys.token_key(hash_token(token)), mapping={"role": "platform", "created_at": "0"})
    assert client.get("/v1/projects/p", headers=headers).status_code == 200
