"""``taskrank ingest`` of Label Studio's JSON task export: tasks become items, bad tasks are
rejected one by one with the reason."""

from __future__ import annotations

import json

import pytest

from taskrank.queue.projects import create_project
from taskrank.scripts import ingest
from tests.scripts.helpers import http_server

LABELS = ["Positive", "Negative", "Neutral"]


@pytest.fixture
def server(settings, r, tokens):
    create_project(r, {"id": "p", "labels": LABELS})
    with http_server(settings) as url:
        yield url, tokens["platform"]


def exported(task_id: int, data: dict, predictions=(), annotations=()) -> dict:
    """A task as Label Studio's JSON export writes it."""
    return {"id": task_id, "annotations": list(annotations), "drafts": [],
            "predictions": list(predictions), "data": data, "meta": {},
            "created_at": "2025-01-31T12:00:00.000000Z",
            "updated_at": "2025-01-31T12:00:00.000000Z", "inner_id": task_id,
            "total_annotations": len(annotations), "cancelled_annotations": 0,
            "total_predictions": len(predictions), "comment_count": 0,
            "unresolved_comment_count": 0, "last_comment_updated_at": None, "project": 3,
            "updated_by": None, "comment_authors": []}


def choice(label: str, score: float | None = None, version: str = "bert-v2", **extra) -> dict:
    prediction = {"id": 1, "model_version": version, "created_ago": "1 minute", "result": [
        {"id": "a1", "type": "choices", "value": {"choices": [label]}, "origin": "prediction",
         "to_name": "text", "from_name": "sentiment"}], "cluster": None, "neighbors": None,
        "mislabeling": 0.0, "created_at": "2025-01-31T12:00:00.000000Z",
        "updated_at": "2025-01-31T12:00:00.000000Z", "task": 1, "project": 3, **extra}
    if score is not None:
        prediction["score"] = score
    return prediction


def test_label_studio_export_becomes_items_and_bad_tasks_are_named(capsys, server, tmp_path,
                                                                    client, auth):
    """Predictions become probability rows, data the payload, data.features the features,
    a ground-truth annotation the gold answer; each bad task is rejected by its position,
    with its Label Studio id and the reason; exit 1."""
    truth = {"id": 9, "completed_by": 1, "ground_truth": True, "was_cancelled": False,
             "result": [{"type": "choices", "value": {"choices": ["Neutral"]},
                         "from_name": "sentiment", "to_name": "text"}]}
    tasks = [
        exported(1, {"text": "great"}, [choice("Positive", 0.8)]),
        exported(2, {"text": "meh", "features": [0.1, 0.2]}),
        exported(3, {"text": "named", "taskrank_id": "out-3", "features": [1, 2]},
                 annotations=[truth]),
        exported(4, {"text": "odd"}, [choice("Sarcastic", 0.9)]),
        {"id": 5, "text": "a JSON-MIN row"},
        exported(6, {"text": "no model"}),
        exported(7, {"text": "bad score"}, [choice("Negative", 1.5)]),
        "not a task",
        exported(9, {"text": "two models"}, [choice("Negative", 0.6),
                                             choice("Positive", 0.5, "rules v1")]),
    ]
    path = tmp_path / "export.json"
    path.write_text(json.dumps(tasks))
    rejects = tmp_path / "rejects.jsonl"
    url, token = server
    code = ingest.main(["p", str(path), "--url", url, "--token", token, "--json",
                        "--rejects", str(rejects)])
    out, err = capsys.readouterr()
    summary = json.loads(out.strip().splitlines()[-1])
    assert code == 1
    assert (summary["created"], summary["rejected"]) == (4, 5)
    rows = {row["task"]: row["detail"] for row in map(json.loads,
                                                        rejects.read_text().splitlines())}
    assert sorted(rows) == [4, 5, 6, 7, 8]
    assert "(task id 4) predictions[0] chose 'Sarcastic'" in rows[4]
    assert "JSON-MIN" in rows[5] and "data.features" in rows[6] and "score" in rows[7]
    assert "task 6 (task id 6)" not in err and "task 6: (task id 6)" in err
    item = client.get("/v1/projects/p/items/1", headers=auth("platform")).json
    assert item["predictions"] == {"bert-v2": [0.8, 0.1, 0.1]}
    assert item["payload"] == {"text": "great"}
    named = client.get("/v1/projects/p/items/out-3", headers=auth("platform")).json
    assert named["status"] == "gold"
    assert client.get("/v1/projects/p/items/9", headers=auth("platform")).json[
        "predictions"] == {"bert-v2": [0.2, 0.6, 0.2], "rules-v1": [0.5, 0.25, 0.25]}


def test_a_json_file_that_is_not_a_task_list_is_unusable(capsys, server, tmp_path):
    """A .json holding an object is exit 2 with one line saying what the export is."""
    path = tmp_path / "export.json"
    path.write_text('{"tasks": []}')
    url, token = server
    assert ingest.main(["p", str(path), "--url", url, "--token", token]) == 2
    assert "JSON list of tasks" in capsys.readouterr().err
