"""Small builders shared by the HTTP tests."""

from __future__ import annotations

import numpy as np

LABELS = ["neg", "pos"]


def make_project(client, auth, pid="p1", **extra):
    body = {"id": pid, "labels": LABELS, **extra}
    response = client.post("/v1/projects", json=body, headers=auth("admin"))
    assert response.status_code == 201, response.json
    return response.json


def make_items(n, seed=0, skills=None, k=2, models=("m1",)):
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        preds = {name: [round(float(p), 6) for p in rng.dirichlet(np.ones(k))]
                 for name in models}
        for name in preds:  # make rounding exact
            preds[name][-1] = round(1.0 - sum(preds[name][:-1]), 6)
        item = {"id": f"i{i}", "predictions": preds, "payload": {"text": f"output {i}"}}
        if skills:
            item["skills"] = skills(i)
        items.append(item)
    return items


def post_items(client, auth, items, pid="p1"):
    response = client.post(f"/v1/projects/{pid}/items", json={"items": items},
                           headers=auth("platform"))
    return response


def make_expert(client, auth, eid="e1", skills=None, capacity=5):
    response = client.put(f"/v1/experts/{eid}", json={"skills": skills or {}, "capacity": capacity},
                          headers=auth("admin"))
    assert response.status_code in (200, 201), response.json
    return response.json


def next_task(client, auth, pid="p1", eid="e1"):
    return client.post(f"/v1/projects/{pid}/tasks/next", json={"expert_id": eid},
                       headers=auth("platform"))


def assert_problem(response, status: int, *words: str) -> dict:
    """The answer is an RFC 9457 problem of ``status`` whose detail names every word."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.json
    assert body["status"] == status and body["title"] and body["type"] and body["detail"]
    for word in words:
        assert word in body["detail"], body["detail"]
    return body
