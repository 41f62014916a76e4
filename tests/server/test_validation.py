"""Request validation: every bad request is a problem document that says what to fix, and a
batch with bad items stores its good items and nothing of the bad ones."""

from __future__ import annotations

import io
import json

import pytest
from werkzeug.test import EnvironBuilder, TestResponse, run_wsgi_app

from taskrank.queue import keys as K
from taskrank.server import create_app
from tests.invariants import pooled
from tests.server.helpers import assert_problem, make_expert, make_items, make_project, post_items


def post_raw(client, auth, path, data, content_type="application/json", role="platform"):
    return client.post(path, data=data, content_type=content_type, headers=auth(role))


def item(iid, probs=(0.3, 0.7), **extra):
    return {"id": iid, "predictions": {"m1": list(probs)}, **extra}


def stored_ids(r, pid="p1"):
    return r.smembers(K.items_key(pid))


# --- bodies ------------------------------------------------------------------------------


def test_malformed_json_is_400(client, auth):
    """A body that does not parse is a 400 saying where it broke."""
    make_project(client, auth)
    response = post_raw(client, auth, "/v1/projects/p1/items", '{"items": [')
    assert_problem(response, 400, "not valid JSON", "line 1")


def test_invalid_utf8_is_400(client, auth):
    """Bytes that are not UTF-8 are a 400, not a 500."""
    make_project(client, auth)
    response = post_raw(client, auth, "/v1/projects/p1/items", b'{"items": "\xff"}')
    assert_problem(response, 400, "not valid JSON")


def test_non_json_content_type_is_415(client, auth, r):
    """A body sent as text/plain or a form is a 415 naming the content type to use."""
    make_project(client, auth)
    for content_type in ("text/plain", "application/x-www-form-urlencoded"):
        response = post_raw(client, auth, "/v1/projects/p1/items",
                            json.dumps({"items": [item("a")]}), content_type)
        assert_problem(response, 415, "application/json")
    assert stored_ids(r) == set()


def test_missing_body_is_a_problem(client, auth):
    """An empty JSON body and a JSON array are refused with the reason."""
    make_project(client, auth)
    assert_problem(post_raw(client, auth, "/v1/projects/p1/items", ""), 400, "not valid JSON")
    assert_problem(post_raw(client, auth, "/v1/projects/p1/items", "[1]"), 422,
                   "must be a JSON object")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_literals_are_refused(client, auth, r, literal):
    """NaN and Infinity (which Python's parser accepts) are not JSON: 400, nothing stored."""
    make_project(client, auth)
    body = '{"items": [{"id": "a", "predictions": {"m1": [LIT, 0.5]}}]}'.replace("LIT", literal)
    assert_problem(post_raw(client, auth, "/v1/projects/p1/items", body), 400, literal,
                   "finite")
    in_payload = ('{"items": [{"id": "b", "predictions": {"m1": [0.5, 0.5]}, '
                  '"payload": {"score": LIT}}]}').replace("LIT", literal)
    assert_problem(post_raw(client, auth, "/v1/projects/p1/items", in_payload), 400, literal)
    assert stored_ids(r) == set()


def test_nan_seconds_spent_is_refused(client, auth):
    """A NaN seconds_spent is refused before the label is recorded."""
    make_project(client, auth)
    post_items(client, auth, make_items(1))
    make_expert(client, auth)
    task = client.post("/v1/projects/p1/tasks/next", json={"expert_id": "e1"},
                       headers=auth("platform")).json["task"]
    response = post_raw(client, auth, f"/v1/tasks/{task['id']}/label",
                        '{"label": "pos", "seconds_spent": NaN}')
    assert_problem(response, 400, "NaN")
    export = client.get("/v1/projects/p1/labels", headers=auth("platform")).json
    assert export["labels"] == []


def test_oversize_body_is_413(settings, r, auth):
    """A body over max_body_bytes is a 413 naming the limit and its setting."""
    client = create_app(settings.replace(max_body_bytes=2000)).test_client()
    make_project(client, auth)
    body = {"items": [item("a", payload={"text": "x" * 3000})]}
    response = client.post("/v1/projects/p1/items", json=body, headers=auth("platform"))
    assert_problem(response, 413, "2000 bytes", "TASKRANK_MAX_BODY_BYTES")
    assert stored_ids(r) == set()


def test_oversize_chunked_body_is_413(settings, r, auth):
    """A chunked body (no Content-Length) over max_body_bytes is a 413 too, not a 400
    about the truncated JSON; one at the limit is read whole."""
    app = create_app(settings.replace(max_body_bytes=2000))
    client = app.test_client()
    make_project(client, auth)
    filler = 2000 - len(json.dumps({"items": [item("a", payload={"text": ""})]}))
    for size, status in ((filler + 1, 413), (filler, 200)):
        body = json.dumps({"items": [item("a", payload={"text": "x" * size})]}).encode()
        response = post_chunked(app, body, auth)
        if status == 413:
            assert_problem(response, 413, "2000 bytes", "TASKRANK_MAX_BODY_BYTES")
            assert stored_ids(r) == set()
        else:
            assert len(body) == 2000 and response.status_code == 200, response.json
    assert stored_ids(r) == {"a"}


def post_chunked(app, data: bytes, auth) -> TestResponse:
    """POST ``data`` as a chunked body (no Content-Length) as gunicorn passes one on: the
    server has dechunked the stream and ends it (``wsgi.input_terminated``)."""
    environ = EnvironBuilder(path="/v1/projects/p1/items", method="POST",
                             input_stream=io.BytesIO(data), content_type="application/json",
                             headers={**auth("platform"), "Transfer-Encoding": "chunked"}
                             ).get_environ()
    del environ["CONTENT_LENGTH"]
    environ["wsgi.input_terminated"] = True
    body, status, headers = run_wsgi_app(app, environ, buffered=True)
    return TestResponse(body, status, headers, request=None)


def test_oversize_batch_is_413(settings, r, auth):
    """More items than max_batch_items is a 413 naming the limit; nothing is stored."""
    client = create_app(settings.replace(max_batch_items=5)).test_client()
    make_project(client, auth)
    response = post_items(client, auth, make_items(6))
    assert_problem(response, 413, "at most 5", "TASKRANK_MAX_BATCH_ITEMS")
    assert stored_ids(r) == set()
    assert post_items(client, auth, make_items(5)).json["created"] == 5


@pytest.mark.parametrize(("body", "field"), [
    ({"items": {"id": "a"}}, "items"),
    ({"items": []}, "items"),
    ({"items": "a"}, "items"),
    ({}, "items"),
    ({"items": [], "extra": 1}, "extra"),
])
def test_bad_batch_shape_is_422(client, auth, body, field):
    """A batch whose shape is wrong (type, empty, missing or unknown field) names the field."""
    make_project(client, auth)
    response = client.post("/v1/projects/p1/items", json=body, headers=auth("platform"))
    problem = assert_problem(response, 422, field)
    assert problem["errors"][0]["field"] == field


def test_unknown_project_is_404(client, auth):
    """Items pushed to a project that does not exist: 404 saying how to create it."""
    assert_problem(post_items(client, auth, [item("a")], pid="nope"), 404, "nope",
                   "POST /v1/projects")


# --- items: per-item rejections -------------------------------------------------------------

BAD_ITEMS = [
    (item("neg", (-0.1, 1.1)), "non-negative"),
    (item("sum", (0.3, 0.71)), "sum to 1"),
    (item("long", (0.2, 0.3, 0.5)), "list of 2 probabilities"),
    (item("short", (1.0,)), "list of 2 probabilities"),
    (item("strs", ("0.5", "0.5")), "numbers only"),
    (item("bools", (True, False)), "numbers only"),
    ({"id": "notdict", "predictions": [0.5, 0.5]}, "predictions must be an object"),
    ({"id": "none"}, "needs predictions or features"),
    (item("unknown", colour="red"), "unknown field 'colour'"),
    (item("bad id!"), "id must be 1-128 characters"),
    (item("x" * 129), "id must be 1-128 characters"),
    ({"id": 17, "predictions": {"m1": [0.5, 0.5]}}, "id must be 1-128 characters"),
    (item("skills", skills="cardio"), "skills must be a list"),
    (item("tag", skills=["a b"]), "skill tag"),
    (item("boost", boost="high"), "boost must be a number from"),
    (item("hugeboost", boost=1.7e308), "boost must be a number from"),
    (item("hugefeat", features=[1e300, 0.0]), "features must be numbers from"),
    (item("gold", gold="maybe"), "gold must be one of"),
    (item("feat", features=[]), "features must be a non-empty list"),
    ({"id": "modelname", "predictions": {"m 1": [0.5, 0.5]}}, "model name"),
    ("a string", "must be a JSON object"),
]


def test_bad_items_are_rejected_one_by_one(client, auth, r):
    """Each bad item gets a rejection (index, id, what to fix); the good ones are stored."""
    make_project(client, auth)
    bad = BAD_ITEMS
    batch = [item("good0")]
    for raw, _ in bad:
        batch += [raw, item(f"good{len(batch)}")]
    response = post_items(client, auth, batch)
    assert response.status_code == 200, response.json
    assert response.json["created"] == len(bad) + 1 and response.json["updated"] == 0
    rejected = response.json["rejected"]
    assert [entry["index"] for entry in rejected] == list(range(1, 2 * len(bad), 2))
    for entry, (raw, words) in zip(rejected, bad, strict=True):
        expected_id = raw.get("id") if isinstance(raw, dict) else None
        assert entry["id"] == (expected_id if isinstance(expected_id, str) else None)
        assert words in entry["detail"], (words, entry["detail"])
    good = {raw["id"] for raw in batch if isinstance(raw, dict)
            and str(raw.get("id")).startswith("good")}
    assert stored_ids(r) == good
    assert set(pooled(r, "p1")) == good


def test_every_item_bad_is_422_with_rejections(client, auth, r):
    """A batch with no storable item is a 422 problem carrying every rejection."""
    make_project(client, auth)
    response = post_items(client, auth, [item("a", (0.2, 0.2)), item("b c")])
    body = assert_problem(response, 422, "none of the 2 items")
    assert [(x["index"], x["id"]) for x in body["rejected"]] == [(0, "a"), (1, "b c")]
    assert "sum to 1" in body["rejected"][0]["detail"]
    assert stored_ids(r) == set() and not pooled(r, "p1")


def test_sum_tolerance(client, auth, r):
    """Sums within 1e-3 of 1 are renormalised (±1e-4 is stored summing to 1); beyond, rejected."""
    make_project(client, auth)
    batch = [item("hi", (0.50005, 0.50005)), item("lo", (0.49995, 0.49995)),
             item("edge", (0.5, 0.5009)), item("over", (0.5, 0.5011)),
             item("under", (0.4989, 0.5))]
    response = post_items(client, auth, batch)
    assert response.json["created"] == 3
    assert sorted(x["id"] for x in response.json["rejected"]) == ["over", "under"]
    assert "sums to 1.0011" in next(x["detail"] for x in response.json["rejected"]
                                    if x["id"] == "over")
    for iid in ("hi", "lo", "edge"):
        stored = json.loads(r.hget(K.item_key("p1", iid), "p"))["m1"]
        assert sum(stored) == pytest.approx(1.0, abs=1e-12)
    assert json.loads(r.hget(K.item_key("p1", "hi"), "p"))["m1"] == [0.5, 0.5]


def test_duplicate_ids_in_a_batch(client, auth, r):
    """The first of duplicate ids is stored; each later one is rejected pointing at it."""
    make_project(client, auth)
    batch = [item("a", (0.9, 0.1)), item("b"), item("a", (0.1, 0.9)), item("a")]
    response = post_items(client, auth, batch)
    assert response.json["created"] == 2
    assert [(x["index"], x["id"]) for x in response.json["rejected"]] == [(2, "a"), (3, "a")]
    assert all("first at index 0" in x["detail"] for x in response.json["rejected"])
    assert json.loads(r.hget(K.item_key("p1", "a"), "p"))["m1"] == [0.9, 0.1]


def test_features_length_is_fixed_per_project(client, auth, r):
    """An item whose features differ in length from the project's is rejected, others kept."""
    make_project(client, auth)
    first = post_items(client, auth, [{"id": "f1", "features": [1.0, 2.0, 3.0]}])
    assert first.json["created"] == 1
    response = post_items(client, auth, [{"id": "f2", "features": [1.0, 2.0]},
                                         {"id": "f3", "features": [0.0, 1.0, 2.0]}])
    assert response.json["created"] == 1
    assert "must have 3 values" in response.json["rejected"][0]["detail"]
    assert stored_ids(r) == {"f1", "f3"}


# --- projects ------------------------------------------------------------------------------


def post_project(client, auth, body):
    return client.post("/v1/projects", json=body, headers=auth("admin"))


def test_unknown_strategy_key_is_422_naming_it(client, auth, r):
    """A strategy key that does not exist (top level or nested) is a 422 naming its path."""
    for strategy, name in (({"uncertanity": "margin"}, "uncertanity"),
                           ({"weights": {"density": 0.1, "novelty": 1}}, "weights.novelty")):
        body = {"id": "p1", "labels": ["a", "b"], "strategy": strategy}
        problem = assert_problem(post_project(client, auth, body), 422, f"'{name}'")
        assert problem["errors"][0]["field"] == "strategy"
    assert r.smembers(K.projects_key()) == set()


@pytest.mark.parametrize(("strategy", "words"), [
    ({"uncertainty": "random"}, "unknown uncertainty 'random'"),
    ({"weights": {"uncertainty": -1}}, "weights.uncertainty"),
    ({"weights": {"uncertainty": 0, "disagreement": 0}}, "all 0"),
    ({"committee": {"members": 0}}, "committee.members"),
    ({"retrain": "often"}, "must be an object"),
    ("margin", "must be a JSON object"),
])
def test_bad_strategy_values_are_422(client, auth, strategy, words):
    """A strategy value of the wrong type or range is a 422 that says what is allowed."""
    body = {"id": "p1", "labels": ["a", "b"], "strategy": strategy}
    assert_problem(post_project(client, auth, body), 422, words)


@pytest.mark.parametrize(("extra", "field", "words"), [
    ({"labels": ["only"]}, "labels", "2 to"),
    ({"labels": "a,b"}, "labels", "list"),
    ({"labels": ["a", "a"]}, "labels", "distinct"),
    ({"labels": ["a", ""]}, "labels[1]", "non-empty string"),
    ({"labels": ["a", 2]}, "labels[1]", "non-empty string"),
    ({"redundancy": 0}, "redundancy", "from 1 to 50"),
    ({"redundancy": 51}, "redundancy", "from 1 to 50"),
    ({"redundancy": "2"}, "redundancy", "integer"),
    ({"redundancy": True}, "redundancy", "integer"),
    ({"lease_seconds": 5}, "lease_seconds", "from 10"),
    ({"id": "bad id"}, "id", "1-128 characters"),
    ({"owner": "me"}, "owner", "unknown field"),
])
def test_bad_project_fields_are_422(client, auth, r, extra, field, words):
    """Each bad project field is a 422 whose errors name the field and say what is allowed."""
    body = {"id": "p1", "labels": ["a", "b"], **extra}
    problem = assert_problem(post_project(client, auth, body), 422, words)
    assert problem["errors"] == [{"field": field, "detail": problem["errors"][0]["detail"]}]
    assert r.smembers(K.projects_key()) == set()


def test_project_requires_id_and_labels(client, auth):
    """A project without id or labels is a 422 naming the missing field."""
    assert_problem(post_project(client, auth, {"labels": ["a", "b"]}), 422, "id: is required")
    assert_problem(post_project(client, auth, {"id": "p1"}), 422, "labels: is required")


def test_duplicate_project_is_409(client, auth):
    """Creating a project twice is a 409 that says to PATCH instead; the first is unchanged."""
    make_project(client, auth, redundancy=2)
    response = post_project(client, auth, {"id": "p1", "labels": ["x", "y", "z"]})
    assert_problem(response, 409, "PATCH")
    project = client.get("/v1/projects/p1", headers=auth("platform")).json
    assert project["labels"] == ["neg", "pos"] and project["redundancy"] == 2


def test_patch_refuses_immutable_and_bad_fields(client, auth):
    """PATCH may change redundancy, lease_seconds and strategy only, with the same checks."""
    make_project(client, auth)
    patch = lambda body: client.patch("/v1/projects/p1", json=body,  # noqa: E731
                                      headers=auth("admin"))
    assert_problem(patch({"labels": ["a", "b", "c"]}), 422, "labels", "unknown field")
    assert_problem(patch({"strategy": {"bogus": 1}}), 422, "'bogus'")
    assert_problem(patch({"lease_seconds": 0}), 422, "lease_seconds")
    assert patch({"redundancy": 3}).json["redundancy"] == 3


# --- experts, tasks, labels ---------------------------------------------------------------


@pytest.mark.parametrize(("body", "words"), [
    ({"skills": {"cardio": 1.5}}, "skills.cardio"),
    ({"skills": ["cardio"]}, "skills: must be a JSON object"),
    ({"capacity": 0}, "capacity"),
    ({"capacity": "5"}, "capacity"),
    ({"cost_per_hour": 0}, "cost_per_hour"),
    ({"active": "yes"}, "active"),
    ({"name": "Dr Lee"}, "name: unknown field"),
])
def test_bad_expert_is_422(client, auth, body, words):
    """A bad expert declaration is a 422 naming the field; nothing is stored."""
    response = client.put("/v1/experts/e1", json=body, headers=auth("admin"))
    assert_problem(response, 422, words)
    assert client.get("/v1/experts/e1", headers=auth("admin")).status_code == 404


def test_bad_expert_id_is_422(client, auth):
    """An expert id outside [A-Za-z0-9._-]{1,128} is a 422."""
    response = client.put("/v1/experts/" + "e" * 129, json={}, headers=auth("admin"))
    assert_problem(response, 422, "expert id")


@pytest.fixture
def task(client, auth):
    make_project(client, auth)
    post_items(client, auth, make_items(3))
    make_expert(client, auth)
    return client.post("/v1/projects/p1/tasks/next", json={"expert_id": "e1"},
                       headers=auth("platform")).json["task"]


@pytest.mark.parametrize(("body", "words"), [
    ({"label": "maybe"}, "one of the project's labels"),
    ({"label": 1}, "one of the project's labels"),
    ({"label": ["pos"]}, "one of the project's labels"),
    ({}, "label: is required"),
    ({"label": "pos", "seconds_spent": -1}, "seconds_spent"),
    ({"label": "pos", "seconds_spent": "10"}, "seconds_spent"),
    ({"label": "pos", "note": "hm"}, "note: unknown field"),
])
def test_bad_label_is_422_and_leaves_the_lease_open(client, auth, task, body, words):
    """A label that is not one of the project's labels (or a bad field) is a 422; the lease
    stays open and can still be labeled."""
    response = client.post(f"/v1/tasks/{task['id']}/label", json=body,
                           headers=auth("platform"))
    assert_problem(response, 422, words)
    assert client.get("/v1/projects/p1/labels", headers=auth("platform")).json["labels"] == []
    ok = client.post(f"/v1/tasks/{task['id']}/label", json={"label": "pos"},
                     headers=auth("platform"))
    assert ok.status_code == 201


def test_bad_idempotency_key_is_400(client, auth, task):
    """An Idempotency-Key longer than 200 characters is refused."""
    response = client.post(f"/v1/tasks/{task['id']}/label", json={"label": "pos"},
                           headers={**auth("platform"), "Idempotency-Key": "k" * 201})
    assert_problem(response, 400, "Idempotency-Key")


@pytest.mark.parametrize(("tid", "status"), [
    ("nodot", 404), ("abc.nope", 404), ("abc.p1", 404), ("a b.p1", 422), ("abc.a b", 422)])
def test_unknown_task_is_404_or_422(client, auth, tid, status):
    """A task id that names no task (even of no project) is a 404 'no task', a malformed one
    a 422, never a 500."""
    make_project(client, auth)
    response = client.post(f"/v1/tasks/{tid}/label", json={"label": "pos"},
                           headers=auth("platform"))
    assert_problem(response, status, "no task" if status == 404 else "task id")


def test_long_project_id_tasks_can_be_labeled(client, auth):
    """A task of a project whose id is 128 characters long (task id > 128) can be labeled."""
    pid = "p" * 128
    make_project(client, auth, pid=pid)
    post_items(client, auth, make_items(2), pid=pid)
    make_expert(client, auth)
    task = client.post(f"/v1/projects/{pid}/tasks/next", json={"expert_id": "e1"},
                       headers=auth("platform")).json["task"]
    for action in ("extend", "label"):
        response = client.post(f"/v1/tasks/{task['id']}/{action}", json={"label": "pos"}
                               if action == "label" else None, headers=auth("platform"))
        assert response.status_code in (200, 201), response.json


@pytest.mark.parametrize(("query", "field"), [
    ("limit=0", "limit"), ("limit=abc", "limit"), ("limit=1001", "limit"),
    ("skill=a%20b", "skill"), ("colour=red", "colour"),
])
def test_bad_queue_query_is_422(client, auth, query, field):
    """Bad query parameters are 422 problems naming the parameter."""
    make_project(client, auth)
    response = client.get(f"/v1/projects/p1/queue?{query}", headers=auth("platform"))
    assert_problem(response, 422, field)


def test_bad_export_query_is_422(client, auth):
    """A non-boolean aggregated, a limit out of range or a parameter the export does not
    take (a typo would export every label) is a 422 naming the parameter."""
    make_project(client, auth)
    for query, field in (("aggregated=maybe", "aggregated"), ("limit=-1", "limit"),
                         ("aggregate=true", "aggregate")):
        response = client.get(f"/v1/projects/p1/labels?{query}", headers=auth("platform"))
        assert_problem(response, 422, field)


@pytest.mark.parametrize(("query", "form"), [
    ("cursor=99999999999999999999-0", "<milliseconds>-<sequence>"),  # beyond 64 bits: was a 500
    ("cursor=1-99999999999999999999", "two integers of 1 to 19 digits"),
    ("cursor=abc", "<milliseconds>-<sequence>"),
    ("cursor=1-2-3", "<milliseconds>-<sequence>"),
    ("aggregated=true&cursor=a%20b", "an item id"),
])
def test_a_cursor_of_another_form_is_400_naming_the_form(client, auth, query, form):
    """A cursor that no page handed out is a 400 problem that says what a cursor looks
    like (a label-log cursor beyond 64 bits used to reach Redis and answer 500)."""
    make_project(client, auth)
    response = client.get(f"/v1/projects/p1/labels?{query}", headers=auth("platform"))
    problem = assert_problem(response, 400, "cursor", form)
    assert problem["errors"][0]["field"] == "cursor"


def test_the_largest_cursors_of_the_stated_form_are_answered(client, auth):
    """The longest cursors of the documented form page on (to an empty page), no 500."""
    make_project(client, auth)
    for query in ("cursor=9999999999999999999-9999999999999999999", "cursor=0-0",
                  "aggregated=true&cursor=" + "z" * 128):
        response = client.get(f"/v1/projects/p1/labels?{query}", headers=auth("platform"))
        assert response.status_code == 200, response.json
        assert response.json == {"labels": [], "next_cursor": None}
