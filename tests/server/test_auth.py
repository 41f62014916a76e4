"""Bearer tokens and the nested roles: 401 and 403 problems, what each role may do."""

from __future__ import annotations

import pytest

from taskrank.server import create_app
from tests.server.helpers import assert_problem, make_expert, make_items, make_project, post_items

PROJECT = {"id": "p9", "labels": ["neg", "pos"]}




def assert_unauthenticated(response, *words: str) -> None:
    assert_problem(response, 401, *words)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_no_token_is_401_with_a_challenge(client):
    """No Authorization header: 401 problem, WWW-Authenticate, a detail saying what to send."""
    assert_unauthenticated(client.post("/v1/projects", json=PROJECT), "Bearer <token>")


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", "tr_abc"])
def test_malformed_header_is_401(client, header):
    """A header that is not 'Bearer <token>' is a 401 that shows the expected form."""
    response = client.get("/v1/projects", headers={"Authorization": header})
    assert_unauthenticated(response, "Bearer <token>")


def test_unknown_token_is_401(client, tokens):
    """A well-formed token that was never issued is a 401 ('unknown token')."""
    response = client.get("/v1/projects", headers={"Authorization": "Bearer tr_not-a-token"})
    assert_unauthenticated(response, "unknown token")


def test_expert_token_may_not_create_a_project(client, auth):
    """An expert token on an admin route is a 403 naming the role needed and the role held."""
    response = client.post("/v1/projects", json=PROJECT, headers=auth("expert"))
    assert_problem(response, 403, "'admin'", "'expert'")
    assert "WWW-Authenticate" not in response.headers
    assert client.get("/v1/projects/p9", headers=auth("admin")).status_code == 404


def test_platform_token_may_not_declare_an_expert(client, auth):
    """A platform token on PUT /v1/experts is a 403; nothing is stored."""
    response = client.put("/v1/experts/e5", json={"capacity": 2}, headers=auth("platform"))
    assert_problem(response, 403, "'admin'", "'platform'")
    assert client.get("/v1/experts/e5", headers=auth("admin")).status_code == 404


def test_expert_token_may_not_use_platform_routes(client, auth):
    """An expert token may not list projects or push items (platform routes)."""
    make_project(client, auth)
    assert_problem(client.get("/v1/projects", headers=auth("expert")), 403, "'platform'")
    response = client.post("/v1/projects/p1/items", json={"items": make_items(1)},
                           headers=auth("expert"))
    assert_problem(response, 403, "'platform'")


def test_auth_runs_before_validation_and_lookup(client):
    """Without a token, a bad body or an unknown project still answers 401, revealing nothing."""
    assert_unauthenticated(client.post("/v1/projects/nope/items", data="{"))
    assert_unauthenticated(client.get("/v1/projects/nope"))


def test_valid_tokens_pass(client, auth):
    """Each role's token reaches the routes of its role."""
    assert client.post("/v1/projects", json=PROJECT, headers=auth("admin")).status_code == 201
    assert client.get("/v1/projects", headers=auth("platform")).status_code == 200
    make_expert(client, auth, "e1")
    assert client.get("/v1/experts/e1", headers=auth("expert")).status_code == 200


def test_admin_may_do_what_platform_may(client, auth):
    """Roles nest: an admin token pushes items, leases and labels like a platform token."""
    make_project(client, auth)
    assert post_items(client, auth, make_items(2)).status_code == 200
    response = client.post("/v1/projects/p1/items", json={"items": make_items(2, seed=1)},
                           headers=auth("admin"))
    assert response.status_code == 200 and response.json["updated"] == 2
    make_expert(client, auth, "e2")
    task = client.post("/v1/projects/p1/tasks/next", json={"expert_id": "e2"},
                       headers=auth("admin")).json["task"]
    response = client.post(f"/v1/tasks/{task['id']}/label", json={"label": "pos"},
                           headers=auth("admin"))
    assert response.status_code == 201
    assert client.get("/v1/projects/p1/stats", headers=auth("admin")).status_code == 200


def test_expert_token_may_omit_expert_id(client, auth):
    """An expert token's next task is leased to its own expert without naming it."""
    make_project(client, auth)
    post_items(client, auth, make_items(2))
    make_expert(client, auth, "e1")
    response = client.post("/v1/projects/p1/tasks/next", headers=auth("expert"))
    assert response.status_code == 200, response.json
    assert response.json["task"]["id"]
    expert = client.get("/v1/experts/e1", headers=auth("expert")).json
    assert expert["open_leases"] == 1
    named = client.post("/v1/projects/p1/tasks/next", json={"expert_id": "e1"},
                        headers=auth("expert"))
    assert named.status_code == 200


def test_platform_token_must_name_the_expert(client, auth):
    """A platform token without expert_id cannot be guessed to act for anyone: a problem."""
    make_project(client, auth)
    response = client.post("/v1/projects/p1/tasks/next", json={}, headers=auth("platform"))
    problem = assert_problem(response, 422, "expert_id", "is required")
    assert problem["errors"][0]["field"] == "expert_id"


def test_expert_token_may_not_act_for_another_expert(client, auth):
    """An expert token naming another expert (next task, or reading it) is a 403."""
    make_project(client, auth)
    post_items(client, auth, make_items(2))
    make_expert(client, auth, "e1")
    make_expert(client, auth, "e2")
    response = client.post("/v1/projects/p1/tasks/next", json={"expert_id": "e2"},
                           headers=auth("expert"))
    assert_problem(response, 403, "'e1'")
    assert_problem(client.get("/v1/experts/e2", headers=auth("expert")), 403, "'e1'")
    stats = client.get("/v1/projects/p1/stats", headers=auth("platform")).json
    assert stats["open_leases"] == 0


def test_expert_token_may_not_touch_another_experts_task(client, auth):
    """Labeling, extending or releasing a task leased to another expert is a 403; it stays open."""
    make_project(client, auth)
    post_items(client, auth, make_items(2))
    make_expert(client, auth, "e1")
    make_expert(client, auth, "e2")
    task = client.post("/v1/projects/p1/tasks/next", json={"expert_id": "e2"},
                       headers=auth("platform")).json["task"]
    for action, body in (("label", {"label": "pos"}), ("extend", None), ("release", None)):
        response = client.post(f"/v1/tasks/{task['id']}/{action}", json=body,
                               headers=auth("expert"))
        assert_problem(response, 403, "'e1'")
    export = client.get("/v1/projects/p1/labels", headers=auth("platform")).json
    assert export["labels"] == []
    own = client.post(f"/v1/tasks/{task['id']}/label", json={"label": "pos"},
                      headers=auth("platform"))
    assert own.status_code == 201


def test_expert_token_labels_its_own_task(client, auth):
    """An expert token labels, extends and releases the tasks leased to its own expert."""
    make_project(client, auth)
    post_items(client, auth, make_items(2))
    make_expert(client, auth, "e1")
    first = client.post("/v1/projects/p1/tasks/next", headers=auth("expert")).json["task"]
    second = client.post("/v1/projects/p1/tasks/next", headers=auth("expert")).json["task"]
    assert client.post(f"/v1/tasks/{first['id']}/extend", headers=auth("expert")).status_code \
        == 200
    response = client.post(f"/v1/tasks/{first['id']}/label", json={"label": "neg"},
                           headers=auth("expert"))
    assert response.status_code == 201 and response.json["expert_id"] == "e1"
    released = client.post(f"/v1/tasks/{second['id']}/release", headers=auth("expert"))
    assert released.status_code == 200 and released.json["task"]["state"] == "released"


def test_admin_token_from_settings_is_admin(settings, r):
    """TASKRANK_ADMIN_TOKEN (Settings.admin_token) is accepted as an admin bearer token."""
    client = create_app(settings.replace(admin_token="s3cret-admin")).test_client()
    headers = {"Authorization": "Bearer s3cret-admin"}
    assert client.post("/v1/projects", json=PROJECT, headers=headers).status_code == 201
    assert client.put("/v1/experts/e1", json={}, headers=headers).status_code == 201
    assert client.get("/v1/projects", headers=headers).status_code == 200
    wrong = client.get("/v1/projects", headers={"Authorization": "Bearer s3cret-admin2"})
    assert_unauthenticated(wrong, "unknown token")


def test_without_admin_token_setting_nothing_is_admin_by_default(client):
    """With no admin_token set, an empty or guessed token is never accepted."""
    for token in ("None", "null", "admin"):
        response = client.get("/v1/projects", headers={"Authorization": f"Bearer {token}"})
        assert_unauthenticated(response)


def test_health_and_openapi_need_no_token(client):
    """The probes and the API document are public."""
    for path in ("/healthz", "/readyz", "/openapi.json"):
        assert client.get(path).status_code == 200, path
