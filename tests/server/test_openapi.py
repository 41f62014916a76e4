"""The OpenAPI document matches the app: every route, its methods and role, request
schemas that refuse what the server refuses, and response schemas real answers satisfy."""

from __future__ import annotations

import json
import re

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_spec

from taskrank.learning.disagreement import DISAGREEMENT
from taskrank.learning.priority import DEFAULT_STRATEGY_DICT
from taskrank.learning.ranker import MODELS
from taskrank.learning.uncertainty import UNCERTAINTY
from taskrank.server import create_app
from tests.server.helpers import make_expert, make_items, make_project, next_task, post_items

IGNORED_METHODS = {"HEAD", "OPTIONS"}


@pytest.fixture
def document(client) -> dict:
    response = client.get("/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    return json.loads(response.get_data(as_text=True))


def app_routes(app) -> set[tuple[str, str]]:
    """(OpenAPI path, lower-case method) of every route the app registers."""
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        routes |= {(path, method.lower()) for method in rule.methods - IGNORED_METHODS}
    return routes


def documented(document: dict) -> set[tuple[str, str]]:
    return {(path, method) for path, item in document["paths"].items() for method in item}


def test_document_is_valid_openapi_3_1(document):
    """The document is JSON, declares OpenAPI 3.1.0 and passes openapi-spec-validator."""
    assert document["openapi"] == "3.1.0"
    validate_spec(document)


def test_every_route_is_documented_and_nothing_else(app, document):
    """Each registered route (but /static) is documented with its methods, and each
    documented operation exists in the app."""
    routes, docs = app_routes(app), documented(document)
    assert routes - docs == set(), "routes missing from the document"
    assert docs - routes == set(), "documented operations the app does not serve"


def test_every_route_needs_the_documented_role(app, document):
    """x-required-role (and the description and security) equals the view's required role."""
    adapter = app.url_map.bind("localhost")
    for path, method in documented(document):
        operation = document["paths"][path][method]
        concrete = re.sub(r"{[^}]+}", "x", path)
        endpoint, _ = adapter.match(concrete, method=method.upper())
        role = getattr(app.view_functions[endpoint], "required_role", None)
        assert operation.get("x-required-role") == role, (path, method)
        if role:
            assert f"`{role}`" in operation["description"]
            assert {"bearer": []} in operation["security"]
            assert "401" in operation["responses"] and "403" in operation["responses"]
        else:
            assert operation["security"] == []


def test_json_errors_are_problem_documents(document):
    """Every documented JSON-API error response is application/problem+json."""
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                is_error = status == "default" or int(status) >= 400
                if is_error and "text/html" not in response.get("content", {}):
                    assert list(response["content"]) == ["application/problem+json"], (
                        path, method, status)


def test_request_schemas_are_closed_where_the_server_refuses_unknown_fields(document):
    """Every JSON request body schema refuses unknown fields (as the server does), but
    Label Studio's (/ls/), which carry more than taskrank reads."""
    schemas = document["components"]["schemas"]
    bodies = [operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
              for path, item in document["paths"].items() for operation in item.values()
              if "application/json" in operation.get("requestBody", {}).get("content", {})
              and not path.startswith("/ls/")]
    assert len(bodies) == 8
    for name in [ref.rsplit("/", 1)[1] for ref in bodies] + ["Item", "StrategyPatch",
                                                             "LabelRecord"]:
        assert schemas[name]["additionalProperties"] is False, name


def test_strategy_schema_matches_the_strategy_defaults(document):
    """The strategy schema has exactly the keys of the default strategy, and its names are
    the registries' names."""
    schema = document["components"]["schemas"]["Strategy"]
    assert set(schema["properties"]) == set(DEFAULT_STRATEGY_DICT)
    for section, defaults in DEFAULT_STRATEGY_DICT.items():
        if isinstance(defaults, dict):
            assert set(schema["properties"][section]["properties"]) == set(defaults), section
    props = schema["properties"]
    assert set(props["uncertainty"]["enum"]) == set(UNCERTAINTY)
    assert set(props["disagreement"]["enum"]) == set(DISAGREEMENT)
    assert set(props["committee"]["properties"]["model"]["enum"]) == set(MODELS)


def test_batch_limit_follows_the_settings(settings, r):
    """The documented maximum batch size is the configured one."""
    client = create_app(settings.replace(max_batch_items=7)).test_client()
    schemas = client.get("/openapi.json").json["components"]["schemas"]
    assert schemas["ItemBatch"]["properties"]["items"]["maxItems"] == 7


def schema_of(document: dict, schema: dict) -> Draft202012Validator:
    return Draft202012Validator({**schema, "components": document["components"]})


def export_parameter(document: dict) -> dict:
    parameters = document["paths"]["/v1/projects/{pid}/labels"]["get"]["parameters"]
    return next(p for p in parameters if p["name"] == "export")


# (schema, value, valid per the document): each rule the server enforces beyond a field's
# type, as the document states it; the server agrees (test below).
STATED = [
    ("StrategyPatch", {"weights": {"uncertainty": 0}}, False),
    ("StrategyPatch", {"weights": {"uncertainty": 0, "density": 0.0}}, False),
    ("StrategyPatch", {"weights": {"uncertainty": 0, "disagreement": 2}}, True),
    ("StrategyPatch", {"weights": {"density": 0}}, True),  # uncertainty keeps its default 1
    ("StrategyPatch", {}, True),
    ("NextTaskRequest", {}, False),
    ("NextTaskRequest", {"expert_id": "e1"}, True),
    ("LabelRequest", {"label": ""}, False),
    ("export", {"cursor": "99999999999999999999-0"}, False),
    ("export", {"cursor": "abc"}, False),
    ("export", {"cursor": "9999999999999999999-0"}, True),
    ("export", {"cursor": ""}, True),
    ("export", {"aggregated": "false", "cursor": "1-0"}, True),
    ("export", {"aggregated": "True", "cursor": "abc"}, True),
    ("export", {"aggregated": "1", "cursor": "a b"}, False),
    ("export", {"aggregated": "maybe"}, False),
    ("export", {"aggregate": "true"}, False),
    ("Item", {"id": "a", "predictions": {}}, False),
    ("Item", {"id": "a", "predictions": None, "features": [1.0]}, True),
    ("Item", {"id": "a", "predictions": {"m": [0.5, 0.5]}, "gold": None}, True),
]


@pytest.mark.parametrize(("name", "value", "valid"), STATED,
                         ids=[f"{name} {json.dumps(value)}" for name, value, _ in STATED])
def test_the_document_states_the_rules_the_server_enforces(document, name, value, valid):
    """Strategy weights not all 0, expert_id required (but for an expert token), a label
    of 1-200 characters, the export's cursor forms and parameters, an item's predictions
    or features: the document says what the server checks."""
    schema = (export_parameter(document)["schema"] if name == "export"
              else {"$ref": f"#/components/schemas/{name}"})
    assert schema_of(document, schema).is_valid(value) is valid


def test_the_server_agrees_with_the_stated_rules(client, auth):
    """Each example above: the server refuses the invalid ones (400/422) and accepts the
    valid ones."""
    make_project(client, auth)
    assert post_items(client, auth, make_items(2)).status_code == 200
    make_expert(client, auth)
    admin = auth("admin")
    for name, value, valid in STATED:
        if name == "StrategyPatch":
            response = client.patch("/v1/projects/p1", json={"strategy": value}, headers=admin)
        elif name == "NextTaskRequest":
            response = client.post("/v1/projects/p1/tasks/next", json=value, headers=admin)
        elif name == "export":
            response = client.get("/v1/projects/p1/labels", query_string=value, headers=admin)
        elif name == "Item":
            response = client.post("/v1/projects/p1/items", json={"items": [value]},
                                   headers=admin)
        else:
            task = client.post("/v1/projects/p1/tasks/next", json={"expert_id": "e1"},
                               headers=admin).json["task"]
            response = client.post(f"/v1/tasks/{task['id']}/label", json=value, headers=admin)
        refused = response.status_code in (400, 422)
        assert refused is not valid, (name, value, response.status_code, response.json)


UNKNOWN_FIELD = [
    ("post", "/v1/projects", {"id": "p2", "labels": ["a", "b"], "colour": 1}, "admin"),
    ("patch", "/v1/projects/p1", {"colour": 1}, "admin"),
    ("post", "/v1/projects/p1/items", {"items": [], "colour": 1}, "platform"),
    ("put", "/v1/experts/e1", {"colour": 1}, "admin"),
    ("post", "/v1/projects/p1/tasks/next", {"expert_id": "e1", "colour": 1}, "platform"),
    ("post", "/v1/projects/p1/labels", {"labels": [], "colour": 1}, "platform"),
    ("post", "/v1/tasks/x.p1/label", {"label": "pos", "colour": 1}, "platform"),
    ("put", "/v1/projects/p1/webhooks/w", {"url": "https://x/", "events": ["item.finished"],
                                           "secret": "s" * 24, "colour": 1}, "platform"),
]


def test_server_refuses_unknown_fields_as_documented(client, auth):
    """Each closed request body is refused by the server with an unknown field (422)."""
    make_project(client, auth)
    for method, path, body, role in UNKNOWN_FIELD:
        response = getattr(client, method)(path, json=body, headers=auth(role))
        assert response.status_code == 422 and "colour" in response.json["detail"], path


class Checker:
    """Validates real responses against the document's schema for their status."""

    def __init__(self, document: dict) -> None:
        self.document = document
        self.seen: set[tuple[str, str, str]] = set()

    def __call__(self, path: str, method: str, response) -> object:
        operation = self.document["paths"][path][method]
        status = str(response.status_code)
        assert status in operation["responses"], (path, method, status)
        declared = operation["responses"][status]
        if response.status_code == 204:
            assert "content" not in declared and response.data == b""
            return None
        assert response.mimetype in declared["content"], (path, status, response.mimetype)
        schema = declared["content"][response.mimetype]["schema"]
        validator = Draft202012Validator({**schema, "components": self.document["components"]},
                                         format_checker=Draft202012Validator.FORMAT_CHECKER)
        errors = [f"{list(e.absolute_path)}: {e.message}"
                  for e in validator.iter_errors(response.json)]
        assert errors == [], (path, method, status, errors)
        self.seen.add((path, method, status))
        return response.json


def test_real_answers_match_the_response_schemas(client, auth, document, r):
    """A full session's answers (success and error) satisfy the documented schemas."""
    check = Checker(document)
    admin, platform = auth("admin"), auth("platform")
    check("/healthz", "get", client.get("/healthz"))
    check("/readyz", "get", client.get("/readyz"))
    body = {"id": "p1", "labels": ["neg", "pos"], "strategy": {"retrain": {"min_labels": 2}}}
    check("/v1/projects", "post", client.post("/v1/projects", json=body, headers=admin))
    check("/v1/projects", "post", client.post("/v1/projects", json=body, headers=admin))
    check("/v1/projects", "post", client.post("/v1/projects", json=body))
    check("/v1/projects", "get", client.get("/v1/projects", headers=platform))
    check("/v1/projects/{pid}", "patch", client.patch(
        "/v1/projects/p1", json={"strategy": {"uncertainty": "entropy"}}, headers=admin))
    check("/v1/projects/{pid}", "get", client.get("/v1/projects/p1", headers=platform))
    check("/v1/projects/{pid}", "get", client.get("/v1/projects/nope", headers=platform))
    items = make_items(6, skills=lambda i: ["cardio"] if i % 2 else [])
    items.append({"id": "bad", "predictions": {"m1": [0.2, 0.2]}})
    check("/v1/projects/{pid}/items", "post", post_items(client, auth, items))
    check("/v1/projects/{pid}/items", "post", post_items(client, auth, items[-1:]))
    check("/v1/projects/{pid}/queue", "get",
          client.get("/v1/projects/p1/queue?limit=3", headers=platform))
    check("/v1/experts/{eid}", "put", client.put(
        "/v1/experts/e1", json={"skills": {"cardio": 0.9}}, headers=admin))
    check("/v1/experts/{eid}", "put", client.put("/v1/experts/e1", json={}, headers=admin))
    make_expert(client, auth, "e2")
    check("/v1/experts/{eid}", "get", client.get("/v1/experts/e1", headers=auth("expert")))
    tasks = [check("/v1/projects/{pid}/tasks/next", "post", next_task(client, auth))["task"]
             for _ in range(3)]
    check("/v1/tasks/{tid}/extend", "post",
          client.post(f"/v1/tasks/{tasks[0]['id']}/extend", headers=platform))
    check("/v1/tasks/{tid}/label", "post", client.post(
        f"/v1/tasks/{tasks[0]['id']}/label", json={"label": "pos"}, headers=platform))
    check("/v1/tasks/{tid}/label", "post", client.post(
        f"/v1/tasks/{tasks[0]['id']}/label", json={"label": "pos"}, headers=platform))
    check("/v1/tasks/{tid}/label", "post", client.post(
        f"/v1/tasks/{tasks[1]['id']}/label", json={"label": "maybe"}, headers=platform))
    check("/v1/tasks/{tid}/label", "post", client.post(
        f"/v1/tasks/{tasks[1]['id']}/label", json={"label": "neg"}, headers=auth("expert")))
    check("/v1/tasks/{tid}/release", "post",
          client.post(f"/v1/tasks/{tasks[2]['id']}/release", headers=platform))
    check("/v1/tasks/{tid}/extend", "post",
          client.post(f"/v1/tasks/{tasks[2]['id']}/extend", headers=platform))
    check("/v1/tasks/{tid}/label", "post", client.post(
        f"/v1/tasks/{tasks[2]['id']}/label", json={"label": "neg"}, headers=platform))
    check("/v1/tasks/{tid}/label", "post", client.post(
        f"/v1/tasks/{tasks[1]['id']}/label", json={"label": "neg"}, headers=platform))
    while (response := next_task(client, auth, eid="e2")).status_code == 200:
        check("/v1/tasks/{tid}/label", "post", client.post(
            f"/v1/tasks/{response.json['task']['id']}/label", json={"label": "neg"},
            headers=platform))
    check("/v1/projects/{pid}/tasks/next", "post", response)
    for query in ("", "?aggregated=true", "?limit=1", "?cursor=x"):
        check("/v1/projects/{pid}/labels", "get",
              client.get(f"/v1/projects/p1/labels{query}", headers=platform))
    check("/v1/projects/{pid}/items/{iid}", "get",
          client.get(f"/v1/projects/p1/items/{tasks[0]['item_id']}", headers=platform))
    check("/v1/projects/{pid}/stats", "get", client.get("/v1/projects/p1/stats",
                                                         headers=platform))
    check("/v1/projects/{pid}/spend", "get", client.get("/v1/projects/p1/spend",
                                                         headers=platform))
    check("/v1/projects/{pid}", "patch", client.patch(
        "/v1/projects/p1", json={"budget_usd": 0.5}, headers=admin))
    check("/v1/projects/{pid}/spend", "get", client.get("/v1/projects/p1/spend",
                                                         headers=platform))
    check("/v1/projects/{pid}/model", "get", client.get("/v1/projects/p1/model",
                                                         headers=platform))
    job = check("/v1/projects/{pid}/retrain", "post",
                client.post("/v1/projects/p1/retrain", headers=platform))
    check("/v1/jobs/{jid}", "get", client.get(f"/v1/jobs/{job['job_id']}", headers=platform))
    check("/v1/jobs/{jid}", "get", client.get("/v1/jobs/nope", headers=platform))
    statuses = {status for _, _, status in check.seen}
    assert {"200", "201", "202", "401", "404", "409", "422"} <= statuses


def test_lifecycle_answers_match_the_response_schemas(client, auth, document, r):
    """Labels without a lease, withdrawal, several tasks a claim, open tasks and labels
    with a comment and an answer answer as documented (successes and errors)."""
    check = Checker(document)
    platform = auth("platform")
    make_project(client, auth)
    post_items(client, auth, make_items(8))
    make_expert(client, auth, "e1")
    records = [{"item_id": "i0", "label": "pos", "expert_id": "e1", "comment": "c",
                "answer": {"x": [1]}, "answered_at": "2025-01-31T12:00:00Z"},
               {"item_id": "i1", "label": "neg", "source": "s1"},
               {"item_id": "nope", "label": "neg", "source": "s2"}]
    check("/v1/projects/{pid}/labels", "post", client.post(
        "/v1/projects/p1/labels", json={"labels": records}, headers=platform))
    check("/v1/projects/{pid}/labels", "post", client.post(
        "/v1/projects/p1/labels", json={"labels": [{"item_id": "i2", "label": "maybe",
                                                    "source": "s3"}]}, headers=platform))
    tasks = check("/v1/projects/{pid}/tasks/next", "post", client.post(
        "/v1/projects/p1/tasks/next", json={"expert_id": "e1", "n": 3},
        headers=platform))["tasks"]
    check("/v1/projects/{pid}/tasks/next", "post", client.post(
        "/v1/projects/p1/tasks/next", json={"expert_id": "e1", "n": 0}, headers=platform))
    check("/v1/experts/{eid}/tasks", "get", client.get("/v1/experts/e1/tasks",
                                                       headers=auth("expert")))
    check("/v1/experts/{eid}/tasks", "get", client.get("/v1/experts/e2/tasks",
                                                       headers=auth("expert")))
    check("/v1/tasks/{tid}/label", "post", client.post(
        f"/v1/tasks/{tasks[0]['id']}/label", headers=platform,
        json={"label": "pos", "comment": "looks fine", "answer": [1, "two", None]}))
    check("/v1/projects/{pid}/items/{iid}", "delete", client.delete(
        f"/v1/projects/p1/items/{tasks[1]['item_id']}", headers=platform))
    check("/v1/projects/{pid}/items/{iid}", "delete", client.delete(
        "/v1/projects/p1/items/nope", headers=platform))
    check("/v1/tasks/{tid}/label", "post", client.post(
        f"/v1/tasks/{tasks[1]['id']}/label", json={"label": "pos"}, headers=platform))
    check("/v1/tasks/{tid}/release", "post", client.post(
        f"/v1/tasks/{tasks[1]['id']}/release", headers=platform))
    check("/v1/projects/{pid}/items/{iid}", "get", client.get(
        "/v1/projects/p1/items/i1", headers=platform))
    check("/v1/projects/{pid}/labels", "get", client.get("/v1/projects/p1/labels",
                                                         headers=platform))
    check("/v1/projects/{pid}/stats", "get", client.get("/v1/projects/p1/stats",
                                                         headers=platform))
    assert {(path, status) for path, _, status in check.seen} >= {
        ("/v1/projects/{pid}/labels", "200"), ("/v1/projects/{pid}/labels", "422"),
        ("/v1/projects/{pid}/tasks/next", "422"), ("/v1/experts/{eid}/tasks", "403"),
        ("/v1/projects/{pid}/items/{iid}", "404"), ("/v1/tasks/{tid}/label", "409")}
