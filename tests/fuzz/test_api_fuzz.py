"""Schemathesis fuzzes every documented operation against the app on a real Redis.

With an admin token, every check schemathesis has (no exemption): no 5xx, every answer
matches the document (status, media type, body schema, headers), every request the
document calls valid is accepted and every one it calls invalid is refused.  Valid
requests follow the rules the document states in words (conftest.follow_stated_rules).
With no token, a bad token or a role below the operation's required role: the route
refuses (401/403).  test_api_run runs schemathesis' whole engine (`st run`) as well.

One pytest test per operation runs Hypothesis over schemathesis' strategies (its pytest
loader for fixture-built schemas does not run on pytest 9.2); `--fuzz-examples N` sets the
examples per operation and generation mode, `make bench` runs 200.
"""

from __future__ import annotations

import importlib
import itertools
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from taskrank.server.openapi import OPERATIONS, PAGES
from tests.fuzz.conftest import (
    BATCH,
    LABEL_BATCH,
    Seed,
    follow_stated_rules,
    item_validator,
    record_validator,
)

ROUTES = [pytest.param(method.upper(), path, endpoint, id=f"{method.upper()} {path}")
          for method, path, endpoint, *_ in OPERATIONS + PAGES]
ROLES = ("expert", "platform", "admin")  # each allows what the ones before it allow


def required_role(endpoint: str) -> str | None:
    """The role the view needs, read as the OpenAPI document reads it."""
    blueprint, name = endpoint.split(".", 1)
    view = getattr(importlib.import_module(f"taskrank.server.{blueprint}"), name)
    return getattr(view, "required_role", None)


PROTECTED = [pytest.param(*route.values[:2], required_role(route.values[2]), id=route.id)
             for route in ROUTES if required_role(route.values[2])]


def operation_of(schema, method: str, path: str):
    """The documented operation (the document lists an optional blueprint's routes only
    when the app registers it)."""
    if path not in schema or method not in schema[path]:
        pytest.skip(f"{method} {path} is not served by this app")
    return schema[path][method]


def run_examples(max_examples: int):
    """Hypothesis settings for one operation: deterministic, no example database."""
    return settings(max_examples=max_examples, derandomize=True, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                           HealthCheck.data_too_large])


def cases(operation, mode: GenerationMode, seed: Seed) -> st.SearchStrategy:
    """Generated cases, half of them addressed to seeded ids (in negative mode only where
    something besides the path can be invalid, since a seeded path is valid)."""
    generated = operation.as_strategy(generation_mode=mode)
    names = re.findall(r"{(\w+)}", operation.path)
    raw = operation.definition.raw
    more = "requestBody" in raw or any(p["in"] != "path" for p in raw.get("parameters", []))
    if not names or (mode is GenerationMode.NEGATIVE and not more):
        return generated
    combinations = itertools.product(*(seed.ids[name] for name in names))
    seeded = st.one_of([operation.as_strategy(generation_mode=mode, path_parameters=dict(
        zip(names, ids, strict=True))) for ids in combinations])
    return st.one_of(generated, seeded)


def modes(operation) -> list[GenerationMode]:
    """Negative mode where the operation takes some input that can be invalid."""
    raw = operation.definition.raw
    has_input = bool(raw.get("parameters")) or "requestBody" in raw
    return [GenerationMode.POSITIVE] + [GenerationMode.NEGATIVE] * has_input


@pytest.mark.parametrize(("method", "path", "endpoint"), ROUTES)
def test_admin_requests_are_answered_as_documented(schema, seed, fuzz_examples,
                                                   method, path, endpoint):
    """With an admin token, valid and invalid requests: no 5xx, status, media type and body
    as documented, and no request the document calls invalid is accepted."""
    operation = operation_of(schema, method, path)
    headers = seed.auth("admin")
    generation = modes(operation)

    @run_examples(fuzz_examples * len(generation))
    @given(case=st.one_of([cases(operation, mode, seed) for mode in generation]),
           data=st.data())
    def check(case, data):
        follow_stated_rules(case, seed, data.draw(st.randoms(use_true_random=False)))
        response = case.call_and_validate(headers=headers)
        if f"{method} {path}" == BATCH:
            check_each_item_judged(case, response)
        if f"{method} {path}" == LABEL_BATCH:
            check_each_record_judged(case, response)

    check()


# What the fuzz once found (a 500, an undocumented status, a valid value refused), replayed
# on every run: (method, path, path parameters, body, the status it must get now).
FOUND = [
    pytest.param("POST", "/v1/projects/{pid}/items", {"pid": "p1"},
                 {"items": [{"id": "x", "predictions": {"m": [1.7e308, 1.7e308]}}]}, 422,
                 id="probabilities whose sum overflows"),
    pytest.param("POST", "/v1/projects", {}, {"id": "p2", "labels": ["a", "b"],
                                               "redundancy": 2.0, "lease_seconds": 60.0}, 201,
                 id="integral floats are integers"),
    pytest.param("PUT", "/v1/experts/{eid}", {"eid": "e3"}, {"capacity": 3.0}, 201,
                 id="integral float capacity"),
    pytest.param("GET", "/v1/jobs/{jid}", {"jid": ("jid", -1)}, None, 200,
                 id="job of a 128-character project id"),
    pytest.param("GET", "/projects/{pid}/learning-curve.png", {"pid": "no id"}, None, 422,
                 id="learning curve of an invalid project id"),
]


@pytest.mark.parametrize(("method", "path", "parameters", "body", "status"), FOUND)
def test_past_findings_stay_fixed(schema, seed, method, path, parameters, body, status):
    """Each request the fuzz once found answered wrongly gets its status, as documented."""
    parameters = {name: seed.ids[value[0]][value[1]] if isinstance(value, tuple) else value
                  for name, value in parameters.items()}
    case = schema[path][method].Case(path_parameters=parameters,
                                     **({} if body is None else {"body": body}))
    response = case.call_and_validate(headers=seed.auth("admin"))
    assert response.status_code == status, response.text[:300]


def check_each_item_judged(case, response) -> None:
    """A stored batch had the document's shape; each item the document calls invalid is
    listed in `rejected`, and each valid one is stored (but a repeated id: the first wins)."""
    if response.status_code >= 300:
        return
    body = case.body
    assert isinstance(body, dict) and set(body) == {"items"}, body
    assert isinstance(body["items"], list) and body["items"], body
    item = item_validator(case)
    invalid, repeated, ids = set(), set(), set()
    for index, raw in enumerate(body["items"]):
        if not item.is_valid(raw):
            invalid.add(index)
        elif raw["id"] in ids:
            repeated.add(index)
        if index not in invalid:
            ids.add(raw["id"])
    rejected = {entry["index"] for entry in response.json()["rejected"]}
    assert invalid <= rejected, (sorted(invalid - rejected), case.as_curl_command())
    assert rejected <= invalid | repeated, (response.json()["rejected"], case.as_curl_command())


def check_each_record_judged(case, response) -> None:
    """A recorded batch of labels had the document's shape; each record the document
    calls invalid is listed in `rejected`, and every record has one outcome."""
    if response.status_code >= 300:
        return
    body, answer = case.body, response.json()
    assert isinstance(body, dict) and set(body) == {"labels"}, body
    record = record_validator(case)
    invalid = {index for index, raw in enumerate(body["labels"]) if not record.is_valid(raw)}
    rejected = {entry["index"] for entry in answer["rejected"]}
    assert invalid <= rejected, (sorted(invalid - rejected), case.as_curl_command())
    outcomes = (answer["counted"] + answer["duplicates"] + len(answer["not_counted"])
                + len(answer["rejected"]))
    assert outcomes == len(body["labels"]), (answer, case.as_curl_command())


def refusals(role: str, ui: bool, tokens: dict[str, str]) -> list[tuple[str, dict, int]]:
    """(what, headers, status) of each request an operation needing ``role`` refuses."""
    cases = [("unknown token", {"Authorization": "Bearer not-a-token"}, 401),
             ("not a bearer header", {"Authorization": f"Basic {tokens['admin']}"}, 401),
             ("empty bearer", {"Authorization": "Bearer "}, 401),
             # The web page sends a browser without a login to the login form instead.
             ("no token", {}, 303 if ui else 401)]
    cases += [(f"{lower} token", {"Authorization": f"Bearer {tokens[lower]}"}, 403)
              for lower in ROLES[:ROLES.index(role)]]
    return cases


@pytest.mark.parametrize(("method", "path", "role"), PROTECTED)
def test_protected_routes_refuse_missing_bad_and_low_tokens(schema, seed, fuzz_examples,
                                                            method, path, role):
    """Every protected route answers 401 (no, malformed or unknown token) or 403 (a role
    below the one it needs) as a problem document, whatever else the request holds."""
    operation = operation_of(schema, method, path)
    assert operation.definition.raw["x-required-role"] == role
    ui = not path.startswith(("/v1", "/ls/"))  # /ls/: Label Studio, a JSON API too

    @run_examples(max(3, fuzz_examples // 4))
    @given(case=cases(operation, GenerationMode.POSITIVE, seed))
    def check(case):
        for what, headers, status in refusals(role, ui, seed.tokens):
            response = case.call(headers=headers)
            assert response.status_code == status, (what, case.as_curl_command(headers),
                                                    response.text[:300])
            if status == 303:
                assert response.headers["location"][0].startswith("/login"), what
            else:
                assert response.headers["content-type"] == ["application/problem+json"], what
                assert response.json()["status"] == status, what

    check()
