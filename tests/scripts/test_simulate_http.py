"""``taskrank simulate --http`` (scripts/simulate_http.py) against a real server and RQ worker."""

from __future__ import annotations

import json

from taskrank.client import Client
from taskrank.scripts.simulate import main
from tests.scripts.helpers import http_server, rq_worker

SMALL = ["--seeds", "1", "--initial", "10", "--batch", "10", "--budget", "30", "--wait", "60"]


def test_learning_curves_over_http_replay_the_library(settings, r, tokens, tmp_path, capsys):
    """The server's picks, retrained every batch, give the in-process curve of its twin."""
    out = tmp_path / "http.json"
    with http_server(settings) as url, rq_worker(settings, r):
        code = main(["iris", "--http", "--url", url, "--token", tokens["admin"], *SMALL,
                     "--json", str(out)])
        result = json.loads(out.read_text())
        pid = result["seeds_detail"][0]["project"]
        model = Client(url, tokens["admin"]).get(f"/v1/projects/{pid}/model")
    assert code == 0, capsys.readouterr().err
    assert "AULC http - in-process" in capsys.readouterr().out
    assert set(result["strategies"]) == {"http", "in-process"}
    http = result["strategies"]["http"]
    assert http["n_labels"] == [10, 20, 30] and len(http["curves"]) == 1
    assert 0.0 < http["aulc"]["mean"] <= 1.0
    assert set(result["comparison"]) >= {"difference", "within_budget", "twin"}
    detail = result["seeds_detail"][0]
    assert detail["initial_items_as_in_process"] == 10
    assert detail["points_equal_to_twin"] == 3  # the server's selection is the library's
    assert model["version"] is not None and model["n_labels"] >= 20


def test_routing_over_http_reports_three_arms(settings, r, tokens, tmp_path, capsys):
    """--experts --http: accuracy (mean, std) and cost per arm, every label given."""
    out = tmp_path / "routing.json"
    with http_server(settings) as url, rq_worker(settings, r):
        code = main(["iris", "--http", "--experts", "--url", url, "--token", tokens["admin"],
                     "--seeds", "1", "--n-labels", "45", "--wait", "60", "--json", str(out)])
    assert code == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    assert set(result["arms"]) == {"taskrank", "random", "oracle"}
    for arm in result["arms"].values():
        assert set(arm["accuracy"]) >= {"mean", "std"} and arm["cost"]["mean"] > 0
        assert 0.0 <= arm["accuracy"]["mean"] <= 1.0 and arm["labels"]["mean"] == 45
    assert set(result["in_process"]) == {"library_defaults", "as_the_server_routes"}
    assert "through the server" in capsys.readouterr().out


def test_an_unreachable_server_exits_2(capsys):
    """--http with nothing at --url: exit 2 with one line."""
    assert main(["iris", "--http", "--url", "http://127.0.0.1:9", "--token", "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("taskrank simulate: error: cannot reach") and len(err.splitlines()) == 1


def test_initial_below_batch_exits_2(settings, r, tokens, capsys):
    """The server retrains every batch, so --http needs the first retrain at --initial."""
    with http_server(settings) as url:
        code = main(["iris", "--http", "--url", url, "--token", tokens["admin"],
                     "--initial", "5", "--batch", "10", "--budget", "30"])
    assert code == 2
    assert "needs initial >= batch" in capsys.readouterr().err
