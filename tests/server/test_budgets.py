"""Budgets over HTTP: budget_usd and max_hours_per_day set and validated, tasks/next's 204
saying why on both paths, GET /spend, and 16 experts racing for the last dollars."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from flask import request

from taskrank.server import create_app
from tests.cluster import both_backends
from tests.server.helpers import assert_problem, make_items, make_project, post_items

pytestmark = both_backends  # on the single Redis and on the Redis Cluster

REASON, DETAIL = "Taskrank-Reason", "Taskrank-Reason-Detail"


def _expert(client, auth, eid: str, **declared) -> dict:
    body = {"skills": {}, "capacity": 5, **declared}
    response = client.put(f"/v1/experts/{eid}", json=body, headers=auth("admin"))
    assert response.status_code in (200, 201), response.json
    return response.json


def _next(client, auth, eid: str = "e1", pid: str = "p1"):
    return client.post(f"/v1/projects/{pid}/tasks/next", json={"expert_id": eid},
                       headers=auth("platform"))


def _label(client, auth, task: dict, seconds: float, key: str | None = None):
    headers = {**auth("platform"), **({"Idempotency-Key": key} if key else {})}
    return client.post(f"/v1/tasks/{task['id']}/label", json={"label": "pos",
                                                               "seconds_spent": seconds},
                       headers=headers)


def _patch(client, auth, **changes):
    response = client.patch("/v1/projects/p1", json=changes, headers=auth("admin"))
    assert response.status_code == 200, response.json
    return response.json


def _served_by_flask(app) -> list[str]:
    """The last path segment of every request the Flask app itself saw."""
    seen: list[str] = []
    app.before_request(lambda: seen.append(request.path.rsplit("/", 1)[-1]))
    return seen


@pytest.mark.parametrize("fast", [True, False])
def test_budget_refusal_says_why_on_both_paths(settings, r, auth, tokens, fast):
    """Once the dollars spent reach budget_usd, tasks/next answers 204 with the code
    budget_exhausted and a sentence naming budget, spent and reserved, from the fast path
    (Flask never sees it) and from the Flask view alike; raising the budget by PATCH
    serves again, and null removes it."""
    app = create_app(settings.replace(fast_path=fast))
    client, flask_saw = app.test_client(), _served_by_flask(app)
    make_project(client, auth)
    _expert(client, auth, "e1", cost_per_hour=100)
    assert post_items(client, auth, make_items(5)).status_code == 200
    task = _next(client, auth).json["task"]
    assert _label(client, auth, task, 360).status_code == 201  # $10
    assert _patch(client, auth, budget_usd=10)["budget_usd"] == 10
    del flask_saw[:]
    refused = _next(client, auth)
    assert refused.status_code == 204 and refused.data == b""
    assert refused.headers[REASON] == "budget_exhausted"
    assert refused.headers[DETAIL] == ("project budget_usd 10.00 reached: spent 10.00, "
                                       "reserved 0.00")
    assert flask_saw == ([] if fast else ["next"])
    _patch(client, auth, budget_usd=1e6)
    assert _next(client, auth).status_code == 200
    assert _patch(client, auth, budget_usd=None)["budget_usd"] is None
    assert client.get("/v1/projects/p1", headers=auth("platform")).json["budget_usd"] is None


@pytest.mark.parametrize("fast", [True, False])
def test_every_204_names_its_reason(settings, r, auth, tokens, fast):
    """nothing_eligible, at_capacity and inactive each come with their code and detail,
    on both paths."""
    client = create_app(settings.replace(fast_path=fast)).test_client()
    make_project(client, auth)
    _expert(client, auth, "e1", capacity=1)
    expected = [("nothing_eligible", "no pending item of project p1 is open to expert e1")]
    answers = [_next(client, auth)]
    post_items(client, auth, make_items(3))
    assert _next(client, auth).status_code == 200
    answers.append(_next(client, auth))
    expected.append(("at_capacity", "expert e1 holds 1 open leases in project p1, its "
                                     "capacity 1"))
    _expert(client, auth, "e1", active=False)
    answers.append(_next(client, auth))
    expected.append(("inactive", "expert e1 is inactive"))
    for response, (code, words) in zip(answers, expected, strict=True):
        assert response.status_code == 204 and response.headers[REASON] == code
        assert words in response.headers[DETAIL], response.headers[DETAIL]


def test_daily_hours_reached_and_a_replay_counts_once(client, auth):
    """max_hours_per_day stops the expert at its hours of counted labels that day; a label
    replayed with its Idempotency-Key adds its seconds once."""
    make_project(client, auth)
    expert = _expert(client, auth, "e1", max_hours_per_day=0.1)  # 360 s
    assert expert["max_hours_per_day"] == 0.1
    post_items(client, auth, make_items(5))
    first = _next(client, auth).json["task"]
    for _ in range(3):  # counted once, replayed twice: 200 s, not 600 s
        assert _label(client, auth, first, 200, key="k1").status_code == 201
    second = _next(client, auth)
    assert second.status_code == 200, second.headers.get(DETAIL)
    assert _label(client, auth, second.json["task"], 200).status_code == 201
    refused = _next(client, auth)
    assert refused.status_code == 204 and refused.headers[REASON] == "daily_hours_reached"
    assert "max_hours_per_day 0.10 reached: 0.11 hours" in refused.headers[DETAIL]
    assert _expert(client, auth, "e1")["max_hours_per_day"] is None  # PUT replaces it
    assert _next(client, auth).status_code == 200


@pytest.mark.parametrize("value", [0, -5, "10", True, 1e13, [10]])
def test_bad_budget_usd_is_a_422_naming_the_field(client, auth, value):
    """budget_usd must be a number > 0 (or null), on create and on PATCH."""
    create = client.post("/v1/projects", json={"id": "p1", "labels": ["a", "b"],
                                                "budget_usd": value}, headers=auth("admin"))
    assert_problem(create, 422, "budget_usd", "> 0", "null")
    make_project(client, auth)
    patch = client.patch("/v1/projects/p1", json={"budget_usd": value}, headers=auth("admin"))
    assert_problem(patch, 422, "budget_usd", "> 0")
    assert client.get("/v1/projects/p1", headers=auth("platform")).json["budget_usd"] is None


@pytest.mark.parametrize("value", [0, -1, 24.5, "8", False])
def test_bad_max_hours_per_day_is_a_422_naming_the_field(client, auth, value):
    """max_hours_per_day must be a number in (0, 24] (or null)."""
    response = client.put("/v1/experts/e1", json={"max_hours_per_day": value},
                          headers=auth("admin"))
    body = assert_problem(response, 422, "max_hours_per_day", "at most 24")
    assert body["errors"][0]["field"] == "max_hours_per_day"


def test_spend_reports_totals_and_breakdowns(client, auth):
    """GET /spend: budget, spent, reserved, remaining and the per-expert, per-skill and
    per-day dollars, hours and labels; platform role; 404 for an unknown project."""
    make_project(client, auth)
    _expert(client, auth, "e1", cost_per_hour=120, skills={"cardio": 0.9})
    post_items(client, auth, make_items(4, skills=lambda i: ["cardio"]))
    task = _next(client, auth).json["task"]
    assert _label(client, auth, task, 600).status_code == 201  # $20
    open_task = _next(client, auth).json["task"]
    _patch(client, auth, budget_usd=500)
    spend = client.get("/v1/projects/p1/spend", headers=auth("platform"))
    assert spend.status_code == 200, spend.json
    body = spend.json
    reserved = body["reserved_usd"]
    assert reserved > 0 and open_task
    assert body["spent_usd"] == 20 and body["budget_usd"] == 500
    assert body["remaining_usd"] == round(500 - 20 - reserved, 6)
    assert (body["labels"], body["hours"]) == (1, round(600 / 3600, 6))
    one = {"usd": 20.0, "hours": round(600 / 3600, 6), "labels": 1}
    assert body["by_expert"] == {"e1": one} and body["by_skill"] == {"cardio": one}
    assert list(body["by_day"].values()) == [one]
    assert client.get("/v1/projects/p1/spend", headers=auth("expert")).status_code == 403
    assert_problem(client.get("/v1/projects/nope/spend", headers=auth("platform")), 404)


THREADS = 16
BUDGET = 3000.0


def test_sixteen_experts_pass_the_budget_by_at_most_one_task(app, client, auth):
    """16 experts, each at its own rate and seconds per label, loop next -> label at once
    until refused: every one ends with 204 budget_exhausted, the dollars spent are what
    their labels cost, and they pass the budget by at most the costliest single label."""
    make_project(client, auth, strategy={"retrain": {"every_labels": 10**6}},
                 budget_usd=BUDGET)
    assert post_items(client, auth, make_items(1000)).json["created"] == 1000
    rates = [50.0 + 13 * i for i in range(THREADS)]
    seconds = [300.0 + 10 * i for i in range(THREADS)]
    for i in range(THREADS):
        _expert(client, auth, f"x{i}", cost_per_hour=rates[i])
    start = threading.Barrier(THREADS)

    def expert_loop(i: int) -> tuple[int, object]:
        own, labeled = app.test_client(), 0
        start.wait()
        while (answer := _next(own, auth, f"x{i}")).status_code == 200:
            assert _label(own, auth, answer.json["task"], seconds[i]).status_code == 201
            labeled += 1
        return labeled, answer

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        results = list(pool.map(expert_loop, range(THREADS)))
    for _, last in results:
        assert last.status_code == 204 and last.headers[REASON] == "budget_exhausted", (
            last.status_code, last.headers.get(DETAIL))
    costs = [rates[i] * seconds[i] / 3600 for i in range(THREADS)]
    spend = client.get("/v1/projects/p1/spend", headers=auth("platform")).json
    assert spend["spent_usd"] == pytest.approx(
        sum(labeled * cost for (labeled, _), cost in zip(results, costs, strict=True)))
    assert spend["labels"] == sum(labeled for labeled, _ in results)
    assert spend["reserved_usd"] == 0
    assert spend["spent_usd"] <= BUDGET + max(costs)
    # The last refusal saw no lease open, so what was left was under one lease's predicted
    # cost, at most an hour's pay here (every label takes under 8 minutes).
    assert spend["spent_usd"] > BUDGET - max(rates)
