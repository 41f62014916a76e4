"""GET /metrics: Prometheus text format 0.0.4, request metrics shared by every process
through Redis in batches, project gauges equal to the stats endpoint."""

from __future__ import annotations

import math
import re

import pytest

from taskrank.queue import keys as K
from taskrank.queue import metrics
from taskrank.queue.models import model_info
from taskrank.queue.retrain import enqueue_retrain
from taskrank.server import create_app
from tests.server.helpers import make_expert, make_items, make_project, next_task, post_items

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(rf"({_NAME})(?:\{{(.*)\}})? (\S+)")
_LABEL = re.compile(rf'\s*({_NAME})="((?:[^"\\]|\\.)*)"\s*(,|$)')
_TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


def parse(text: str) -> dict[str, dict]:
    """A strict reader of the text format: family -> {"type", "help", "samples"}; each
    sample is (name, labels, value). Fails on any line the format does not allow."""
    assert text.endswith("\n"), "the exposition ends with a line feed"
    families: dict[str, dict] = {}
    for number, line in enumerate(text[:-1].split("\n"), 1):
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            _, keyword, name, rest = line.split(" ", 3)
            assert re.fullmatch(_NAME, name), (number, line)
            family = families.setdefault(name, {"samples": []})
            assert not family["samples"], f"line {number}: {keyword} after samples of {name}"
            if keyword == "TYPE":
                assert rest in _TYPES, (number, line)
                family["type"] = rest
            else:
                family["help"] = rest
            continue
        match = _SAMPLE.fullmatch(line)
        assert match, f"line {number} is not a sample: {line!r}"
        name, raw_labels, raw_value = match.groups()
        labels, position = {}, 0
        while raw_labels and position < len(raw_labels):
            label = _LABEL.match(raw_labels, position)
            assert label, f"line {number}: bad labels {raw_labels!r}"
            key, value = label.group(1), label.group(2)
            labels[key] = re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)),
                                 value)
            position = label.end()
        value = float(raw_value.replace("+Inf", "inf"))
        family = _family_of(families, name)
        assert family is not None, f"line {number}: sample {name} has no # TYPE before it"
        family["samples"].append((name, labels, value))
    return families


def _family_of(families: dict, name: str) -> dict | None:
    if name in families:
        return families[name]
    for suffix in ("_bucket", "_sum", "_count"):
        base = name.removesuffix(suffix)
        if base != name and families.get(base, {}).get("type") == "histogram":
            return families[base]
    return None


def check_histograms(families: dict) -> None:
    """Buckets are cumulative, end with +Inf, and +Inf equals _count."""
    for base, family in families.items():
        if family.get("type") != "histogram":
            continue
        series: dict[tuple, dict] = {}
        for name, labels, value in family["samples"]:
            key = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
            entry = series.setdefault(key, {"buckets": []})
            if name.endswith("_bucket"):
                entry["buckets"].append((float(labels["le"].replace("+Inf", "inf")), value))
            else:
                entry[name.removeprefix(base)] = value
        for key, entry in series.items():
            bounds = [bound for bound, _ in entry["buckets"]]
            counts = [count for _, count in entry["buckets"]]
            assert bounds == sorted(bounds) and math.isinf(bounds[-1]), (base, key)
            assert counts == sorted(counts), f"{base}{key} buckets are not cumulative"
            assert counts[-1] == entry["_count"], (base, key)
            assert entry["_sum"] >= 0


def scrape(client, auth) -> dict[str, dict]:
    response = client.get("/metrics", headers=auth("platform"))
    assert response.status_code == 200, response.data
    assert response.content_type == "text/plain; version=0.0.4; charset=utf-8"
    families = parse(response.get_data(as_text=True))
    check_histograms(families)
    return families


def value(families: dict, name: str, **labels: str) -> float:
    """The one sample of ``name`` whose labels include ``labels``."""
    family = _family_of(families, name)
    found = [v for n, lab, v in family["samples"] if n == name and labels.items() <= lab.items()]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def _label_some(client, auth) -> dict:
    """A project with 6 items; 2 counted labels, 1 late, 2 refused (422), 1 open lease."""
    make_project(client, auth, strategy={"retrain": {"min_labels": 2, "every_labels": 1000}})
    assert post_items(client, auth, make_items(6)).status_code == 200
    for eid in ("e1", "e2"):
        make_expert(client, auth, eid, capacity=5)
    tasks = [next_task(client, auth, eid="e1").json["task"] for _ in range(4)]
    platform = auth("platform")
    post = client.post
    assert post(f"/v1/tasks/{tasks[0]['id']}/label", json={"label": "pos"},
                headers=platform).status_code == 201
    assert post(f"/v1/tasks/{tasks[1]['id']}/label", json={"label": "neg"},
                headers=platform).status_code == 201
    assert post(f"/v1/tasks/{tasks[2]['id']}/label", json={"label": "maybe"},
                headers=platform).status_code == 422
    assert post(f"/v1/tasks/{tasks[2]['id']}/label", json={"label": "pos", "x": 1},
                headers=platform).status_code == 422
    assert post(f"/v1/tasks/{tasks[2]['id']}/release", headers=platform).status_code == 200
    assert post(f"/v1/tasks/{tasks[2]['id']}/label", json={"label": "pos"},
                headers=platform).status_code == 409
    return {"tasks": tasks}


def test_exposition_parses_and_has_every_family(client, auth):
    """The answer is text format 0.0.4: every family typed and helped, histograms sound."""
    _label_some(client, auth)
    families = scrape(client, auth)
    assert set(metrics.metric_names()) <= set(families)
    for name in metrics.metric_names():
        assert families[name].get("type") and families[name].get("help"), name
        assert families[name]["samples"], f"{name} has no sample"


def test_project_values_match_stats(client, auth):
    """Pending, items by status, open leases, labels counted/late and model version equal
    GET /stats; rejected counts the label requests refused with 422."""
    _label_some(client, auth)
    stats = client.get("/v1/projects/p1/stats", headers=auth("platform")).json
    families = scrape(client, auth)
    assert value(families, "taskrank_queue_pending", project="p1") == stats["items"]["pending"]
    for status in ("pending", "leased", "labeled", "gold", "withdrawn"):
        assert value(families, "taskrank_items", project="p1", status=status) == \
            stats["items"][status]
    assert value(families, "taskrank_leases_open", project="p1") == stats["open_leases"] == 1
    for outcome in ("counted", "late"):
        assert value(families, "taskrank_labels_total", project="p1", outcome=outcome) == \
            stats["labels"][outcome]
    assert stats["labels"]["counted"] == 2 and stats["labels"]["late"] == 1
    assert value(families, "taskrank_labels_total", project="p1", outcome="rejected") == 2
    assert value(families, "taskrank_model_version", project="p1") == 0


def test_requests_counted_by_route_template_and_status(client, auth):
    """Counts and latency histograms are keyed by route template (not URL) and status."""
    make_project(client, auth)
    for pid in ("p1", "nope", "nope2"):
        client.get(f"/v1/projects/{pid}", headers=auth("platform"))
    client.get("/no/such/page")
    families = scrape(client, auth)
    route = "/v1/projects/{pid}"
    assert value(families, "taskrank_http_requests_total", route=route, status="200") == 1
    assert value(families, "taskrank_http_requests_total", route=route, status="404") == 2
    assert value(families, "taskrank_http_request_duration_seconds_count", route=route,
                 status="404") == 2
    assert value(families, "taskrank_http_requests_total", route="<unmatched>",
                 status="404") == 1
    routes = {labels["route"] for _, labels, _ in
              families["taskrank_http_requests_total"]["samples"]}
    assert not any("nope" in route for route in routes)


def test_several_processes_share_one_count(settings, r, auth):
    """Two app instances (as two gunicorn workers) write to the same Redis hash: a scrape
    of either one sees the requests of both."""
    first, second = (create_app(settings).test_client() for _ in range(2))
    for _ in range(3):
        first.get("/healthz")
    for _ in range(4):
        second.get("/healthz")
    second.get("/metrics", headers=auth("platform"))  # flushes the second's buffer only
    first.application.extensions["taskrank.metrics"].flush()
    for client in (first, second):
        families = scrape(client, auth)
        assert value(families, "taskrank_http_requests_total", route="/healthz") == 7


def test_needs_a_platform_token_unless_public(settings, r, client, auth, tokens):
    """Without TASKRANK_METRICS_PUBLIC a token of role platform is needed (401 problem,
    expert 403); with it, no token; the OpenAPI document says which."""
    response = client.get("/metrics")
    assert response.status_code == 401 and response.mimetype == "application/problem+json"
    assert client.get("/metrics", headers=auth("expert")).status_code == 403
    assert client.get("/metrics", headers=auth("admin")).status_code == 200
    operation = client.get("/openapi.json").json["paths"]["/metrics"]["get"]
    assert operation["x-required-role"] == "platform"
    public = create_app(settings.replace(metrics_public=True)).test_client()
    assert public.get("/metrics").status_code == 200
    operation = public.get("/openapi.json").json["paths"]["/metrics"]["get"]
    assert "x-required-role" not in operation and operation["security"] == []


def test_redis_down_is_a_503_problem(settings, r, auth):
    """A scrape while Redis does not answer is a 503 problem with Retry-After, not a 500."""
    dead = settings.replace(redis_url="redis://127.0.0.1:1/0", metrics_public=True)
    response = create_app(dead).test_client().get("/metrics")
    assert response.status_code == 503 and response.mimetype == "application/problem+json"
    assert response.headers["Retry-After"] == "1"


def test_retrain_duration_and_model_version(client, auth, r, settings, run_jobs):
    """A retrain records its duration (job result, model metadata, histogram) and the
    model version gauge follows the current version."""
    _label_some(client, auth)
    task = next_task(client, auth, eid="e2").json["task"]
    client.post(f"/v1/tasks/{task['id']}/label", json={"label": "neg"},
                headers=auth("platform"))
    job_id = enqueue_retrain(r, settings, "p1")
    run_jobs()
    result = client.get(f"/v1/jobs/{job_id}", headers=auth("platform")).json["result"]
    assert result["version"] == 1 and result["train_seconds"] > 0
    assert float(r.hget(K.model_meta_key("p1"), "train_seconds")) == result["train_seconds"]
    assert model_info(r, "p1")["version"] == 1
    families = scrape(client, auth)
    assert value(families, "taskrank_model_version", project="p1") == 1
    assert value(families, "taskrank_retrain_duration_seconds_count", project="p1") == 1
    assert value(families, "taskrank_retrain_duration_seconds_sum", project="p1") == \
        pytest.approx(result["train_seconds"])
