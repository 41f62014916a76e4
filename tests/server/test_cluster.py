"""The API flows on a Redis Cluster of 3 masters (tests/cluster.py), over real HTTP: projects
whose slots lie on different masters, ingest, claims, labels with and without a lease,
export, withdraw; retrain, re-score, backfill and webhooks on a real RQ worker whose queue is
on the single Redis; ``taskrank serve`` with its embedded Redis for RQ only; and what
refuses a cluster without a Redis for RQ."""

from __future__ import annotations

import json

import pytest

from taskrank.client import Client
from taskrank.queue import keys as K
from taskrank.queue.connection import ClusterClient, connect, is_cluster
from taskrank.queue.projects import create_project
from taskrank.queue.settings import Settings
from taskrank.scripts import backfill, ingest, worker
from taskrank.scripts import tokens as token_command
from taskrank.server import create_app
from tests.cluster import cluster_only, redis_env, start_cluster
from tests.faults.serve import ServeProcess
from tests.invariants import check_store
from tests.receiver import SECRET, Receiver
from tests.scripts.helpers import http_server, rq_worker
from tests.server.helpers import LABELS, make_items
from tests.waits import wait_for

pytestmark = cluster_only
JOB_TIMEOUT = 60.0


def on_every_master(r) -> list[str]:
    """Project ids whose slots lie on different masters, one per master."""
    first = {}
    for n in range(200):
        first.setdefault(r.get_node_from_key(K.project_key(f"c{n}")).name, f"c{n}")
    return sorted(first.values())


@pytest.fixture
def api(settings, r, tokens):
    """An admin client of the app on the cluster, served over HTTP."""
    with http_server(settings) as url, Client(url, tokens["admin"], retries=0,
                                              retries_503=0) as client:
        yield client


def new_project(api: Client, pid: str, n_items: int = 12) -> None:
    api.post("/v1/projects", {"id": pid, "labels": LABELS})
    items = make_items(n_items, seed=len(pid), skills=lambda i: ["x"] if i % 3 == 0 else [])
    assert api.post(f"/v1/projects/{pid}/items", {"items": items})["created"] == n_items


def wait_job(api: Client, job_id: str) -> dict:
    """The job's view once it finished (fails the test when it failed)."""
    def finished() -> dict | None:
        view = api.get(f"/v1/jobs/{job_id}")
        assert view["status"] != "failed", view
        return view if view["status"] == "finished" else None

    return wait_for(finished, JOB_TIMEOUT, f"job {job_id}")


def test_projects_on_every_master_serve_the_labeling_loop(api, r):
    """Three projects on three masters: ingest, claims (one and n at once), labels through a
    lease and without one, extend, release, withdraw, export and stats each hold, and the
    reads across projects (the list, an expert's open tasks, metrics) see them all."""
    pids = on_every_master(r)
    assert len({r.get_node_from_key(K.project_key(pid)).name for pid in pids}) == 3
    for pid in pids:
        new_project(api, pid)
    api.put("/v1/experts/e1", {"skills": {"x": 0.9}, "capacity": 10})
    api.put("/v1/experts/e2", {"skills": {}, "capacity": 10})
    for pid in pids:
        one = api.post(f"/v1/projects/{pid}/tasks/next", {"expert_id": "e1"})["task"]
        three = api.post(f"/v1/projects/{pid}/tasks/next", {"expert_id": "e2", "n": 3})["tasks"]
        assert len(three) == 3 and one["item_id"] not in {task["item_id"] for task in three}
        for task in [one, *three[:2]]:
            answer = api.post(f"/v1/tasks/{task['id']}/label", {"label": "pos",
                                                                 "seconds_spent": 3})
            assert answer["counted"] is True, answer
        assert api.post(f"/v1/tasks/{three[2]['id']}/extend")["task"]["state"] == "open"
        released = api.post(f"/v1/tasks/{three[2]['id']}/release")["task"]
        assert released["state"] == "released"
        imported = api.post(f"/v1/projects/{pid}/labels", {"labels": [
            {"item_id": "i10", "label": "neg", "expert_id": "e2"},
            {"item_id": "i11", "label": "pos", "source": "import-1"}]})
        assert imported["counted"] == 2, imported
        assert api.delete(f"/v1/projects/{pid}/items/i9")["withdrawn"] is True
        exported = api.get(f"/v1/projects/{pid}/labels")["labels"]
        assert sum(label["counted"] for label in exported) == 5
        finished = api.get(f"/v1/projects/{pid}/labels?aggregated=true")["labels"]
        assert {"i10", "i11"} <= {record["item_id"] for record in finished}
        stats = api.get(f"/v1/projects/{pid}/stats")
        assert stats["labels"]["counted"] == 5 and stats["items"]["withdrawn"] == 1
        assert check_store(r, pid)["counted"] == 5
    assert {project["id"] for project in api.get("/v1/projects")["projects"]} == set(pids)
    assert api.get("/v1/experts/e1/tasks")["tasks"] == []  # e1 labeled each of its leases
    metrics = api.send("GET", "/metrics").body
    assert all(f'taskrank_labels_total{{project="{pid}",outcome="counted"}} 5' in metrics
               for pid in pids)


def test_retrain_rescore_backfill_and_webhooks_run_on_a_worker(api, r, settings,
                                                               monkeypatch, capsys):
    """With a worker whose queue is on the single Redis: a retrain trains and re-scores
    the project on the cluster, its webhooks are delivered, and ``taskrank backfill``
    re-scores it again over the worker."""
    pid = on_every_master(r)[1]
    new_project(api, pid, n_items=40)
    api.put("/v1/experts/e1", {"skills": {"x": 0.9}, "capacity": 10})
    with Receiver() as receiver, rq_worker(settings, r):
        api.put(f"/v1/projects/{pid}/webhooks/w", {
            "url": receiver.url, "events": ["item.finished", "model.trained"],
            "secret": SECRET})
        api.post(f"/v1/projects/{pid}/labels", {"labels": [
            {"item_id": f"i{n}", "label": LABELS[n % 2], "expert_id": "e1"}
            for n in range(16)]})
        trained = wait_job(api, api.post(f"/v1/projects/{pid}/retrain")["job_id"])
        assert trained["result"]["version"] == 1 and trained["result"]["n_labels"] == 16
        wait_job(api, trained["result"]["rescore_job_id"])
        assert api.get(f"/v1/projects/{pid}/model")["version"] == 1
        wait_for(lambda: {request.payload["type"] for request in receiver.requests}
                 == {"item.finished", "model.trained"}, JOB_TIMEOUT, "both events")
        for name, value in redis_env(settings).items():
            monkeypatch.setenv(name, value)
        assert backfill.main([pid, "--json"]) == 0, capsys.readouterr().err
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["items_done"] == summary["items"] == 24, summary  # the pending ones
    assert check_store(r, pid)["counted"] == 16


def test_commands_refuse_a_cluster_without_a_redis_for_rq(settings, r, monkeypatch,
                                                          capsys, tmp_path):
    """TASKRANK_REDIS_URL naming a cluster (found by asking it) and no
    TASKRANK_RQ_REDIS_URL: ``taskrank worker``, ``backfill`` and ``ingest --direct`` exit 2
    saying what to set; ``token create``, which needs no job queue, works."""
    monkeypatch.setenv("TASKRANK_REDIS_URL", settings.redis_url)
    assert worker.main(["--burst"]) == 2
    assert "TASKRANK_RQ_REDIS_URL" in capsys.readouterr().err
    pid = on_every_master(r)[0]
    create_project(r, {"id": pid, "labels": LABELS})
    assert backfill.main([pid]) == 2
    assert "TASKRANK_RQ_REDIS_URL" in capsys.readouterr().err
    items = tmp_path / "items.jsonl"
    items.write_text(json.dumps(make_items(1)[0]) + "\n")
    assert ingest.main([pid, str(items), "--direct"]) == 2
    assert "TASKRANK_RQ_REDIS_URL" in capsys.readouterr().err
    assert token_command.main(["create", "--role", "platform"]) == 0


def test_the_cluster_is_found_by_asking_unless_settings_say(settings, redis_server):
    """is_cluster asks the server (INFO cluster) when TASKRANK_REDIS_CLUSTER is unset: the
    cluster is one, the single Redis none; set, it is believed without asking."""
    assert is_cluster(Settings(redis_url=settings.redis_url)) is True
    assert isinstance(connect(Settings(redis_url=settings.redis_url)), ClusterClient)
    assert is_cluster(Settings(redis_url=redis_server.url)) is False
    assert is_cluster(Settings(redis_url="redis://127.0.0.1:1", redis_cluster=False)) is False


def test_a_cluster_that_stops_answering_is_a_503(settings, tmp_path_factory, tokens):
    """Every node of the cluster gone: requests answer 503 problems with Retry-After, as
    for a single Redis (redis-py's RedisClusterUnreachableError is no RedisError; the
    client raises it as a ConnectionError)."""
    own = start_cluster(tmp_path_factory)
    try:
        app = create_app(settings.replace(redis_url=own.url)).test_client()
        token = {"Authorization": f"Bearer {tokens['admin']}"}
        assert app.get("/v1/projects", headers=token).status_code == 401  # another store
    finally:
        own.stop()
    response = app.get("/v1/projects", headers=token)
    assert response.status_code == 503 and response.mimetype == "application/problem+json"
    assert response.headers["Retry-After"] == "1"


def test_serve_on_a_cluster_starts_a_redis_for_rq_only(settings, r, tmp_path):
    """``taskrank serve`` with TASKRANK_REDIS_URL naming a cluster and no RQ Redis: it
    starts an embedded Redis for RQ's queue only (in the data dir's ``rq`` folder), its
    worker retrains a project whose data stays on the cluster, and it stops clean."""
    serve = ServeProcess(tmp_path / "data", "serve", TASKRANK_REDIS_URL=settings.redis_url)
    try:
        serve.wait_ready()
        assert "for RQ's queue only" in serve.out.read_text()
        assert (tmp_path / "data" / "rq" / "redis.url").exists()
        api, pid = serve.api, on_every_master(r)[2]
        new_project(api, pid, n_items=30)
        api.put("/v1/experts/e1", {"skills": {"x": 0.9}, "capacity": 10})
        api.post(f"/v1/projects/{pid}/labels", {"labels": [
            {"item_id": f"i{n}", "label": LABELS[n % 2], "expert_id": "e1"}
            for n in range(12)]})
        job = api.post(f"/v1/projects/{pid}/retrain")["job_id"]
        assert wait_job(api, job)["result"]["version"] == 1
        assert r.hget(K.model_meta_key(pid), "version") == "1"  # on the cluster
        assert serve.stop() == 0
        serve.wait_nothing_left()
    finally:
        serve.kill_leftovers()
