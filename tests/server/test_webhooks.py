"""Webhooks over HTTP: subscriptions (PUT, GET, list, DELETE) with problem documents that say
what to fix; each event sent by the real action that causes it (a label finishing an item, a
retrain, a re-score, gold answers flagging an expert, the budget reached), received by a
real HTTP server through real RQ jobs; the deliveries page, as documented."""

from __future__ import annotations

import json

import pytest

from taskrank.queue.settings import current, install
from taskrank.server import create_app
from tests.receiver import SECRET, Receiver
from tests.server import test_expert_quality as quality
from tests.server.helpers import assert_problem, make_items, make_project, next_task, post_items
from tests.server.test_openapi import Checker

EVENTS = ["item.finished", "model.trained", "queue.reranked", "expert.flagged",
          "budget.exhausted"]


@pytest.fixture
def app(settings, r):
    """The app with two immediate retries (jobs run in this process read these settings)."""
    previous = current()
    app = create_app(settings.replace(webhook_retry_intervals="0,0"))
    yield app
    install(previous)


@pytest.fixture
def receiver():
    with Receiver() as server:
        yield server


def subscribe(client, auth, url: str, events=tuple(EVENTS), name: str = "platform",
              pid: str = "p1", role: str = "platform"):
    return client.put(f"/v1/projects/{pid}/webhooks/{name}", headers=auth(role),
                      json={"url": url, "events": list(events), "secret": SECRET})


def label(client, auth, task: dict, value: str = "pos", seconds: float = 30, key=None):
    headers = {**auth("platform"), **({"Idempotency-Key": key} if key else {})}
    response = client.post(f"/v1/tasks/{task['id']}/label", headers=headers,
                           json={"label": value, "seconds_spent": seconds})
    assert response.status_code == 201, response.json
    return response.json


def expert(client, auth, eid: str, **declared) -> None:
    response = client.put(f"/v1/experts/{eid}", headers=auth("admin"),
                          json={"skills": {}, "capacity": 5, **declared})
    assert response.status_code in (200, 201), response.json


def data_of(receiver: Receiver, event: str) -> list[dict]:
    """The data of every ``event`` received, each verified with the secret."""
    return [request.verify(SECRET)["data"] for request in receiver.of(event)]


# --- subscriptions --------------------------------------------------------------------------
def test_subscription_lifecycle_never_shows_the_secret(client, auth, receiver):
    """PUT answers 201 then 200 with Location; GET, the list and DELETE (204) follow; no
    answer carries the secret; a deleted webhook is a 404 problem."""
    make_project(client, auth)
    created = subscribe(client, auth, receiver.url, ["item.finished"])
    assert created.status_code == 201 and created.headers["Location"] == (
        "/v1/projects/p1/webhooks/platform")
    assert created.json["events"] == ["item.finished"] and created.json["url"] == receiver.url
    updated = subscribe(client, auth, receiver.url, ["model.trained"], role="admin")
    assert updated.status_code == 200 and updated.json["events"] == ["model.trained"]
    one = client.get("/v1/projects/p1/webhooks/platform", headers=auth("platform"))
    listed = client.get("/v1/projects/p1/webhooks", headers=auth("platform"))
    assert one.json == updated.json and listed.json == {"webhooks": [updated.json]}
    for response in (created, updated, one, listed):
        assert SECRET[6:] not in response.get_data(as_text=True)
    assert one.json["secret_hint"] == "whsec_..." + SECRET[-4:]
    deleted = client.delete("/v1/projects/p1/webhooks/platform", headers=auth("platform"))
    assert deleted.status_code == 204 and deleted.data == b""
    assert_problem(client.get("/v1/projects/p1/webhooks/platform", headers=auth("platform")),
                   404, "no webhook 'platform'")
    assert_problem(client.delete("/v1/projects/p1/webhooks/platform",
                                 headers=auth("platform")), 404)


@pytest.mark.parametrize(("body", "words"), [
    ({"url": "ftp://x/y", "events": ["item.finished"], "secret": SECRET}, "url:"),
    ({"url": "https://x/y", "events": ["item.done"], "secret": SECRET},
     "events[0]: unknown event 'item.done'"),
    ({"url": "https://x/y", "events": [], "secret": SECRET}, "events: must be a non-empty"),
    ({"url": "https://x/y", "events": ["item.finished"], "secret": "short"},
     "secret: has 5 characters"),
    ({"url": "https://x/y", "events": ["item.finished"]}, "secret: is required"),
    ({"url": "https://x/y", "events": ["item.finished"], "secret": SECRET, "x": 1},
     "x: unknown field"),
    ([], "body: must be a JSON object"),
])
def test_bad_subscription_is_a_422_saying_what_to_fix(client, auth, body, words):
    """Each bad body is a 422 problem whose detail names the field and what to send."""
    make_project(client, auth)
    response = client.put("/v1/projects/p1/webhooks/w", json=body, headers=auth("platform"))
    problem = assert_problem(response, 422, words)
    assert problem["errors"][0]["field"] in words


def test_subscriptions_need_a_platform_token_and_a_project(client, auth, receiver):
    """An expert token is refused (403); an unknown project (404) or a bad name (422) too."""
    make_project(client, auth)
    assert_problem(subscribe(client, auth, receiver.url, role="expert"), 403, "platform")
    assert_problem(client.get("/v1/projects/p1/webhooks", headers=auth("expert")), 403)
    assert_problem(subscribe(client, auth, receiver.url, pid="nope"), 404)
    assert_problem(client.get("/v1/projects/nope/webhooks", headers=auth("platform")), 404)
    assert_problem(subscribe(client, auth, receiver.url, name="a:b"), 422, "webhook name")
    assert_problem(client.get("/v1/projects/p1/webhooks/none/deliveries",
                              headers=auth("platform")), 404)


# --- each event by the real action ----------------------------------------------------------
def test_label_finishing_an_item_sends_item_finished_once(client, auth, receiver, run_jobs):
    """A counted label finishes an item (redundancy 1): item.finished carries the item, its
    aggregated label and confidence; the label's replay (same Idempotency-Key) sends none."""
    make_project(client, auth)
    subscribe(client, auth, receiver.url, ["item.finished"])
    assert post_items(client, auth, make_items(3)).status_code == 200
    expert(client, auth, "e1")
    task = next_task(client, auth).json["task"]
    label(client, auth, task, key="k1")
    label(client, auth, task, key="k1")  # replayed: after-label work runs again
    run_jobs()
    item = client.get(f"/v1/projects/p1/items/{task['item_id']}", headers=auth("platform")).json
    assert data_of(receiver, "item.finished") == [{
        "project_id": "p1", "item_id": task["item_id"], "label": "pos",
        "confidence": item["aggregated"]["confidence"], "n_labels": 1}]


def test_item_of_two_labels_is_finished_by_its_second(client, auth, receiver, run_jobs):
    """With redundancy 2 the first label finishes nothing; the second sends item.finished
    with n_labels 2."""
    make_project(client, auth, redundancy=2)
    subscribe(client, auth, receiver.url, ["item.finished"])
    assert post_items(client, auth, make_items(1)).status_code == 200
    expert(client, auth, "e1")
    expert(client, auth, "e2")
    label(client, auth, next_task(client, auth, eid="e1").json["task"])
    run_jobs()
    assert receiver.requests == []
    label(client, auth, next_task(client, auth, eid="e2").json["task"])
    run_jobs()
    [data] = data_of(receiver, "item.finished")
    assert data["item_id"] == "i0" and data["n_labels"] == 2 and data["label"] == "pos"


def test_retrain_sends_model_trained_and_its_rescore_queue_reranked(client, auth, receiver,
                                                                     run_jobs):
    """A retrain sends model.trained (the version as GET /model shows it) and, once its
    re-score run re-ranked the queue (its top done), queue.reranked naming that run."""
    make_project(client, auth, strategy={"retrain": {"every_labels": 1000, "min_labels": 4}})
    subscribe(client, auth, receiver.url, ["model.trained", "queue.reranked"])
    assert post_items(client, auth, make_items(12)).status_code == 200
    expert(client, auth, "e1", capacity=10)
    for n in range(6):
        label(client, auth, next_task(client, auth).json["task"], ["neg", "pos"][n % 2])
    assert client.post("/v1/projects/p1/retrain", headers=auth("platform")).status_code == 202
    run_jobs()
    model = client.get("/v1/projects/p1/model", headers=auth("platform")).json
    [trained] = data_of(receiver, "model.trained")
    assert trained["version"] == model["version"] == 1 and trained["n_labels"] == 6
    assert trained["rescore_job_id"] == model["rescore_job_id"]
    assert set(trained) >= {"trained_at", "metrics", "exploration", "model"}
    # The ingest's pool map re-scored the pool too (its own run).
    [reranked] = [data for data in data_of(receiver, "queue.reranked")
                  if data["job_id"] == model["rescore_job_id"]]
    assert reranked["items"] == 6 and reranked["reason"] == "model v1"
    assert reranked["reranked_at"] >= reranked["started_at"] and reranked["tail_items"] == 0


def test_strategy_change_rescore_sends_queue_reranked(client, auth, receiver, run_jobs):
    """The re-score a strategy change starts sends queue.reranked when it is done."""
    make_project(client, auth)
    subscribe(client, auth, receiver.url, ["queue.reranked"])
    assert post_items(client, auth, make_items(5)).status_code == 200
    patched = client.patch("/v1/projects/p1", headers=auth("admin"),
                           json={"strategy": {"uncertainty": "entropy"}}).json
    run_jobs()
    [reranked] = [data for data in data_of(receiver, "queue.reranked")
                  if data["job_id"] == patched["backfill_job_id"]]
    assert reranked["items"] == 5 and reranked["reason"] == "strategy change"


def test_gold_answers_flagging_an_expert_send_expert_flagged_once(client, auth, receiver,
                                                                   run_jobs):
    """Three wrong gold answers flag e1's cardio: expert.flagged once, with the gate's
    reason (a retrain's re-check sends nothing more); lowering the bar unflags it, raising
    it again flags it again: a second event."""
    quality.setup_project(client, auth, min_accuracy=0.5)
    subscribe(client, auth, receiver.url, ["expert.flagged"])
    quality.answer_gold_wrong(client, auth, 2)
    run_jobs()
    assert receiver.requests == []  # still qualifying
    quality.answer_gold_wrong(client, auth, 1)
    client.post("/v1/projects/p1/retrain", headers=auth("platform"))
    run_jobs()
    [flagged] = data_of(receiver, "expert.flagged")
    assert flagged["expert_id"] == "e1" and flagged["skill"] == "cardio"
    assert "gold answers right 0/3" in flagged["reason"] and flagged["gold_answered"] == 3
    for bar in (0.0, 0.5):
        assert client.patch("/v1/projects/p1", headers=auth("admin"), json={
            "strategy": {"qa": {"qualify": {"min_accuracy": bar}}}}).status_code == 200
    run_jobs()
    assert len(data_of(receiver, "expert.flagged")) == 2


def test_budget_reached_sends_budget_exhausted_once_per_budget(client, auth, receiver,
                                                                run_jobs):
    """tasks/next refused for the budget sends budget.exhausted once, not per refusal; a
    raised budget reached again sends it again."""
    make_project(client, auth)
    subscribe(client, auth, receiver.url, ["budget.exhausted"])
    assert post_items(client, auth, make_items(5)).status_code == 200
    expert(client, auth, "e1", cost_per_hour=100)
    label(client, auth, next_task(client, auth).json["task"], seconds=360)  # $10
    for budget in (10, 20):
        client.patch("/v1/projects/p1", json={"budget_usd": budget}, headers=auth("admin"))
        if budget == 20:
            label(client, auth, next_task(client, auth).json["task"], seconds=360)
        for _ in range(3):
            refused = next_task(client, auth)
            assert refused.headers["Taskrank-Reason"] == "budget_exhausted"
    run_jobs()
    sent = data_of(receiver, "budget.exhausted")
    assert [(data["budget_usd"], data["spent_usd"]) for data in sent] == [(10, 10), (20, 20)]
    assert sent[0]["detail"] == "project budget_usd 10.00 reached: spent 10.00, reserved 0.00"


def test_events_of_a_project_without_webhooks_record_nothing(client, auth, r, run_jobs):
    """Labels, retrains and re-scores of a project nobody subscribed to leave no outbox."""
    make_project(client, auth)
    assert post_items(client, auth, make_items(3)).status_code == 200
    expert(client, auth, "e1")
    label(client, auth, next_task(client, auth).json["task"])
    client.post("/v1/projects/p1/retrain", headers=auth("platform"))
    run_jobs()
    assert list(r.scan_iter("*webhook*")) == []


# --- deliveries page ------------------------------------------------------------------------
def test_deliveries_page_matches_the_document(client, auth, run_jobs):
    """GET .../deliveries lists the webhook's deliveries with status, attempts and last
    answer; answers (and the CRUD ones) satisfy the OpenAPI document."""
    document = json.loads(client.get("/openapi.json").get_data(as_text=True))
    check = Checker(document)
    make_project(client, auth)
    base = "/v1/projects/{pid}/webhooks"
    with Receiver([404, 503]) as receiver:
        check(base + "/{name}", "put", subscribe(client, auth, receiver.url, ["item.finished"]))
        check(base + "/{name}", "put", subscribe(client, auth, receiver.url, ["item.finished"]))
        check(base + "/{name}", "put", client.put("/v1/projects/p1/webhooks/w", json={},
                                                  headers=auth("platform")))
        assert post_items(client, auth, make_items(2)).status_code == 200
        expert(client, auth, "e1")
        for _ in range(2):
            label(client, auth, next_task(client, auth).json["task"])
            run_jobs()
    check(base, "get", client.get("/v1/projects/p1/webhooks", headers=auth("platform")))
    check(base + "/{name}", "get", client.get("/v1/projects/p1/webhooks/platform",
                                              headers=auth("platform")))
    page = check(base + "/{name}/deliveries", "get", client.get(
        "/v1/projects/p1/webhooks/platform/deliveries?limit=10", headers=auth("platform")))
    assert [(row["status"], row["attempts"], row["last_status_code"])
            for row in page["deliveries"]] == [("delivered", 2, 200), ("failed", 1, 404)]
    assert len({request.id for request in receiver.requests}) == 2
    check(base + "/{name}/deliveries", "get", client.get(
        "/v1/projects/p1/webhooks/platform/deliveries?limit=0", headers=auth("platform")))
    check(base + "/{name}", "get", client.get("/v1/projects/p1/webhooks/x",
                                              headers=auth("platform")))
    check(base + "/{name}", "delete", client.delete("/v1/projects/p1/webhooks/platform",
                                                    headers=auth("platform")))
    assert {"200", "201", "404", "422"} <= {status for *_, status in check.seen}


def test_labels_without_a_lease_send_item_finished_once(client, auth, receiver, run_jobs):
    """Labels imported without a lease finish items: item.finished for each, once, though
    the batch is imported twice."""
    make_project(client, auth)
    subscribe(client, auth, receiver.url, ["item.finished"])
    assert post_items(client, auth, make_items(3)).status_code == 200
    expert(client, auth, "e1")
    records = [{"item_id": "i0", "label": "pos", "expert_id": "e1"},
               {"item_id": "i1", "label": "neg", "source": "row-1"}]
    for _ in range(2):
        response = client.post("/v1/projects/p1/labels", json={"labels": records},
                               headers=auth("platform"))
        assert response.status_code == 200, response.json
    run_jobs()
    sent = sorted(data_of(receiver, "item.finished"), key=lambda data: data["item_id"])
    assert [(data["item_id"], data["label"]) for data in sent] == [("i0", "pos"),
                                                                   ("i1", "neg")]
