"""GET /v1/experts/{eid}: the quality report per project and skill, and flagged skills
with their reason, learned from gold answers given through the API."""

from __future__ import annotations

import json

import pytest
from jsonschema import Draft202012Validator

from tests.cluster import both_backends
from tests.server.helpers import make_items, make_project, next_task, post_items

pytestmark = both_backends  # on the single Redis and on the Redis Cluster

GOLD = {"i0": "pos", "i1": "pos", "i2": "pos"}  # the qualification gate asks 3 by default
RATE, SECONDS = 120.0, 30.0  # one label: $1.00
DECLARED = 0.8  # prior Beta(8, 2): three wrong gold answers bring it to 8/13


def setup_project(client, auth, min_accuracy: float, pid: str = "p1") -> None:
    """``pid``: 8 cardio items, the first 3 gold; expert e1 declares cardio at 0.8."""
    make_project(client, auth, pid,
                 strategy={"qa": {"qualify": {"min_accuracy": min_accuracy}}})
    items = make_items(8, skills=lambda i: ["cardio"])
    for item in items:
        if item["id"] in GOLD:
            item["gold"] = GOLD[item["id"]]
    assert post_items(client, auth, items, pid).status_code == 200
    response = client.put("/v1/experts/e1", headers=auth("admin"), json={
        "skills": {"cardio": DECLARED}, "capacity": 5, "cost_per_hour": RATE})
    assert response.status_code in (200, 201), response.json


def label(client, auth, task: dict, value: str) -> None:
    response = client.post(f"/v1/tasks/{task['id']}/label", headers=auth("platform"),
                           json={"label": value, "seconds_spent": SECONDS})
    assert response.status_code == 201, response.json


def answer_gold_wrong(client, auth, n: int, pid: str = "p1") -> None:
    """e1 claims ``n`` tasks; each is a gold item (served first), answered wrong."""
    for _ in range(n):
        response = next_task(client, auth, pid)
        assert response.status_code == 200, response.headers
        task = response.json["task"]
        assert task["item_id"] in GOLD and task["reason"].startswith("gold check"), task
        label(client, auth, task, "neg")


def read_expert(client, auth, role: str = "platform") -> dict:
    response = client.get("/v1/experts/e1", headers=auth(role))
    assert response.status_code == 200, response.json
    return response.json


def test_gold_answers_show_in_the_report(client, auth):
    """Gold answered, gold accuracy, learned accuracy in its interval, labels, hours and
    dollars per project and skill; no accuracy field of the old kind."""
    setup_project(client, auth, min_accuracy=0.0)
    answer_gold_wrong(client, auth, 3)
    expert = read_expert(client, auth)
    assert "accuracy" not in expert and set(expert["quality"]) == {"p1"}
    report = expert["quality"]["p1"]["cardio"]
    assert report["gold_answered"] == 3 and report["gold_accuracy"] == 0.0
    assert report["accuracy"] == round(8 / 13, 4)
    low, high = report["accuracy_interval"]
    assert low < report["accuracy"] < high
    assert report["labels"] == 3 and report["agreement"] is None
    assert report["hours"] == round(3 * SECONDS / 3600, 4)
    assert report["dollars"] == pytest.approx(3 * RATE * SECONDS / 3600)
    assert report["status"] == "qualified" and "reason" not in report
    assert expert["flagged"] == []


def test_before_min_gold_the_skill_is_qualifying(client, auth):
    """After one of three gold answers the skill is qualifying, says why, and is not flagged."""
    setup_project(client, auth, min_accuracy=0.9)
    answer_gold_wrong(client, auth, 1)
    expert = read_expert(client, auth)
    report = expert["quality"]["p1"]["cardio"]
    assert report["status"] == "qualifying" and "answered 1 of the 3 gold" in report["reason"]
    assert expert["flagged"] == []


def test_low_min_accuracy_qualifies_and_real_items_follow(client, auth):
    """With qa.qualify.min_accuracy 0 even wrong gold answers qualify: the next task is a
    real item."""
    setup_project(client, auth, min_accuracy=0.0)
    answer_gold_wrong(client, auth, 3)
    assert read_expert(client, auth)["quality"]["p1"]["cardio"]["status"] == "qualified"
    response = next_task(client, auth)
    assert response.status_code == 200 and response.json["task"]["item_id"] not in GOLD


def test_high_min_accuracy_flags_the_skill_with_its_reason(client, auth):
    """Above the learned accuracy the skill is flagged, listed in ``flagged`` with the same
    reason, which names the numbers."""
    setup_project(client, auth, min_accuracy=0.9)
    answer_gold_wrong(client, auth, 3)
    expert = read_expert(client, auth)
    report = expert["quality"]["p1"]["cardio"]
    assert report["status"] == "flagged"
    for words in ("learned accuracy 0.615", "gold 0/3", "qa.qualify.min_accuracy 0.9"):
        assert words in report["reason"], report["reason"]
    assert expert["flagged"] == [{"project_id": "p1", "skill": "cardio",
                                  "reason": report["reason"]}]


def test_failed_gold_flags_the_skill_whatever_the_declared_level(client, auth):
    """0 of 3 gold right fails the default min_accuracy 0.5 though the declared 0.8 keeps
    the learned accuracy above it; the reason says which test failed."""
    setup_project(client, auth, min_accuracy=0.5)
    answer_gold_wrong(client, auth, 3)
    report = read_expert(client, auth)["quality"]["p1"]["cardio"]
    assert report["status"] == "flagged"
    for words in ("gold answers right 0/3", "min_accuracy 0.5", "learned accuracy 0.615"):
        assert words in report["reason"], report["reason"]
    assert next_task(client, auth).status_code == 204


def test_flagged_expert_gets_no_real_items_of_that_skill(client, auth):
    """Flagged on cardio, e1 gets 204 while 5 real cardio items are pending, but still
    gets an untagged item: only the skill is closed."""
    setup_project(client, auth, min_accuracy=0.9)
    answer_gold_wrong(client, auth, 3)
    response = next_task(client, auth)
    assert response.status_code == 204
    assert response.headers["Taskrank-Reason"] == "nothing_eligible"
    stats = client.get("/v1/projects/p1/stats", headers=auth("platform")).json
    assert stats["items"]["pending"] == 5 and stats["items"]["gold"] == 3
    post_items(client, auth, [{"id": "plain", "predictions": {"m1": [0.5, 0.5]}}])
    response = next_task(client, auth)
    assert response.status_code == 200 and response.json["task"]["item_id"] == "plain"


def test_raising_min_accuracy_flags_at_once(client, auth):
    """The verdict follows the project's current strategy: a PATCH flags a qualified skill."""
    setup_project(client, auth, min_accuracy=0.0)
    answer_gold_wrong(client, auth, 3)
    assert read_expert(client, auth)["flagged"] == []
    response = client.patch("/v1/projects/p1", headers=auth("admin"),
                            json={"strategy": {"qa": {"qualify": {"min_accuracy": 0.9}}}})
    assert response.status_code == 200, response.json
    assert [row["skill"] for row in read_expert(client, auth)["flagged"]] == ["cardio"]
    assert next_task(client, auth).status_code == 204


def test_only_projects_with_a_record_are_reported(client, auth):
    """A project the expert never worked in is left out; so is everything before its
    first claim."""
    setup_project(client, auth, min_accuracy=0.9)
    make_project(client, auth, "p2")
    post_items(client, auth, make_items(3, skills=lambda i: ["cardio"]), "p2")
    assert read_expert(client, auth)["quality"] == {}
    answer_gold_wrong(client, auth, 3)
    expert = read_expert(client, auth)
    assert set(expert["quality"]) == {"p1"} and set(expert["quality"]["p1"]) == {"cardio"}


def test_expert_token_reads_its_own_report_and_put_keeps_it(client, auth):
    """The expert sees its own flags; a new declaration keeps what the project learned."""
    setup_project(client, auth, min_accuracy=0.9)
    answer_gold_wrong(client, auth, 3)
    own = read_expert(client, auth, "expert")
    assert [row["skill"] for row in own["flagged"]] == ["cardio"]
    response = client.put("/v1/experts/e1", headers=auth("admin"),
                          json={"skills": {"cardio": DECLARED}, "cost_per_hour": RATE})
    assert response.status_code == 200
    assert response.json["quality"] == own["quality"]
    assert response.json["flagged"] == own["flagged"]


def test_answer_matches_the_openapi_schema(client, auth):
    """The Expert schema describes a real answer holding every verdict."""
    setup_project(client, auth, min_accuracy=0.9)
    answer_gold_wrong(client, auth, 3)
    setup_project(client, auth, min_accuracy=0.9, pid="p2")
    answer_gold_wrong(client, auth, 1, pid="p2")
    expert = read_expert(client, auth)
    assert {row["status"] for skills in expert["quality"].values()
            for row in skills.values()} == {"flagged", "qualifying"}
    document = json.loads(client.get("/openapi.json").get_data(as_text=True))
    validator = Draft202012Validator(
        {"$ref": "#/components/schemas/Expert", "components": document["components"]})
    assert [error.message for error in validator.iter_errors(expert)] == []
    del expert["quality"]["p1"]["cardio"]["reason"]  # a flag without its reason is refused
    assert not validator.is_valid(expert)
