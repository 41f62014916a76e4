"""A real Label Studio session against taskrank (not part of ``make test``).

    python3 -m venv /tmp/lsvenv && /tmp/lsvenv/bin/pip install 'label-studio==1.23.*'
    .venv/bin/python scripts/label_studio_session.py --ls /tmp/lsvenv/bin/label-studio

Starts ``taskrank serve`` and a headless Label Studio (its own sqlite data dir) on free
ports, with a recording proxy between them; creates a taskrank project and a Label Studio
project with a classification config (breast_cancer: benign / malignant, the 30 features
in each task's ``data.features``), imports 40 tasks, connects taskrank as the project's ML
backend through Label Studio's API, then annotates 20 tasks through that API, always the
task Label Studio orders first by prediction score (its webhook turns each annotation into
a label without a lease).  It prints and writes (``--out``) the model version taskrank
reached and the order Label Studio then shows.  Every process it started is stopped by pid.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer

from taskrank.queue.embedded import free_port

CONFIG = ('<View><Text name="text" value="$text"/><Choices name="diagnosis" toName="text" '
          'choice="single"><Choice value="benign"/><Choice value="malignant"/></Choices></View>')
PID = "ls-demo"


def call(method: str, url: str, body: object = None, headers: dict | None = None,
         timeout: float = 120) -> tuple[int, object]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            text = answer.read().decode()
            return answer.status, json.loads(text) if text else None
    except urllib.error.HTTPError as error:
        text = error.read().decode()
        try:
            return error.code, json.loads(text)
        except ValueError:
            return error.code, text[:500]


def wait_for(url: str, seconds: float, headers: dict | None = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if call("GET", url, headers=headers, timeout=5)[0] < 500:
                return
        except OSError:
            pass
        time.sleep(1)
    raise RuntimeError(f"{url} did not answer within {seconds} s")


class Recorder(http.server.ThreadingHTTPServer):
    """Forwards every request to taskrank and keeps what Label Studio sent."""

    def __init__(self, port: int, target: str, folder: Path) -> None:
        self.target, self.folder, self.count = target, folder, 0
        folder.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", port), _Forward)


class _Forward(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's names
        self._forward()

    def do_POST(self) -> None:  # noqa: N802
        self._forward()

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() in (
            "content-type", "authorization", "user-agent")}
        request = urllib.request.Request(self.server.target + self.path, data=body or None,
                                         method=self.command, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=120) as answer:
                status, payload = answer.status, answer.read()
        except urllib.error.HTTPError as error:
            status, payload = error.code, error.read()
        self._record(body, status, payload)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _record(self, body: bytes, status: int, payload: bytes) -> None:
        with self.server.lock:
            self.server.count += 1
            number = self.server.count
        scheme = (self.headers.get("Authorization") or "none").split(" ", 1)[0]
        entry = {"method": self.command, "path": self.path, "auth_scheme": scheme,
                 "user_agent": self.headers.get("User-Agent"), "status": status,
                 "request": json.loads(body) if body else None,
                 "response": json.loads(payload) if payload else None}
        name = f"{number:04d}-{self.command.lower()}-{self.path.rsplit('/', 1)[-1] or 'root'}"
        (self.server.folder / f"{name}.json").write_text(json.dumps(entry, indent=1))

    def log_message(self, *args: object) -> None:
        pass


def start(command: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM to the process group it leads (its own children), then wait."""
    if process.poll() is None:
        os.killpg(process.pid, 15)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ls", default="/tmp/lsvenv/bin/label-studio")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--annotate", type=int, default=20)
    parser.add_argument("--out", default="label_studio_session.json")
    args = parser.parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="ls-session-"))
    processes: list[subprocess.Popen] = []
    recorder = None
    try:
        result = session(args, work, processes)
        recorder = result.pop("_recorder")
    finally:
        for process in reversed(processes):
            stop(process)
    if recorder:
        recorder.shutdown()
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("label_studio", "model", "order", "next_task",
                                             "order_follows_priority")}, indent=1))
    return 0


def session(args: argparse.Namespace, work: Path, processes: list) -> dict:
    tr_port, ls_port, proxy_port = free_port(), free_port(), free_port()
    admin = "tr_" + secrets.token_urlsafe(24)
    env = {**os.environ, "TASKRANK_PORT": str(tr_port), "TASKRANK_DATA_DIR": str(work / "var"),
           "TASKRANK_RUN_DIR": str(work / "run"), "TASKRANK_ADMIN_TOKEN": admin,
           "TASKRANK_REDIS_FSYNC": "everysec"}
    taskrank = f"http://127.0.0.1:{tr_port}"
    processes.append(start([sys.executable, "-m", "taskrank.scripts.cli", "serve"], env,
                           work / "taskrank.log"))
    wait_for(taskrank + "/healthz", 60)
    # The first hour: a shell without the server's TASKRANK_DATA_DIR finds its Redis.
    shell = {k: v for k, v in env.items() if k not in ("TASKRANK_DATA_DIR", "TASKRANK_PORT")}
    made = subprocess.run([sys.executable, "-m", "taskrank.scripts.cli", "token", "create",
                           "--role", "platform"], env=shell, cwd=work, capture_output=True,
                          text=True, check=True)
    token = made.stdout.strip().splitlines()[-1]
    tr_headers = {"Authorization": f"Bearer {admin}"}
    call("POST", taskrank + "/v1/projects", {"id": PID, "labels": ["benign", "malignant"]},
         tr_headers)

    recorder = Recorder(proxy_port, taskrank, work / "recorded")
    threading.Thread(target=recorder.serve_forever, daemon=True).start()

    ls_token = secrets.token_hex(20)
    ls_env = {**os.environ, "ML_BLOCK_LOCAL_IP": "false", "SSRF_PROTECTION_ENABLED": "false",
              "LABEL_STUDIO_BASE_DATA_DIR": str(work / "ls"), "DJANGO_DB": "sqlite",
              "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true"}
    processes.append(start([args.ls, "start", "--no-browser", "--port", str(ls_port),
                            "--data-dir", str(work / "ls"), "--username", "admin@example.com",
                            "--password", secrets.token_urlsafe(12), "--user-token", ls_token],
                           ls_env, work / "label-studio.log"))
    ls_url = f"http://127.0.0.1:{ls_port}"
    ls_headers = {"Authorization": f"Token {ls_token}"}
    wait_for(ls_url + "/api/projects", 300, ls_headers)
    # 'label-studio --version' starts Django and may hang on the network: ask the venv.
    python = str(Path(args.ls).with_name("python"))
    version = subprocess.run([python, "-c", "import importlib.metadata as m; "
                              "print(m.version('label-studio'))"], capture_output=True,
                             text=True, timeout=60).stdout

    status, project = call("POST", ls_url + "/api/projects", {
        "title": "taskrank session", "label_config": CONFIG,
        "sampling": "Uncertainty sampling"}, ls_headers)
    assert status == 201, (status, project)
    lsp = project["id"]
    X, y = load_breast_cancer(return_X_y=True)
    rng = np.random.default_rng(0)
    rows = rng.choice(len(y), args.tasks, replace=False)
    truth = {}
    tasks = [{"text": f"case {i}", "features": [round(float(v), 4) for v in X[i]]}
             for i in rows]
    status, imported = call("POST", f"{ls_url}/api/projects/{lsp}/import", tasks, ls_headers)
    assert status == 201, (status, imported)
    status, listed = call("GET", f"{ls_url}/api/tasks?project={lsp}&page_size=1000",
                          headers=ls_headers)
    for task in listed["tasks"]:
        index = next(i for i in rows if task["data"]["text"] == f"case {i}")
        truth[task["id"]] = ["malignant", "benign"][int(y[index])]  # sklearn: 0 malignant

    backend_url = f"http://taskrank:{token}@127.0.0.1:{proxy_port}/ls/{PID}"
    status, ml = call("POST", ls_url + "/api/ml", {
        "project": lsp, "url": backend_url, "title": "taskrank", "is_interactive": False,
        "auth_method": "BASIC_AUTH", "basic_auth_user": "taskrank",
        "basic_auth_pass": token}, ls_headers)
    assert status == 201, (status, ml)
    view = call("POST", ls_url + "/api/dm/views", {"project": lsp, "data": {
        "ordering": ["tasks:predictions_score"]}}, ls_headers)[1]

    annotated, after = [], []
    for n in range(args.annotate):
        if n % 10 == 0:
            retrieve(ls_url, lsp, ml["id"], ls_headers)
        # What Label Studio serves an annotator: uncertainty sampling, lowest score first.
        served = call("GET", f"{ls_url}/api/projects/{lsp}/next", headers=ls_headers)[1]
        first = next(t for t in ls_order(ls_url, lsp, view["id"], ls_headers, unlabeled=True)
                     if t["id"] == served["id"])
        status, answer = call("POST", f"{ls_url}/api/tasks/{first['id']}/annotations?project="
                              f"{lsp}", {"result": [{
                                  "from_name": "diagnosis", "to_name": "text",
                                  "type": "choices",
                                  "value": {"choices": [truth[first["id"]]]}}],
                                  "lead_time": 4.0}, ls_headers)
        assert status == 201, (status, answer)
        annotated.append({"task": first["id"], "score": first["score"],
                          "label": truth[first["id"]]})
    trained = call("POST", f"{ls_url}/api/ml/{ml['id']}/train", {}, ls_headers)
    model = wait_model(taskrank, tr_headers)
    retrieve(ls_url, lsp, ml["id"], ls_headers)
    next_task = call("GET", f"{ls_url}/api/projects/{lsp}/next", headers=ls_headers)[1]["id"]
    after = ls_order(ls_url, lsp, view["id"], ls_headers, unlabeled=False)
    queue = call("GET", f"{taskrank}/v1/projects/{PID}/queue?limit=100", headers=tr_headers)[1]
    export = call("GET", f"{ls_url}/api/projects/{lsp}/export?exportType=JSON",
                  headers=ls_headers)[1]
    (work / "ls-export.json").write_text(json.dumps(export))
    unlabeled = [t for t in after if not t["labeled"]]
    return {"_recorder": recorder, "workdir": str(work),
            "label_studio": version.strip().splitlines()[-1] if version else None,
            "model": {"version": model.get("version"), "n_labels": model.get("n_labels"),
                      "ls_model_version": unlabeled[0]["model_version"] if unlabeled else None,
                      "start_training": trained[0]},
            "annotated": annotated,
            "order": [f"{t['id']}:{t['score']}" for t in unlabeled], "next_task": next_task,
            "taskrank_queue": [(e["id"], round(e["priority"], 6)) for e in queue["items"]],
            "order_follows_priority": [str(t["id"]) for t in unlabeled] ==
            [e["id"] for e in queue["items"]],
            "labels_in_taskrank": call("GET", f"{taskrank}/v1/projects/{PID}/stats",
                                       headers=tr_headers)[1]}


def retrieve(ls_url: str, lsp: int, ml: int, headers: dict) -> None:
    """Data Manager -> Retrieve predictions, then Settings -> Predictions: use the backend's
    current model version (Label Studio 1.23 orders by the selected version's scores)."""
    status, answer = call("POST", f"{ls_url}/api/dm/actions?id=retrieve_tasks_predictions"
                          f"&project={lsp}", {"selectedItems": {"all": True, "excluded": []}},
                          headers)
    assert status == 200, (status, answer)
    version = call("GET", f"{ls_url}/api/ml/{ml}", headers=headers)[1]["model_version"]
    call("PATCH", f"{ls_url}/api/projects/{lsp}", {"model_version": version}, headers)


def ls_order(ls_url: str, lsp: int, view: int, headers: dict, unlabeled: bool) -> list[dict]:
    """The project's tasks as Label Studio's Data Manager orders them (prediction score)."""
    tasks = call("GET", f"{ls_url}/api/tasks?view={view}&project={lsp}&page_size=1000"
                 "&fields=all", headers=headers)[1]["tasks"]
    out = []
    for task in tasks:
        labeled = bool(task.get("total_annotations"))
        if unlabeled and labeled:
            continue
        preds = task.get("predictions") or []
        out.append({"id": task["id"], "score": task.get("predictions_score"),
                    "labeled": labeled,
                    "model_version": preds[-1].get("model_version") if preds else None})
    return out


def wait_model(taskrank: str, headers: dict, seconds: float = 120) -> dict:
    """The model once no retrain waits and its re-score finished."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        model = call("GET", f"{taskrank}/v1/projects/{PID}/model", headers=headers)[1]
        job = model.get("rescore_job_id")
        done = job and call("GET", f"{taskrank}/v1/jobs/{job}", headers=headers)[1].get(
            "status") == "finished"
        if model.get("version") and done:
            time.sleep(2)  # a retrain queued by the last labels may still run
            again = call("GET", f"{taskrank}/v1/projects/{PID}/model", headers=headers)[1]
            if again.get("version") == model["version"]:
                return model
        time.sleep(1)
    return call("GET", f"{taskrank}/v1/projects/{PID}/model", headers=headers)[1]


if __name__ == "__main__":
    sys.exit(main())
