"""Fixtures of the API fuzz tests: the --fuzz-examples option, seeded data, the loaded schema.

The data is seeded once per module (it trains a model) and restored before each test from
a DUMP of every key, so each operation is fuzzed from the same state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import schemathesis

from taskrank.queue.connection import connect, connect_binary
from taskrank.queue.settings import Settings
from taskrank.queue.tokens import create_token
from taskrank.queue.worker import InProcessWorker, task_queue
from taskrank.server import create_app
from tests.server import helpers

DEFAULT_EXAMPLES = 12  # per operation and generation mode: the module stays well under 60 s

# Operations that may refuse (422) a request the document calls valid, for what a schema
# cannot say; a 422 on valid data anywhere else fails the fuzz.
SEMANTIC_422 = {
    "POST /v1/projects/{pid}/items": "a probability vector has one entry per project label",
    "POST /v1/tasks/{tid}/label": "the label is one of the project's labels",
    "POST /v1/projects/{pid}/tasks/next": "an admin or platform token names the expert",
    "GET /v1/projects/{pid}/labels": "a cursor is the next_cursor of an earlier page",
    "POST /ls/{pid}/setup": "the labeling config is XML with the project's labels",
    "POST /ls/{pid}/predict": "the labeling config is XML with the project's labels",
}
# It stores a batch's valid items and lists each invalid one in `rejected` (DESIGN §3), so
# invalid items may get a 200: the fuzz test checks each was rejected instead.
BATCH = "POST /v1/projects/{pid}/items"
POSITIVE_ANSWERS = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]  # schemathesis'
LONG_PID = ("long.project_id-" * 8)[:128]  # the longest id: job ids hold it in hex


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
    binary = connect_binary(fuzz_settings)
    binary.flushdb()
    r = connect(fuzz_settings)
    tokens = {"admin": create_token(r, "admin"), "platform": create_token(r, "platform"),
              "expert": create_token(r, "expert", "e1")}
    seed = Seed(ids={}, expert_ids=["e1", "e2"], labels=helpers.LABELS, tokens=tokens)
    client, auth = fuzz_app.test_client(), seed.auth
    helpers.make_project(client, auth, strategy={"retrain": {"min_labels": 4}})
    items = helpers.make_items(12, skills=lambda i: ["cardio"] * (i % 3 == 0))
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
    InProcessWorker([task_queue(fuzz_settings, binary)], connection=binary).work(
        burst=True, logging_level="WARNING")
    assert client.get("/v1/projects/p1/model", headers=auth()).json["version"] is not None
    released = helpers.next_task(client, auth, eid="e2").json["task"]["id"]
    assert client.post(f"/v1/tasks/{released}/release", headers=auth()).status_code == 200
    leased = [helpers.next_task(client, auth, eid="e1").json["task"] for _ in range(2)]
    queued = client.post("/v1/projects/p1/retrain", headers=auth()).json["job_id"]
    helpers.make_project(client, auth, LONG_PID)
    assert helpers.post_items(client, auth, helpers.make_items(3), LONG_PID).status_code == 200
    leased.append(helpers.next_task(client, auth, LONG_PID, "e1").json["task"])
    long_job = client.post(f"/v1/projects/{LONG_PID}/retrain", headers=auth()).json["job_id"]
    seed.ids = {"pid": ["p1", LONG_PID],
                "iid": [leased[0]["item_id"], labeled[0]["item_id"], "i11"],
                "eid": ["e1", "e2"],
                "tid": [task["id"] for task in leased] + [labeled[0]["id"], released],
                "jid": [trained, queued, long_job]}
    seed.snapshot = {key: (binary.dump(key), binary.pttl(key)) for key in binary.keys("*")}
    return seed


@pytest.fixture
def seed(seeded: Seed, fuzz_settings: Settings) -> Seed:
    """The seeded data, restored from the snapshot before the test."""
    binary = connect_binary(fuzz_settings)
    binary.flushdb()
    with binary.pipeline(transaction=False) as pipe:
        for key, (dumped, ttl) in seeded.snapshot.items():
            # replace: a background thread may have written a key since the flush
            pipe.restore(key, max(ttl, 0), dumped, replace=True)
        pipe.execute()
    binary.close()
    return seeded


@pytest.fixture(scope="module")
def schema(fuzz_app, seeded: Seed) -> schemathesis.BaseSchema:
    """The app's own /openapi.json, with an explicit configuration (no schemathesis.toml is
    read): no generated credentials, since each test sends the token it means."""
    config = schemathesis.Config.from_dict({
        "generation": {"with-security-parameters": False},
        "operations": [
            {"include-name": list(SEMANTIC_422), "checks": {
                "positive_data_acceptance": {"expected-statuses": [*POSITIVE_ANSWERS, "422"]}}},
            {"include-name": BATCH, "checks": {"negative_data_rejection": {"enabled": False}}},
        ]})
    return schemathesis.openapi.from_wsgi("/openapi.json", fuzz_app, config=config)


@pytest.fixture
def fuzz_examples(request: pytest.FixtureRequest) -> int:
    """--fuzz-examples (the option exists when tests/fuzz is named on the command line)."""
    return request.config.getoption("fuzz_examples", default=DEFAULT_EXAMPLES)
