"""The WSGI fast path of tasks/next and label answers exactly as the Flask views do."""

from __future__ import annotations

import json

import pytest
import redis
from flask import request

from taskrank.queue import keys as K
from taskrank.queue import tasks as queue_tasks
from taskrank.server import create_app
from taskrank.server.hot import HotPath, HotRoute
from taskrank.server.tasks import HOT_ROUTES
from tests.server.helpers import (
    make_expert,
    make_items,
    make_project,
    next_task,
    post_items,
)

VOLATILE = {"id", "task_id", "expires_at", "instance"}  # random or time-dependent values


def _normal(response) -> tuple:
    body = response.get_data()
    document = json.loads(body) if body else None
    if isinstance(document, dict):
        document = {key: ("*" if key in VOLATILE else value) for key, value in document.items()}
        if isinstance(document.get("task"), dict):
            document["task"] = {key: ("*" if key in VOLATILE else value)
                                for key, value in document["task"].items()}
        if isinstance(document.get("tasks"), list):
            document["tasks"] = [{key: ("*" if key in VOLATILE else value)
                                  for key, value in task.items()}
                                 for task in document["tasks"]]
    media = (response.headers.get("Content-Type"), response.headers.get("Content-Length"))
    return response.status_code, media, document


def _scenario(client, auth) -> list[tuple]:
    """Every kind of answer of the two routes, successes and refusals, in order."""
    make_project(client, auth)
    make_project(client, auth, pid="empty")
    make_expert(client, auth, "e1")
    make_expert(client, auth, "e2")
    assert post_items(client, auth, make_items(6)).status_code == 200
    platform = auth("platform")
    expert = auth("expert")  # acts for e1
    answers = []

    def post(path, headers=platform, **kwargs):
        response = client.post(path, headers=headers, **kwargs)
        answers.append((path.rsplit("/", 1)[-1], *_normal(response)))
        return response

    first = post("/v1/projects/p1/tasks/next", json={"expert_id": "e2"}).json["task"]
    second = post("/v1/projects/p1/tasks/next", headers=expert, json={}).json["task"]
    third = post("/v1/projects/p1/tasks/next", json={"expert_id": "e2"}).json["task"]
    post("/v1/projects/empty/tasks/next", json={"expert_id": "e1"})  # 204
    post(f"/v1/tasks/{first['id']}/label", json={"label": "pos", "seconds_spent": 3})
    post(f"/v1/tasks/{first['id']}/label", json={"label": "pos"})  # 409 already labeled
    keyed = {**expert, "Idempotency-Key": "k1"}
    post(f"/v1/tasks/{second['id']}/label", headers=keyed, json={"label": "neg"})
    post(f"/v1/tasks/{second['id']}/label", headers=keyed, json={"label": "neg"})  # replay
    post(f"/v1/tasks/{second['id']}/label", headers=keyed, json={"label": "pos"})  # 422
    client.post(f"/v1/tasks/{third['id']}/release", headers=platform)
    post(f"/v1/tasks/{third['id']}/label", json={"label": "pos"})  # 409 late, recorded once
    refusals = [
        ({}, {"json": {"expert_id": "e1"}}),
        ({"Authorization": "Bearer nope"}, {"json": {"expert_id": "e1"}}),
        ({"Authorization": "Basic abc"}, {"json": {"expert_id": "e1"}}),
        (platform, {"data": b"{", "content_type": "application/json"}),
        (platform, {"data": b'{"expert_id": NaN}', "content_type": "application/json"}),
        (platform, {"data": b"[1]", "content_type": "application/json"}),
        (platform, {"data": b"[" * 4000, "content_type": "application/json"}),
        (platform, {"data": b'{"expert_id": "e1"}', "content_type": "text/plain"}),
        (platform, {"json": {"expert_id": "e1", "x": 1}}),
        (platform, {"json": {"expert_id": "e1", "n": 0}}),
        (platform, {"json": {}}),
        (platform, {"json": {"expert_id": "nobody"}}),
        (platform, {"json": {"expert_id": "bad id"}}),
        (expert, {"json": {"expert_id": "e2"}}),
    ]
    for headers, kwargs in refusals:
        post("/v1/projects/p1/tasks/next", headers=headers, **kwargs)
    post("/v1/projects/nope/tasks/next", json={"expert_id": "e1"})
    fourth = post("/v1/projects/p1/tasks/next", json={"expert_id": "e1"}).json["task"]
    for headers, body in [(platform, {"label": "maybe"}), (platform, {"seconds_spent": 1}),
                          (platform, {"label": "pos", "seconds_spent": -1}),
                          ({**platform, "Idempotency-Key": "x" * 201}, {"label": "pos"})]:
        post(f"/v1/tasks/{fourth['id']}/label", headers=headers, json=body)
    post("/v1/tasks/nothing.p1/label", json={"label": "pos"})
    post("/v1/tasks/nothing.zz/label", json={"label": "pos"})
    post(f"/v1/tasks/{fourth['id']}/label", json={"label": "pos", "comment": "ok",
                                                    "answer": {"fixed": [1, 2]}})
    several = post("/v1/projects/p1/tasks/next", json={"expert_id": "e2", "n": 6})
    assert several.status_code == 200 and len(several.json["tasks"]) < 6  # what e2 may get
    assert several.headers["Taskrank-Reason"] == "nothing_eligible"
    return answers


def _answers(settings, r, auth, fast: bool) -> list[tuple]:
    """The scenario's answers from an app with or without the fast path, on a database
    holding only the test's tokens (as the test began)."""
    app = create_app(settings.replace(fast_path=fast))
    assert isinstance(app.wsgi_app, HotPath) is fast
    answers = _scenario(app.test_client(), auth)
    late = [entry for _, entry in r.xrange(K.labels_stream_key("p1"))
            if entry["counted"] == "0"]
    assert len(late) == 1  # the late label was written once, not again by the hand-over
    app.extensions["taskrank.metrics"].flush()
    # Only the API's routes: an app of an earlier test may still flush its counts of
    # /healthz, /readyz or an unmatched URL into the shared Redis meanwhile.
    counts = {field.rsplit("\t", 1)[0]: int(count)
              for field, count in r.hgetall(K.metrics_http_key()).items()
              if field.endswith("\tn") and "\t/v1/" in field}
    return answers, counts


def _restart(r) -> None:
    """Back to a database with only the tokens (all hashes) it held before the scenario."""
    tokens = {key: r.hgetall(key) for key in r.scan_iter(match=K.token_key("*"))}
    r.flushdb()
    for key, fields in tokens.items():
        r.hset(key, mapping=fields)


def test_fast_path_answers_as_the_views_do(settings, r, auth, tokens):
    """The same requests get the same status, media type and body with and without the
    fast path, and count in the same request metrics (route label and status)."""
    slow, slow_counts = _answers(settings, r, auth, fast=False)
    _restart(r)
    fast, fast_counts = _answers(settings, r, auth, fast=True)
    assert {status for _, status, _, _ in fast} == {
        200, 201, 204, 400, 401, 403, 404, 409, 415, 422}
    assert fast == slow
    assert any("/tasks/next" in series for series in fast_counts)
    assert fast_counts == slow_counts


def test_fast_path_serves_successes_without_flask(settings, r, auth, tokens):
    """Successful next and label requests never reach Flask's request machinery; the
    refusals and the 409 do."""
    app = create_app(settings)
    flask_saw = []
    app.before_request(lambda: flask_saw.append(request.path.rsplit("/", 1)[-1]))
    answers = _scenario(app.test_client(), auth)
    assert [status for (_, status, _, _) in answers if status in (200, 201, 204)]
    routes_seen = [route for route in flask_saw if route in ("next", "label")]
    refused = [entry for entry in answers if entry[1] not in (200, 201, 204)]
    assert len(routes_seen) == len(refused)  # only the others reached Flask


def test_a_hot_route_is_declared_once_for_both_adapters(app):
    """Each hot route's rule, role and endpoint are what the Flask app registered; the
    WSGI layer's pattern and metrics label come from the same rule."""
    rules = {rule.endpoint: rule for rule in app.url_map.iter_rules()}
    for route in HOT_ROUTES:
        flask_rule = rules[f"tasks.{route.endpoint}"]
        assert flask_rule.rule == route.rule and flask_rule.methods >= {"POST"}
        assert app.view_functions[flask_rule.endpoint].required_role == route.role
    label = HotRoute("/v1/tasks/<tid>/label", "post_label", "expert", lambda *args: None)
    assert label.pattern.fullmatch("/v1/tasks/a.b/label").groupdict() == {"tid": "a.b"}
    assert not label.pattern.fullmatch("/v1/tasks/a/b/label")
    assert not label.pattern.fullmatch("/v1/tasksXa/label")
    assert label.metrics_route == "/v1/tasks/{tid}/label"
    with pytest.raises(ValueError, match="only <name>"):
        _ = HotRoute("/v1/x/<int:n>", "x", "expert", lambda *args: None).pattern


@pytest.mark.parametrize("fast", [True, False])
def test_redis_down_is_a_503_problem_on_both_paths(settings, r, auth, tokens, monkeypatch,
                                                   fast):
    """Redis failing while a token is checked or while the claim writes: a 503 problem."""
    dead = create_app(settings.replace(redis_url="redis://127.0.0.1:1/0", fast_path=fast))
    response = dead.test_client().post("/v1/projects/p1/tasks/next", json={"expert_id": "e1"},
                                       headers=auth("platform"))
    assert response.status_code == 503 and response.mimetype == "application/problem+json"
    client = create_app(settings.replace(fast_path=fast)).test_client()
    make_project(client, auth)
    make_expert(client, auth, "e1")

    def unavailable(*args, **kwargs):
        raise redis.ConnectionError("gone")

    monkeypatch.setattr(queue_tasks, "lease_tasks", unavailable)
    response = next_task(client, auth, eid="e1")
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
