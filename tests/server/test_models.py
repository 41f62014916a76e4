"""GET /v1/projects/{pid}/model over HTTP: biased cross-validation and the unbiased
exploration estimate, labeled as such and as documented."""

from __future__ import annotations

import json
import math

from taskrank.queue import keys as K
from taskrank.queue.quality import CV_BASIS, EXPLORATION_BASIS
from tests.cluster import both_backends
from tests.server.helpers import make_expert, make_items, make_project, next_task, post_items
from tests.server.test_openapi import Checker

pytestmark = both_backends  # on the single Redis and on the Redis Cluster


def _label_next(client, auth, r, n, explore=False):
    """Lease and label ``n`` tasks over HTTP; ``explore`` marks each lease as CLAIM marks
    exploration leases."""
    for index in range(n):
        task = next_task(client, auth).json["task"]
        if explore:
            r.hset(K.task_key("p1", task["id"]), "ex", 1)
        response = client.post(f"/v1/tasks/{task['id']}/label", headers=auth("platform"),
                               json={"label": ["neg", "pos"][index % 2]})
        assert response.status_code == 201, response.json


def test_model_reports_both_estimates_with_their_basis(client, auth, r, run_jobs):
    """Before training the exploration block is null with n 0; after exploration labels
    and a retrain it pools them, and both answers match the OpenAPI document."""
    check = Checker(json.loads(client.get("/openapi.json").get_data(as_text=True)))
    make_project(client, auth, strategy={"retrain": {"every_labels": 10, "min_labels": 5}})
    post_items(client, auth, make_items(40))
    make_expert(client, auth, capacity=50)
    before = check("/v1/projects/{pid}/model", "get",
                   client.get("/v1/projects/p1/model", headers=auth("platform")))
    assert before["version"] is None and before["metrics_basis"] == CV_BASIS
    assert (before["exploration"]["accuracy"], before["exploration"]["std_error"],
            before["exploration"]["n"]) == (None, None, 0)
    _label_next(client, auth, r, 10)
    run_jobs()
    _label_next(client, auth, r, 4, explore=True)
    assert client.post("/v1/projects/p1/retrain", headers=auth("platform")).status_code == 202
    run_jobs()
    after = check("/v1/projects/{pid}/model", "get",
                  client.get("/v1/projects/p1/model", headers=auth("platform")))
    explored = after["exploration"]
    assert after["version"] == 2 and after["metrics"]["accuracy"] is not None
    assert explored["n"] == 4 and explored["versions"] == [1]
    assert explored["mean_n_labels"] == 10 and explored["basis"] == EXPLORATION_BASIS
    p = explored["accuracy"]
    assert p * 4 == round(p * 4)
    q = (p * 4 + 2) / 8  # Agresti-Coull
    assert explored["std_error"] == round(math.sqrt(q * (1 - q) / 8), 4)
