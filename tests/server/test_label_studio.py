"""The Label Studio ML backend at /ls/<pid>: the requests Label Studio sends, replayed."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from tests.cluster import both_backends
from tests.server.helpers import assert_problem

pytestmark = both_backends  # on the single Redis and on the Redis Cluster

FIXTURES = Path(__file__).parent / "label_studio"
LABELS = ["Positive", "Negative", "Neutral"]
CONFIG = ('<View><Text name="text" value="$text"/><Choices name="sentiment" toName="text" '
          'choice="single"><Choice value="Positive"/><Choice value="Negative"/>'
          '<Choice value="Neutral"/></Choices></View>')


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def basic(token: str, user: str = "taskrank") -> dict:
    """Label Studio's Basic Authentication with the token as password."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()}


@pytest.fixture
def ls_project(client, auth):
    response = client.post("/v1/projects", json={"id": "ls", "labels": LABELS},
                           headers=auth("admin"))
    assert response.status_code == 201
    return response.json


@pytest.fixture
def ls_auth(tokens):
    return basic(tokens["platform"])


def task(task_id: int, features: list[float] | None = None, **extra: object) -> dict:
    """A task as Label Studio 1.23 serializes it for /predict (TaskSimpleSerializer)."""
    data = {"text": f"review {task_id}"}
    if features is not None:
        data["features"] = features
    return {"id": task_id, "data": data, "annotations": [], "predictions": [], "meta": {},
            "created_at": "2025-01-31T12:00:00.000000Z", "is_labeled": False, "overlap": 1,
            "project": 7, **extra}


def ls_prediction(choice: str, score: float, version: str = "platform-model") -> dict:
    return {"model_version": version, "score": score, "result": [
        {"from_name": "sentiment", "to_name": "text", "type": "choices",
         "value": {"choices": [choice]}}]}


def predict(client, headers, tasks, config=CONFIG):
    return client.post("/ls/ls/predict", headers=headers, json={
        "tasks": tasks, "project": "7.1738324800", "label_config": config,
        "params": {"login": None, "password": None, "context": None}})


def test_health_accepts_basic_token_and_bearer_credentials(client, ls_project, tokens):
    """/health answers UP to a platform token as Basic password or user, Token, or Bearer."""
    token = tokens["platform"]
    for headers in (basic(token), basic("", user=token), {"Authorization": f"Token {token}"},
                    {"Authorization": f"Bearer {token}"}):
        response = client.get("/ls/ls/health", headers=headers)
        assert response.status_code == 200, headers
        assert response.json == {"status": "UP", "model_class": "taskrank",
                                 "model_version": "taskrank-v0-s1"}
    assert client.get("/ls/ls/", headers=basic(token)).json["status"] == "UP"


def test_health_refuses_missing_unknown_and_expert_credentials(client, ls_project, tokens):
    """401 with a Basic challenge without a known token; 403 for an expert token; 404 for
    a project that does not exist."""
    response = client.get("/ls/ls/health")
    assert_problem(response, 401, "Basic Authentication")
    assert response.headers["WWW-Authenticate"] == 'Basic realm="taskrank"'
    assert_problem(client.get("/ls/ls/health", headers=basic("tr_nope")), 401, "unknown token")
    assert_problem(client.get("/ls/ls/health", headers={"Authorization": "Basic %%%"}), 401)
    assert_problem(client.get("/ls/ls/health", headers=basic(tokens["expert"])), 403, "platform")
    assert_problem(client.get("/ls/nope/health", headers=basic(tokens["platform"])), 404, "nope")


def test_setup_from_the_sdk_tests_answers_the_model_version(client, ls_project, ls_auth):
    """The SDK's setup request (a sentiment config) answers the model version."""
    response = client.post("/ls/ls/setup", headers=ls_auth, json=fixture("sdk_setup.json"))
    assert response.status_code == 200
    assert response.json == {"model_version": "taskrank-v0-s1"}


def test_setup_refuses_a_config_without_the_project_labels(client, auth, ls_auth):
    """A config whose Choices are not the project's labels is a 422 naming both."""
    client.post("/v1/projects", json={"id": "ls", "labels": ["yes", "no"]}, headers=auth())
    body = assert_problem(client.post("/ls/ls/setup", headers=ls_auth,
                                      json=fixture("sdk_setup.json")), 422, "schema")
    assert "['yes', 'no']" in body["detail"] and "'sentiment'" in body["detail"]


def test_predict_of_the_sdk_test_request_says_what_the_config_lacks(client, ls_project,
                                                                   ls_auth):
    """The SDK's predict test sends an empty '<View></View>' config: 422, no <Choices>."""
    response = client.post("/ls/ls/predict", headers=ls_auth, json=fixture("sdk_predict.json"))
    assert_problem(response, 422, "label_config", "no <Choices> tag")


def test_predict_ingests_new_tasks_and_orders_by_priority(client, auth, ls_project, ls_auth):
    """Unknown tasks become items; one prediction per task in order; ascending score is
    the queue's descending priority; a task that cannot be an item gets no prediction."""
    tasks = [task(i, predictions=[ls_prediction("Positive", p)])
             for i, p in enumerate([0.9, 0.4, 0.6, 0.34], start=1)]
    tasks.append(task(5, features=[0.1, 0.2]))
    tasks.append(task(6))  # no features, no predictions
    response = predict(client, ls_auth, tasks)
    assert response.status_code == 200
    results = response.json["results"]
    assert len(results) == 6
    assert {r["model_version"] for r in results} == {"taskrank-v0-s1"}
    assert results[0]["result"] == [{"from_name": "sentiment", "to_name": "text",
                                     "type": "choices", "value": {"choices": ["Positive"]},
                                     "score": 0.9}]
    assert results[5] == {"result": [], "score": None, "model_version": "taskrank-v0-s1"}
    queue = client.get("/v1/projects/ls/queue?limit=10", headers=auth("platform")).json
    by_score = sorted(range(5), key=lambda i: results[i]["score"])
    assert [str(i + 1) for i in by_score] == [entry["id"] for entry in queue["items"]]
    for entry in queue["items"]:
        assert results[int(entry["id"]) - 1]["score"] == pytest.approx(1 - entry["priority"])
    item = client.get("/v1/projects/ls/items/2", headers=auth("platform")).json
    assert item["predictions"] == {"platform-model": [0.4, 0.3, 0.3]}
    assert item["payload"] == {"text": "review 2"}


def test_predict_leaves_known_items_and_skips_its_own_predictions(client, auth, ls_project,
                                                                  ls_auth):
    """A known task is not ingested again, and taskrank's earlier predictions on a task are
    not read back as a platform model's."""
    predict(client, ls_auth, [task(1, predictions=[ls_prediction("Negative", 0.7)])])
    again = task(1, predictions=[ls_prediction("Positive", 0.99),
                                 ls_prediction("Positive", 0.2, "taskrank-v0-s1")])
    assert predict(client, ls_auth, [again]).json["results"][0]["result"][0]["value"] == {
        "choices": ["Negative"]}
    fresh = task(2, predictions=[ls_prediction("Positive", 0.2, "taskrank-v0-s1")],
                 data={"text": "x", "features": [1.0]})
    predict(client, ls_auth, [fresh])
    item = client.get("/v1/projects/ls/items/2", headers=auth("platform")).json
    assert item["predictions"] == {}


def test_task_data_taskrank_id_names_the_item(client, auth, ls_project, ls_auth):
    """data.taskrank_id is the item id when a task has it."""
    tasks = [task(41, data={"text": "a", "taskrank_id": "out-1", "features": [0.5]})]
    assert predict(client, ls_auth, tasks).json["results"][0]["score"] is not None
    assert client.get("/v1/projects/ls/items/out-1", headers=auth("platform")).status_code == 200


def test_webhook_start_training_queues_a_retrain(client, ls_project, ls_auth):
    """START_TRAINING (Label Studio's 'Start Training') answers 201 with the retrain job."""
    project = {"id": 7, "label_config": CONFIG}
    response = client.post("/ls/ls/webhook", headers=ls_auth,
                           json={"action": "START_TRAINING", "project": project})
    assert response.status_code == 201
    assert response.json["status"] == "ok"
    assert response.json["result"]["job_id"].startswith("retrain-")
    job = client.get(f"/v1/jobs/{response.json['result']['job_id']}", headers=ls_auth)
    assert job.status_code == 401  # /v1 takes bearer tokens only


def test_webhook_documented_payloads(client, ls_project, ls_auth):
    """The webhook reference's examples: tasks without features are not items (with the
    reason), span and rectangle annotations choose no label, deletions are acknowledged,
    the SDK's bare event is answered 201, events taskrank does not use are acknowledged."""
    def send(body):
        return client.post("/ls/ls/webhook", headers=ls_auth, json=body)

    created = send(fixture("docs_tasks_created.json"))
    assert created.status_code == 201
    assert created.json["result"]["created"] == 0
    assert [r["id"] for r in created.json["result"]["rejected"]] == ["21", "22", "23"]
    assert "data.features" in created.json["result"]["rejected"][0]["detail"]
    for name in ("docs_annotation_created.json", "docs_annotation_updated.json"):
        answer = send(fixture(name))
        assert answer.status_code == 201, name
        assert answer.json["result"]["counted"] == 0
        assert "chooses no label" in answer.json["result"]["skipped"][0]["detail"]
    deleted = send(fixture("docs_annotations_deleted.json"))
    assert deleted.status_code == 200 and deleted.json["result"]["ignored"] is True
    bare = send(fixture("sdk_webhook.json"))
    assert bare.status_code == 201 and bare.json["result"]["counted"] == 0
    other = send({"action": "PROJECT_UPDATED", "project": {"id": 7}})
    assert other.status_code == 200 and other.json == {"status": "Unknown event"}


def test_webhook_refuses_a_body_that_is_not_an_object(client, ls_project, ls_auth):
    """A JSON list is a 422 problem."""
    response = client.post("/ls/ls/webhook", headers=ls_auth, json=[1])
    assert_problem(response, 422, "body")


def annotation_event(action: str, annotation_id: int, task_id: int, choice: str,
                     user: int = 1, **extra: object) -> dict:
    """An annotation event as Label Studio 1.23 sends it: the annotation, its task nested
    (the webhook's nested field) and the project."""
    return {"action": action, "annotation": {
        "id": annotation_id, "result": [{"value": {"choices": [choice]}, "id": "x1",
                                         "from_name": "sentiment", "to_name": "text",
                                         "type": "choices", "origin": "manual"}],
        "was_cancelled": False, "ground_truth": False,
        "created_at": "2025-01-31T12:00:00.000000Z",
        "updated_at": "2025-01-31T12:00:05.000000Z", "lead_time": 5.0, "prediction": {},
        "result_count": 1, "task": task_id, "completed_by": user, "project": 7, **extra},
        "task": task(task_id, features=[0.1, 0.2]), "project": {"id": 7,
                                                                 "label_config": CONFIG}}


def test_annotations_become_labels_once(client, auth, ls_project, ls_auth):
    """ANNOTATION_CREATED of a task taskrank never saw: the task becomes an item and the
    choice a counted label; the same event again is a duplicate; an update with another
    choice is refused (labels are append-only); a skipped task gives no label."""
    pytest.importorskip("taskrank.queue.label_import")  # leaseless labels (branch i16a)
    def send(body):
        response = client.post("/ls/ls/webhook", headers=ls_auth, json=body)
        assert response.status_code == 201, response.json
        return response.json["result"]

    first = send(annotation_event("ANNOTATION_CREATED", 50, 5, "Negative"))
    assert (first["counted"], first["rejected"], first["skipped"]) == (1, [], [])
    assert send(annotation_event("ANNOTATION_CREATED", 50, 5, "Negative"))["duplicates"] == 1
    changed = send(annotation_event("ANNOTATION_UPDATED", 50, 5, "Positive"))
    assert changed["counted"] == 0 and "not changed" in changed["rejected"][0]["detail"]
    skipped = send(annotation_event("ANNOTATION_CREATED", 51, 6, "Positive",
                                    was_cancelled=True))
    assert "skipped" in skipped["skipped"][0]["detail"]
    labels = client.get("/v1/projects/ls/labels", headers=auth("platform")).json["labels"]
    assert [(row["item_id"], row["label"]) for row in labels] == [("5", "Negative")]


def test_an_annotator_declared_as_expert_is_taught(client, auth, ls_project, ls_auth):
    """Label Studio user 3 labels as expert 'ls-user-3' once that expert is declared;
    user 4, undeclared, labels without an expert."""
    pytest.importorskip("taskrank.queue.label_import")  # leaseless labels (branch i16a)
    client.put("/v1/experts/ls-user-3", json={"skills": {}, "capacity": 5},
               headers=auth("admin"))
    for annotation_id, task_id, user in ((60, 7, 3), (61, 8, 4)):
        body = annotation_event("ANNOTATION_CREATED", annotation_id, task_id, "Neutral",
                                user=user)
        assert client.post("/ls/ls/webhook", headers=ls_auth, json=body).status_code == 201
    labels = client.get("/v1/projects/ls/labels", headers=auth("platform")).json["labels"]
    assert {row["item_id"]: row["expert_id"] for row in labels} == {"7": "ls-user-3",
                                                                    "8": None}


@pytest.fixture
def bc_project(client, auth):
    assert client.post("/v1/projects", json={"id": "bc", "labels": ["benign", "malignant"]},
                       headers=auth("admin")).status_code == 201


def test_label_studio_1_23_requests_replayed(client, auth, bc_project, ls_auth):
    """What a real Label Studio 1.23.2 sent (recorded by scripts/label_studio_session.py):
    setup answers the version, predict ingests its tasks (data.features) and answers one
    prediction each, START_TRAINING queues a retrain."""
    setup = client.post("/ls/bc/setup", headers=ls_auth, json=fixture("ls123_setup.json"))
    assert setup.status_code == 200 and setup.json == {"model_version": "taskrank-v0-s1"}
    body = fixture("ls123_predict.json")
    answer = client.post("/ls/bc/predict", headers=ls_auth, json=body)
    assert answer.status_code == 200
    assert [r["model_version"] for r in answer.json["results"]] == ["taskrank-v0-s1"] * 3
    assert all(r["score"] is not None for r in answer.json["results"])
    for entry in body["tasks"]:
        item = client.get(f"/v1/projects/bc/items/{entry['id']}", headers=auth("platform"))
        assert item.json["payload"] == entry["data"]
    training = client.post("/ls/bc/webhook", headers=ls_auth,
                           json=fixture("ls123_start_training.json"))
    assert training.status_code == 201 and training.json["result"]["job_id"]


def test_label_studio_1_23_annotation_becomes_a_label(client, auth, bc_project, ls_auth):
    """A recorded ANNOTATION_CREATED (its task nested) counts one label, once."""
    pytest.importorskip("taskrank.queue.label_import")  # leaseless labels (branch i16a)
    event = fixture("ls123_annotation_created.json")
    for expected in ("counted", "duplicates"):
        answer = client.post("/ls/bc/webhook", headers=ls_auth, json=event)
        assert answer.status_code == 201 and answer.json["result"][expected] == 1
    labels = client.get("/v1/projects/bc/labels", headers=auth("platform")).json["labels"]
    assert [(row["item_id"], row["label"]) for row in labels] == [
        (str(event["annotation"]["task"]), "benign")]
