"""Fixtures of the API fuzz tests: the --fuzz-examples option, seeded data, the loaded
schema with its configuration, and the rules the document states in words.

The data is seeded once per module (it trains a model) and restored before each test from
a DUMP of every key, so each operation is fuzzed from the same state.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass, field

import pytest
import schemathesis
from jsonschema import Draft202012Validator

from taskrank.queue.connection import connect, connect_rq
from taskrank.queue.settings import Settings
from taskrank.queue.tokens import create_token
from taskrank.queue.worker import InProcessWorker, task_queues
from taskrank.server import create_app
from tests.server import helpers

DEFAULT_EXAMPLES = 12  # per operation and generation mode: the module stays well under 60 s
N_FEATURES = 3  # the seeded projects' feature length, fixed by their first items
LONG_PID = ("long.project_id-" * 8)[:128]  # the longest id: job ids hold it in hex
BATCH = "POST /v1/projects/{pid}/items"
LABEL_BATCH = "POST /v1/projects/{pid}/labels"
# Label Studio sends its project's labeling config; the document can say only in words that
# it must hold a <Choices> tag whose values are the taskrank project's labels.
WEBHOOK_PUT = "PUT /v1/projects/{pid}/webhooks/{name}"
LS_CONFIG = {"POST /ls/{pid}/setup": "schema", "POST /ls/{pid}/predict": "label_config"}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--fuzz-examples", type=int, default=DEFAULT_EXAMPLES, metavar="N",
                     help="examples per operation and generation mode in tests/fuzz "
                          f"(default {DEFAULT_EXAMPLES}; `make bench` runs 200)")


@dataclass
class Seed:
    """Ids that exist in Redis, so generated requests reach real code paths."""

    ids: dict[str, list[str]]  # path parameter name -> existing values
    expert_ids: list[str]
    labels: list[str]
    tokens: dict[str, str]  # role -> token (the expert token acts for e1)
    snapshot: dict[str, tuple[bytes, int]] = field(default_factory=dict, repr=False)

    def auth(self, role: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}


@pytest.fixture(scope="module")
def fuzz_settings(redis_server, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(redis_url=redis_server.url, data_dir=str(tmp_path_factory.mktemp("fuzz")))


@pytest.fixture(scope="module")
def fuzz_app(fuzz_settings: Settings):
    return create_app(fuzz_settings)


@pytest.fixture(scope="module")
def seeded(fuzz_settings: Settings, fuzz_app) -> Seed:
    """A project with items, labels and a trained model, two experts, open, labeled and
    released leases, a finished and a queued job; and a snapshot of every key."""
    binary = connect_rq(fuzz_settings)
    binary.flushdb()
    r = connect(fuzz_settings)
    tokens = {"admin": create_token(r, "admin"), "platform": create_token(r, "platform"),
              "expert": create_token(r, "expert", "e1")}
    seed = Seed(ids={}, expert_ids=["e1", "e2"], labels=helpers.LABELS, tokens=tokens)
    client, auth = fuzz_app.test_client(), seed.auth
    helpers.make_project(client, auth, strategy={"retrain": {"min_labels": 4}})
    items = with_features(helpers.make_items(12, skills=lambda i: ["cardio"] * (i % 3 == 0)))
    assert helpers.post_items(client, auth, items).status_code == 200
    helpers.make_expert(client, auth, "e1", skills={"cardio": 0.8})
    helpers.make_expert(client, auth, "e2")
    labeled = []
    for n in range(4):
        labeled.append(helpers.next_task(client, auth, eid="e2").json["task"])
        response = client.post(f"/v1/tasks/{labeled[-1]['id']}/label", headers=auth(),
                               json={"label": helpers.LABELS[n % 2]})
        assert response.status_code == 201, response.json
    trained = client.post("/v1/projects/p1/retrain", headers=auth()).json["job_id"]
    InProcessWorker(task_queues(fuzz_settings, binary), connection=binary).work(
        burst=True, logging_level="WARNING")
    assert client.get("/v1/projects/p1/model", headers=auth()).json["version"] is not None
    released = helpers.next_task(client, auth, eid="e2").json["task"]["id"]
    assert client.post(f"/v1/tasks/{released}/release", headers=auth()).status_code == 200
    leased = [helpers.next_task(client, auth, eid="e1").json["task"] for _ in range(2)]
    queued = client.post("/v1/projects/p1/retrain", headers=auth()).json["job_id"]
    helpers.make_project(client, auth, LONG_PID)
    assert helpers.post_items(client, auth, with_features(helpers.make_items(3)),
                              LONG_PID).status_code == 200
    leased.append(helpers.next_task(client, auth, LONG_PID, "e1").json["task"])
    long_job = client.post(f"/v1/projects/{LONG_PID}/retrain", headers=auth()).json["job_id"]
    # A webhook to a loopback port where nothing listens (no worker runs after this anyway).
    assert client.put("/v1/projects/p1/webhooks/w1", headers=auth(), json={
        "url": "http://127.0.0.1:9/hooks", "events": ["item.finished", "budget.exhausted"],
        "secret": "a fuzz secret of 24 chars"}).status_code == 201
    seed.ids = {"pid": ["p1", LONG_PID],
                "iid": [leased[0]["item_id"], labeled[0]["item_id"], "i11"],
                "eid": ["e1", "e2"],
                "tid": [task["id"] for task in leased] + [labeled[0]["id"], released],
                "jid": [trained, queued, long_job], "name": ["w1"]}
    seed.snapshot = {key: (binary.dump(key), binary.pttl(key)) for key in binary.keys("*")}
    return seed


def with_features(items: list[dict]) -> list[dict]:
    """The items with features of N_FEATURES values (which fixes the project's length)."""
    return [{**item, "features": [float(index), 1.0, -0.5]} for index, item in enumerate(items)]


@pytest.fixture
def seed(seeded: Seed, fuzz_settings: Settings) -> Seed:
    """The seeded data, restored from the snapshot before the test."""
    binary = connect_rq(fuzz_settings)
    binary.flushdb()
    with binary.pipeline(transaction=False) as pipe:
        for key, (dumped, ttl) in seeded.snapshot.items():
            # replace: a background thread may have written a key since the flush
            pipe.restore(key, max(ttl, 0), dumped, replace=True)
        pipe.execute()
    binary.close()
    return seeded


# Every check at schemathesis' defaults but one addition: 413 is how the API refuses a batch
# over its item limit or a body over its byte limit (DESIGN §3), so it counts as refusing a
# request the document calls invalid (maxItems).
REFUSALS = schemathesis.Config.from_dict({}).projects.default.checks.negative_data_rejection
CONFIG = {
    "generation": {"with-security-parameters": False},
    "checks": {"negative_data_rejection": {"expected-statuses": [
        *REFUSALS.expected_statuses, "413"]}},
}


@pytest.fixture(scope="module")
def schema(fuzz_app, seeded: Seed) -> schemathesis.BaseSchema:
    """The app's own /openapi.json, with every check at schemathesis' defaults (no
    schemathesis.toml is read) and no generated credentials: each test sends the token it
    means."""
    config = schemathesis.Config.from_dict(CONFIG)
    return schemathesis.openapi.from_wsgi("/openapi.json", fuzz_app, config=config)


# --- the rules the document states in words ---------------------------------------------------
# A static document cannot list a project's labels or the feature length its first item
# fixed, nor say that probabilities sum to 1; it states them in descriptions.  Like the
# realistic values schemathesis asks for in its configuration, valid (positive) requests
# follow those rules here too, drawn from the seeded projects: without this, almost every
# generated label and probability row would be refused, and rightly.
def follow_stated_rules(case, seed: Seed, rng: random.Random) -> None:
    """Make a generated request follow the rules its document states in words (positive
    requests); a negative batch keeps only its items that break the Item schema, so the
    request tests that those are refused (the others would be stored)."""
    body, label = case.body, f"{case.method.upper()} {case.operation.path}"
    if not isinstance(body, dict) or case.meta is None:
        return
    negative = case.meta.generation.mode.is_negative
    if not negative:
        follow_idempotency_rule(case)
    if label == BATCH and isinstance(body.get("items"), list):
        if negative:
            invalid = [raw for raw in body["items"] if not item_validator(case).is_valid(raw)]
            body["items"] = invalid or body["items"]
        else:
            for raw in body["items"]:
                follow_item_rules(raw, seed, rng)
    elif label == LABEL_BATCH and isinstance(body.get("labels"), list):
        if negative:  # likewise for label records
            invalid = [raw for raw in body["labels"]
                       if not record_validator(case).is_valid(raw)]
            body["labels"] = invalid or body["labels"]
        else:
            for raw in body["labels"]:
                follow_record_rules(raw, seed, rng)
    elif negative:
        return
    elif label in LS_CONFIG:
        body[LS_CONFIG[label]] = ls_config(seed.labels)
    elif label == WEBHOOK_PUT:  # the url has a host; a whsec_ secret is valid base64
        body["url"], body["secret"] = "https://receiver.test/hook", "s" * 24
    elif "label" in body:
        body["label"] = rng.choice(seed.labels)
    elif "expert_id" in body and rng.random() < 0.5:
        body["expert_id"] = rng.choice(seed.expert_ids)


def ls_config(labels: list[str]) -> str:
    """A Label Studio labeling config choosing among ``labels``."""
    choices = "".join(f'<Choice value="{label}"/>' for label in labels)
    return (f'<View><Text name="text" value="$text"/><Choices name="c" toName="text">'
            f"{choices}</Choices></View>")


def follow_item_rules(raw: object, seed: Seed, rng: random.Random) -> None:
    """One probability per project label, summing to 1; the project's feature length; a
    gold label among the project's labels."""
    if not isinstance(raw, dict):
        return
    k = len(seed.labels)
    for name, row in (raw.get("predictions") or {}).items():
        row = (row + [0.0] * k)[:k]
        total = math.fsum(row)
        raw["predictions"][name] = [p / total for p in row] if total > 0 else [1 / k] * k
    if isinstance(raw.get("features"), list):
        raw["features"] = (raw["features"] * N_FEATURES)[:N_FEATURES]
    if raw.get("gold") is not None:
        raw["gold"] = rng.choice(seed.labels)


def follow_idempotency_rule(case) -> None:
    """A label's Idempotency-Key is reused only with the same body (another body is a 422,
    as the document says): the key is made from the task and the body, so a repeated
    request replays and a new one gets its own key."""
    headers = case.headers or {}
    if "Idempotency-Key" in headers and "tid" in (case.path_parameters or {}):
        request = json.dumps([case.path_parameters["tid"], case.body], sort_keys=True)
        headers["Idempotency-Key"] = hashlib.sha256(request.encode()).hexdigest()[:40]


def follow_record_rules(raw: object, seed: Seed, rng: random.Random) -> None:
    """A label among the project's, a declared expert; an existing item half the time (a
    record of another item is rejected, the batch still answered 200)."""
    if not isinstance(raw, dict):
        return
    raw["label"] = rng.choice(seed.labels)
    if raw.get("expert_id") is not None:
        raw["expert_id"] = rng.choice(seed.expert_ids)
    if rng.random() < 0.5:
        raw["item_id"] = rng.choice(seed.ids["iid"])


def record_validator(case) -> Draft202012Validator:
    components = case.operation.schema.raw_schema["components"]
    return Draft202012Validator({"$ref": "#/components/schemas/LabelRecord",
                                 "components": components},
                                format_checker=Draft202012Validator.FORMAT_CHECKER)


def item_validator(case) -> Draft202012Validator:
    components = case.operation.schema.raw_schema["components"]
    return Draft202012Validator({"$ref": "#/components/schemas/Item", "components": components})


@pytest.fixture
def fuzz_examples(request: pytest.FixtureRequest) -> int:
    """--fuzz-examples (the option exists when tests/fuzz is named on the command line)."""
    return request.config.getoption("fuzz_examples", default=DEFAULT_EXAMPLES)
