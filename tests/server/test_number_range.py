"""Numbers beyond the float range (1e400, a 400-digit integer): JSON readers take them for
Infinity, so no body may store one. Each is a 422 naming the field; in a batch only the
item holding it is rejected."""

from __future__ import annotations

import pytest

from taskrank.queue import keys as K
from taskrank.queue.validation import parse_json
from taskrank.server import create_app
from tests.server.helpers import assert_problem, make_expert, make_items, make_project, post_items

HUGE_INT = "1" + "0" * 400  # beyond the float range: float() of it overflows


def huge(text: str) -> str:
    return text.replace("HUGE", HUGE_INT)


def post_raw(client, headers, method, path, text):
    return client.open(path, method=method, data=text, content_type="application/json",
                       headers=headers)


@pytest.fixture(params=[True, False], ids=["fast path", "flask only"])
def served(request, settings, r, auth):
    """A project with items, an expert e1 holding one lease, through either server path."""
    client = create_app(settings.replace(fast_path=request.param)).test_client()
    make_project(client, auth)
    assert post_items(client, auth, make_items(3)).status_code == 200
    make_expert(client, auth)
    task = client.post("/v1/projects/p1/tasks/next", json={"expert_id": "e1"},
                       headers=auth("platform")).json["task"]
    return client, task


BODIES = [
    ("POST", "/v1/projects",
     '{"id": "p2", "labels": ["a", "b"], "strategy": {"weights": {"uncertainty": 1e400}}}',
     "strategy.weights.uncertainty"),
    ("POST", "/v1/projects", huge('{"id": "p2", "labels": ["a", "b"], "redundancy": HUGE}'),
     "redundancy"),
    ("PATCH", "/v1/projects/p1", '{"budget_usd": -1e400}', "budget_usd"),
    ("PATCH", "/v1/projects/p1", huge('{"lease_seconds": HUGE}'), "lease_seconds"),
    ("PUT", "/v1/experts/e2", '{"cost_per_hour": 1e400}', "cost_per_hour"),
    ("PUT", "/v1/experts/e2", '{"skills": {"cardio": 1e999}}', "skills.cardio"),
    ("POST", "/v1/projects/p1/tasks/next", '{"expert_id": "e1", "x": [0, 1e400]}', "x[1]"),
    ("POST", "/v1/tasks/{tid}/label", '{"label": "pos", "seconds_spent": 1e400}',
     "seconds_spent"),
    ("POST", "/v1/tasks/{tid}/label", huge('{"label": "pos", "seconds_spent": HUGE}'),
     "seconds_spent"),
]


@pytest.mark.parametrize(("method", "path", "text", "field"), BODIES,
                         ids=[f"{m} {p} {f}" for m, p, _, f in BODIES])
def test_a_number_beyond_the_float_range_is_422_naming_the_field(served, auth, r, method,
                                                                 path, text, field):
    """Any JSON body holding 1e400 or a 400-digit integer is a 422 problem naming the
    field (not stored as Infinity, not a 500), and nothing is written."""
    client, task = served
    before = {key: r.dump(key) for key in r.scan_iter() if "metrics" not in key}
    response = post_raw(client, auth("admin"), method, path.format(tid=task["id"]), text)
    problem = assert_problem(response, 422, field, "float range", "Infinity")
    assert problem["errors"][0]["field"] == field
    after = {key: r.dump(key) for key in r.scan_iter() if "metrics" not in key}
    assert after == before


def test_a_batch_stores_its_good_items_and_rejects_each_out_of_range_one(client, auth, r):
    """An item holding a number beyond the float range (payload, predictions, features,
    boost) is rejected on its own, naming where; the rest of its batch is stored, and
    what the API serves afterwards is strict JSON."""
    make_project(client, auth)
    good = '{"id": "GOOD", "predictions": {"m1": [0.5, 0.5]}, "payload": {"x": 1e308}}'
    bad = [
        ('{"id": "b0", "predictions": {"m1": [0.5, 0.5]}, "payload": {"x": 1e400}}',
         "payload.x"),
        ('{"id": "b1", "predictions": {"m1": [0.5, 0.5]}, "payload": {"a": [1, {"b": -1e400}]}}',
         "payload.a[1].b"),
        (huge('{"id": "b2", "predictions": {"m1": [0.5, 0.5]}, "payload": [HUGE]}'),
         "payload[0]"),
        ('{"id": "b3", "predictions": {"m1": [1e400, 0.5]}}', "predictions.m1"),
        (huge('{"id": "b4", "predictions": {"m1": [HUGE, 0.5]}}'), "predictions.m1"),
        ('{"id": "b5", "features": [1e400]}', "features"),
        ('{"id": "b6", "predictions": {"m1": [0.5, 0.5]}, "boost": -1e400}', "boost"),
    ]
    goods = {f"g{n}" for n in range(len(bad) + 1)}
    items = [good.replace("GOOD", "g0")]
    for n, (text, _) in enumerate(bad, start=1):
        items += [text, good.replace("GOOD", f"g{n}")]
    response = post_raw(client, auth("platform"), "POST", "/v1/projects/p1/items",
                        '{"items": [' + ", ".join(items) + "]}")
    assert response.status_code == 200, response.json
    assert response.json["created"] == len(bad) + 1
    rejected = response.json["rejected"]
    assert [entry["id"] for entry in rejected] == [f"b{n}" for n in range(len(bad))]
    for entry, (_, field) in zip(rejected, bad, strict=True):
        assert entry["detail"].startswith(field), entry["detail"]
    assert r.smembers(K.items_key("p1")) == goods
    for path in ("/v1/projects/p1/items/g0", "/v1/projects/p1/queue?limit=100"):
        parse_json(client.get(path, headers=auth("platform")).get_data())  # no Infinity


def test_a_batch_of_one_such_item_is_422_naming_the_field(client, auth, r):
    """When the only item of a batch holds 1e400, the 422's detail names the field."""
    make_project(client, auth)
    response = post_raw(client, auth("platform"), "POST", "/v1/projects/p1/items",
                        '{"items": [{"id": "a", "predictions": {"m1": [0.5, 0.5]}, '
                        '"payload": {"score": 1e400}}]}')
    problem = assert_problem(response, 422, "items[0]: payload.score", "float range")
    assert [entry["id"] for entry in problem["rejected"]] == ["a"]
    assert r.smembers(K.items_key("p1")) == set()
