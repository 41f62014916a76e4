"""Labels without a lease over HTTP (POST /v1/projects/{pid}/labels): counted once whatever
the retries, per-record rejections, what they teach about experts, retrains, and the
comment and answer a label may carry (leased or not)."""

from __future__ import annotations

import pytest

from taskrank.queue import keys as K
from taskrank.queue.validation import MAX_ANSWER_BYTES, MAX_COMMENT_BYTES
from tests.cluster import both_backends
from tests.invariants import check_store, pooled
from tests.server.helpers import (
    assert_problem,
    make_expert,
    make_items,
    make_project,
    next_task,
    post_items,
)

pytestmark = both_backends  # on the single Redis and on the Redis Cluster


def post_labels(client, auth, records, pid="p1", role="platform"):
    return client.post(f"/v1/projects/{pid}/labels", json={"labels": records},
                       headers=auth(role))


def export(client, auth, query=""):
    return client.get(f"/v1/projects/p1/labels{query}", headers=auth("platform")).json


@pytest.fixture
def pool(client, auth):
    """Project p1 (redundancy 1) with items i0..i5, experts e1 and e2."""
    make_project(client, auth)
    assert post_items(client, auth, make_items(6)).status_code == 200
    make_expert(client, auth, "e1")
    make_expert(client, auth, "e2")


def test_a_batch_imported_twice_is_counted_once(client, auth, r, pool):
    """A retry of the same records counts nothing more: counters, stream and export hold
    each label once, and the finished items left the pool."""
    records = [{"item_id": "i0", "label": "pos", "expert_id": "e1"},
               {"item_id": "i1", "label": "neg", "source": "ls-annotation-7"},
               {"item_id": "i2", "label": "pos", "expert_id": "e2", "source": "ls-8",
                "answered_at": "2025-01-31T12:00:00+01:00"}]
    first = post_labels(client, auth, records)
    assert first.status_code == 200, first.json
    assert first.json == {"counted": 3, "duplicates": 0, "not_counted": [], "rejected": []}
    again = post_labels(client, auth, records)
    assert again.json == {"counted": 0, "duplicates": 3, "not_counted": [], "rejected": []}
    assert client.get("/v1/projects/p1/stats", headers=auth("platform")).json["labels"][
        "counted"] == 3
    labels = export(client, auth)["labels"]
    assert [(x["item_id"], x["expert_id"], x["counted"], x.get("leaseless")) for x in labels] == [
        ("i0", "e1", True, True), ("i1", None, True, True), ("i2", "e2", True, True)]
    assert labels[1]["source"] == "ls-annotation-7" and "answered_at" not in labels[0]
    assert labels[2]["answered_at"] == "2025-01-31T12:00:00+01:00"  # as sent
    assert not {"i0", "i1", "i2"} & set(pooled(r, "p1"))
    aggregated = {x["item_id"]: x["label"] for x in export(client, auth, "?aggregated=true")[
        "labels"]}
    assert aggregated == {"i0": "pos", "i1": "neg", "i2": "pos"}
    check_store(r, "p1")


def test_a_bad_record_never_blocks_the_rest(client, auth, r, pool):
    """Each bad record comes back with its index, item id and a reason naming the field;
    the good ones are counted."""
    records = [
        {"item_id": "i0", "label": "pos", "expert_id": "e1"},         # 0 good
        {"item_id": "nope", "label": "pos", "expert_id": "e1"},       # 1 no such item
        {"item_id": "i1", "label": "maybe", "expert_id": "e1"},       # 2 not a label
        {"item_id": "i1", "label": "pos"},                            # 3 no expert, no source
        {"item_id": "i1", "label": "pos", "expert_id": "ghost"},      # 4 undeclared expert
        {"item_id": "i1", "label": "pos", "source": "s", "comment": "x" * (MAX_COMMENT_BYTES + 1)},
        {"item_id": "i1", "label": "pos", "source": "s", "answered_at": "yesterday"},
        "i1",                                                         # 7 not an object
        {"item_id": "i0", "label": "neg", "expert_id": "e1"},         # 8 e1 said pos already
        {"item_id": "i2", "label": "neg", "source": "s", "colour": 1},  # 9 unknown field
        {"item_id": "i3", "label": "neg", "source": "s9"},            # 10 good
    ]
    response = post_labels(client, auth, records)
    assert response.status_code == 200, response.json
    body = response.json
    assert body["counted"] == 2 and body["duplicates"] == 0 and body["not_counted"] == []
    reasons = {row["index"]: (row["id"], row["detail"]) for row in body["rejected"]}
    assert sorted(reasons) == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    for index, words in {1: ("no item 'nope'",), 2: ("label:", "['neg', 'pos']"),
                         3: ("expert_id or source",), 4: ("expert_id:", "ghost", "PUT"),
                         5: ("comment:", "10240 bytes"), 6: ("answered_at:", "RFC 3339"),
                         7: ("record: must be a JSON object",),
                         8: ("expert e1", "label 'pos'"), 9: ("colour", "unknown field")}.items():
        for word in words:
            assert word in reasons[index][1], (index, reasons[index])
    assert reasons[1][0] == "nope" and reasons[7][0] == "i1" and reasons[9][0] == "i2"
    assert {x["item_id"] for x in export(client, auth)["labels"]} == {"i0", "i3"}
    check_store(r, "p1")


def test_a_batch_without_one_good_record_is_a_422_listing_each(client, auth, pool):
    """When no record can be recorded the answer is a 422 problem with every rejection."""
    response = post_labels(client, auth, [{"item_id": "i0", "label": "maybe", "source": "a"},
                                          {"item_id": "i1"}])
    body = assert_problem(response, 422, "none of the 2 label records")
    assert [(row["index"], row["id"]) for row in body["rejected"]] == [(0, "i0"), (1, "i1")]
    assert "label" in body["rejected"][1]["detail"]


def test_an_expert_label_teaches_its_accuracy_and_an_anonymous_one_does_not(client, auth, r):
    """Two experts agreeing on an item give both agreement evidence; a gold item's label
    is a gold answer of its expert; labels without an expert count but write no expert's
    record (and a gold item refuses them)."""
    make_project(client, auth, redundancy=2)
    items = make_items(4)
    items[3]["gold"] = "pos"
    post_items(client, auth, items)
    make_expert(client, auth, "e1")
    make_expert(client, auth, "e2")
    body = post_labels(client, auth, [
        {"item_id": "i0", "label": "pos", "expert_id": "e1"},
        {"item_id": "i0", "label": "pos", "expert_id": "e2"},
        {"item_id": "i1", "label": "pos", "source": "a"},
        {"item_id": "i1", "label": "neg", "source": "b"},
        {"item_id": "i3", "label": "neg", "expert_id": "e1"},
        {"item_id": "i3", "label": "pos", "source": "c"}]).json
    assert body["counted"] == 5 and [row["index"] for row in body["rejected"]] == [5]
    assert "gold item" in body["rejected"][0]["detail"]
    learned = {eid: r.hgetall(K.expert_skill_key("p1", eid)) for eid in ("e1", "e2")}
    for eid in ("e1", "e2"):
        assert float(learned[eid]["a:_general"]) > 0.5, learned[eid]
        assert "n:_general" not in learned[eid]  # seconds are learned from leases only
    assert learned["e1"]["gn:_general"] == "1" and "gr:_general" not in learned["e1"]
    assert "gn:_general" not in learned["e2"]
    assert not r.exists(K.expert_skill_key("p1", ""))
    assert sorted(key for key in r.scan_iter(match=K.expert_skill_prefix("p1") + "*")) == [
        K.expert_skill_key("p1", "e1"), K.expert_skill_key("p1", "e2")]
    item = client.get("/v1/projects/p1/items/i1", headers=auth("platform")).json
    assert item["status"] == "labeled" and item["labels"] == [
        {"expert_id": None, "label": "pos"}, {"expert_id": None, "label": "neg"}]
    quality = client.get("/v1/experts/e1", headers=auth("platform")).json["quality"]["p1"]
    assert quality["_general"]["gold_answered"] == 1 and quality["_general"]["labels"] == 0
    check_store(r, "p1")


def test_leaseless_labels_queue_retrains_as_leased_ones_do(client, auth, r, run_jobs):
    """Counted labels without a lease move the retrain counter: at every_labels a retrain
    is queued, and the model trains on them."""
    make_project(client, auth, strategy={"retrain": {"every_labels": 4, "min_labels": 2}})
    post_items(client, auth, make_items(8))
    records = [{"item_id": f"i{i}", "label": "pos" if i % 2 else "neg", "source": f"s{i}"}
               for i in range(3)]
    post_labels(client, auth, records)
    assert not r.exists(K.retrain_pending_key("p1"))
    post_labels(client, auth, [{"item_id": "i3", "label": "pos", "source": "s3"}])
    assert r.exists(K.retrain_pending_key("p1"))
    run_jobs()
    model = client.get("/v1/projects/p1/model", headers=auth("platform")).json
    assert model["version"] == 1 and model["n_labels"] == 4


def test_a_label_beyond_the_redundancy_counts_and_raises_the_labels_wanted(client, auth, r,
                                                                             pool):
    """An item finished through a lease still takes a label without a lease: both count,
    it wants the two it holds, and it stays labeled."""
    task = next_task(client, auth, eid="e1").json["task"]
    client.post(f"/v1/tasks/{task['id']}/label", json={"label": "pos"}, headers=auth("platform"))
    body = post_labels(client, auth, [{"item_id": task["item_id"], "label": "neg",
                                       "expert_id": "e2"}]).json
    assert body["counted"] == 1
    item = client.get(f"/v1/projects/p1/items/{task['item_id']}", headers=auth("platform")).json
    assert (item["status"], item["labels_done"], item["labels_wanted"]) == ("labeled", 2, 2)
    check_store(r, "p1")


def test_a_label_without_a_lease_ends_the_experts_own_lease(client, auth, r, pool):
    """The expert holding a lease on the item labels it elsewhere: the label counts, the
    lease ends, a label through it is then recorded not counted; the same label again is a
    duplicate, another one refused."""
    task = next_task(client, auth, eid="e1").json["task"]
    record = {"item_id": task["item_id"], "label": "pos", "expert_id": "e1"}
    assert post_labels(client, auth, [record]).json["counted"] == 1
    assert r.hget(K.task_key("p1", task["id"]), "st") == "released"
    late = client.post(f"/v1/tasks/{task['id']}/label", json={"label": "pos"},
                       headers=auth("platform"))
    assert_problem(late, 409, "recorded, not counted")
    assert post_labels(client, auth, [record]).json["duplicates"] == 1
    other = post_labels(client, auth, [{**record, "label": "neg"}]).json
    assert other["counted"] == 0 and "a recorded label is not changed" in other["rejected"][0][
        "detail"]
    # an expert's lease label and then the same label without a lease: a duplicate
    second = next_task(client, auth, eid="e2").json["task"]
    client.post(f"/v1/tasks/{second['id']}/label", json={"label": "neg"},
                headers=auth("platform"))
    assert post_labels(client, auth, [{"item_id": second["item_id"], "label": "neg",
                                       "expert_id": "e2"}]).json["duplicates"] == 1
    assert client.get("/v1/projects/p1/stats", headers=auth("platform")).json["labels"] == {
        "counted": 2, "late": 1, "last_hour": 2}
    check_store(r, "p1")


def test_comment_and_answer_are_stored_and_exported(client, auth, pool):
    """Both travel with a leased label and with one posted without a lease, and come back
    in the export exactly as sent."""
    answer = {"corrected": "the output, fixed", "rubric": [4, 5, 3], "ok": None, "π": 3.14}
    task = next_task(client, auth, eid="e1").json["task"]
    response = client.post(f"/v1/tasks/{task['id']}/label", headers=auth("platform"), json={
        "label": "pos", "comment": "näive wording ✓", "answer": answer})
    assert response.status_code == 201, response.json
    post_labels(client, auth, [{"item_id": "i5", "label": "neg", "source": "x",
                                "comment": "seed", "answer": ["a", 1]},
                               {"item_id": "i4", "label": "neg", "source": "y",
                                "answer": False}])
    labels = export(client, auth)["labels"]
    assert (labels[0]["comment"], labels[0]["answer"]) == ("näive wording ✓", answer)
    assert (labels[1]["comment"], labels[1]["answer"]) == ("seed", ["a", 1])
    assert labels[2]["answer"] is False and "comment" not in labels[2]


@pytest.mark.parametrize("field, value, words", [
    ("comment", "é" * (MAX_COMMENT_BYTES // 2 + 1), ("comment", "10240 bytes")),
    ("comment", 42, ("comment", "text")),
    ("answer", {"text": "x" * MAX_ANSWER_BYTES}, ("answer", "65536 bytes")),
])
def test_a_comment_or_answer_too_big_is_a_422_naming_it(client, auth, pool, field, value,
                                                        words):
    """Over its limit (UTF-8 bytes), or not text: a problem whose errors name the field;
    nothing is recorded and the lease stays open."""
    task = next_task(client, auth, eid="e1").json["task"]
    response = client.post(f"/v1/tasks/{task['id']}/label", headers=auth("platform"),
                           json={"label": "pos", field: value})
    body = assert_problem(response, 422, *words)
    assert body["errors"][0]["field"] == field
    assert export(client, auth)["labels"] == []


def test_the_idempotency_key_covers_comment_and_answer(client, auth, pool):
    """A retry with the key replays; the same key with another comment is a 422."""
    task = next_task(client, auth, eid="e1").json["task"]
    headers = {**auth("platform"), "Idempotency-Key": "k1"}
    body = {"label": "pos", "comment": "first"}
    first = client.post(f"/v1/tasks/{task['id']}/label", json=body, headers=headers)
    again = client.post(f"/v1/tasks/{task['id']}/label", json=body, headers=headers)
    assert first.status_code == again.status_code == 201 and first.json == again.json
    other = client.post(f"/v1/tasks/{task['id']}/label", headers=headers,
                        json={**body, "comment": "second"})
    assert_problem(other, 422, "comment or answer")


def test_posting_labels_needs_a_platform_token(client, auth, pool, settings):
    """An expert token is refused (403), no token is a 401, an unknown project a 404, more
    records than the batch limit a 413."""
    record = {"item_id": "i0", "label": "pos", "expert_id": "e1"}
    assert_problem(post_labels(client, auth, [record], role="expert"), 403, "platform")
    assert_problem(client.post("/v1/projects/p1/labels", json={"labels": [record]}), 401)
    assert_problem(post_labels(client, auth, [record], pid="nope"), 404)
    too_many = [record] * (settings.max_batch_items + 1)
    assert_problem(post_labels(client, auth, too_many), 413, "TASKRANK_MAX_BATCH_ITEMS")
    assert_problem(client.post("/v1/projects/p1/labels", json={"labels": []},
                               headers=auth("platform")), 422, "labels")
    assert post_labels(client, auth, [record], role="admin").json["counted"] == 1


def test_a_label_on_a_withdrawn_item_is_recorded_not_counted(client, auth, r, pool):
    """The record is kept in the log (counted false), the answer says so, a retry is a
    duplicate."""
    client.delete("/v1/projects/p1/items/i0", headers=auth("platform"))
    record = {"item_id": "i0", "label": "pos", "expert_id": "e1"}
    body = post_labels(client, auth, [record]).json
    assert body["counted"] == 0 and body["not_counted"] == [
        {"index": 0, "id": "i0", "detail": "item 'i0' was withdrawn: the label is recorded, "
                                           "not counted"}]
    assert post_labels(client, auth, [record]).json["duplicates"] == 1
    labels = export(client, auth)["labels"]
    assert [(x["item_id"], x["counted"]) for x in labels] == [("i0", False)]
    stats = client.get("/v1/projects/p1/stats", headers=auth("platform")).json
    assert stats["labels"]["late"] == 1 and stats["items"]["withdrawn"] == 1
    check_store(r, "p1")
