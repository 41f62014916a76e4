"""The floor of DESIGN §7: a bare Flask app doing one Lua claim and one Lua label write.

It calls taskrank's own ``claim`` and ``submit_label`` (one Lua script each) with the
project and experts loaded once and cached, and nothing else: no auth, no per-request
project or expert load, no validation, no aggregation or retrain trigger.  It answers on
the same paths as the real API so the same client loop drives both; what the real server
costs above it is its auth, validation, routing and bookkeeping.  Serve with
``gunicorn -w 2 'taskrank.scripts.bench.floor:create_app()'``.
"""

from __future__ import annotations

from flask import Flask, Response, request

from taskrank.queue import tasks
from taskrank.queue.connection import connect
from taskrank.queue.experts import load_expert
from taskrank.queue.projects import get_project
from taskrank.queue.settings import Settings


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    r = connect(settings)
    projects: dict[str, dict] = {}
    experts: dict[str, dict] = {}
    app = Flask(__name__)

    def project(pid: str) -> dict:
        if pid not in projects:
            projects[pid] = get_project(r, pid)
        return projects[pid]

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.post("/v1/projects/<pid>/tasks/next")
    def next_task(pid: str) -> dict | Response:
        eid = request.get_json()["expert_id"]
        if eid not in experts:
            experts[eid] = load_expert(r, eid)
        task = tasks.claim(r, project(pid), experts[eid], settings.claim_depth)
        return {"task": task} if task else Response(status=204)

    @app.post("/v1/tasks/<tid>/label")
    def label(tid: str) -> tuple[dict, int]:
        body = request.get_json()
        status, answer = tasks.submit_label(r, project(tasks.project_of_task(tid)), tid,
                                            body["label"], body["seconds_spent"])
        return answer, status

    return app
