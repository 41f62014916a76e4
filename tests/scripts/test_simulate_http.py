"""``taskrank simulate --http`` (scripts/simulate_http.py) against a real server and RQ worker."""

from __future__ import annotations

import json

import numpy as np
import pytest

from taskrank.client import Client, Response
from taskrank.learning.simulate import _make_world as make_world
from taskrank.learning.simulate import load_dataset
from taskrank.scripts import simulate_http
from taskrank.scripts.simulate import main
from taskrank.scripts.simulate_http import routing_figures
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


def test_routing_over_http_runs_the_servers_rule(settings, r, tokens, tmp_path, capsys):
    """--experts --http: the taskrank arm through the server (gold bank ingested, spot
    checks, seconds reported) spends the label budget, is charged what its labels cost,
    and is judged beside the in-process random and oracle arms of the same worlds."""
    out = tmp_path / "routing.json"
    with http_server(settings) as url, rq_worker(settings, r):
        code = main(["digits", "--http", "--experts", "--url", url, "--token",
                     tokens["admin"], "--seeds", "1", "--n-labels", "60", "--wait", "60",
                     "--json", str(out)])
    assert code == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    arms, local = result["arms"], result["in_process"]["arms"]
    assert arms["random"] == local["random"] and arms["oracle"] == local["oracle"]
    served = arms["taskrank"]
    assert served["labels"]["mean"] == 60 and served["cost"]["mean"] > 0
    assert 0.0 < served["overhead_share"]["mean"] < 1.0  # unqualified experts get gold first
    assert 0.0 <= served["accuracy"]["mean"] <= 1.0
    detail = result["seeds_detail"][0]
    assert detail["gold_labels"] >= 1
    assert detail["server_spent_usd"] == pytest.approx(served["cost"]["mean"], abs=0.01)
    assert set(result["gap_closed"]) == {"accuracy", "correct_per_1000_usd"}
    assert (result["config"]["redundancy"], result["config"]["gold"]) == (1, 0.05)
    assert "through the server" in capsys.readouterr().out


def test_routing_over_http_sends_the_strategy_file(settings, r, tokens, tmp_path, capsys):
    """--experts --http --strategy-file: the project is created with that strategy (merged
    onto the defaults by the server), and the in-process replay runs the same one."""
    spec, out = tmp_path / "strategy.json", tmp_path / "routing.json"
    spec.write_text(json.dumps({"qa": {"review_rate": 0.0}, "retrain": {"every_labels": 7}}))
    with http_server(settings) as url, rq_worker(settings, r):
        code = main(["digits", "--http", "--experts", "--url", url, "--token",
                     tokens["admin"], "--seeds", "1", "--n-labels", "30", "--wait", "60",
                     "--strategy-file", str(spec), "--json", str(out)])
        result = json.loads(out.read_text())
        project = Client(url, tokens["admin"]).get(
            f"/v1/projects/{result['seeds_detail'][0]['project']}")
    assert code == 0, capsys.readouterr().err
    assert project["strategy"]["qa"]["review_rate"] == 0.0
    assert project["strategy"]["retrain"]["every_labels"] == 7
    assert project["strategy"]["routing"]["holdback_seconds"] > 0  # a server default
    assert result["config"]["strategy"]["qa"]["review_rate"] == 0.0


@pytest.fixture(scope="module")
def world():
    """A small world: 20 real items, then 4 gold items; 3 experts over 2 domains."""
    return make_world(*load_dataset("iris"), 20, 2, 3, 0.2, 0.0, 0)


def test_routing_figures_count_gold_and_spot_checks_as_overhead(world):
    """Overhead = labels on gold + labels beyond the redundancy on real items; dollars are
    rate x true seconds; an item not finished counts with its most frequent label."""
    truth, gold = world.truth, int(np.flatnonzero(world.gold)[0])
    wrong = (truth + 1) % world.n_classes
    labels = np.array([(0, 0, truth[0]), (0, 1, truth[0]),  # a spot check, both right
                       (1, 0, truth[1]),  # finished; the server aggregated it wrong
                       (2, 2, wrong[2]),  # not finished: its own (wrong) label
                       (gold, 1, truth[gold]), (gold, 2, truth[gold])])  # gold, not scored
    figures = routing_figures(world, labels, {0: int(truth[0]), 1: int(wrong[1])}, 1)
    dollars = sum(world.rate[e] * world.label_seconds[e, i] / 3600 for i, e, _ in labels)
    assert figures == {"accuracy": pytest.approx(1 / 3), "correct_items": 1,
                       "cost": pytest.approx(dollars),
                       "correct_per_1000_usd": pytest.approx(1000 / dollars),
                       "overhead_share": pytest.approx(3 / 6), "labels": 6}
    assert routing_figures(world, labels, {}, 2)["overhead_share"] == pytest.approx(2 / 6)


class _StubServer:
    """A client whose tasks/next answers from a script: a task id, or a 204 reason."""

    url = "stub"

    def __init__(self, answers):
        self.answers, self.asked, self.put_bodies = list(answers), [], []

    def send(self, method, path, body):
        self.asked.append(body["expert_id"])
        answer = self.answers.pop(0) if self.answers else "nothing_eligible"
        if answer.startswith("i"):
            return Response(200, {}, {"task": {"id": f"t{len(self.asked)}", "item_id": answer}})
        return Response(204, {"taskrank-reason": answer}, None)

    def post(self, path, body):
        return {}

    def put(self, path, body):
        self.put_bodies.append(body)


def test_ask_waits_out_nothing_eligible_and_stops_when_nobody_gets_work(world, monkeypatch):
    """A 204 nothing_eligible is asked again; other refusals take the expert out; the run
    ends after IDLE_ROUNDS rounds in which every expert still asking was refused."""
    monkeypatch.setattr(simulate_http, "IDLE_WAIT", 0.0)
    stub = _StubServer(["nothing_eligible", "i3", "budget_exhausted", "i4"])
    run = simulate_http._RoutingRun(stub, world, "p", wait=1.0)
    given = run._ask(n_labels=10, capacity=10, rng=np.random.RandomState(0))
    assert [item for item, _ in given] == [3, 4]
    assert run.refusals["budget_exhausted"] == 1
    refused = stub.asked[2]
    assert refused not in stub.asked[3:]  # out after its refusal
    # after the last task, the two experts left are refused for IDLE_ROUNDS full rounds
    assert run.refusals["nothing_eligible"] >= 1 + 2 * simulate_http.IDLE_ROUNDS


def test_ask_retires_an_expert_at_capacity(world, monkeypatch):
    """An expert that reached its capacity is declared inactive and asks no more."""
    monkeypatch.setattr(simulate_http, "IDLE_WAIT", 0.0)
    stub = _StubServer([f"i{n}" for n in range(3)])
    run = simulate_http._RoutingRun(stub, world, "p", wait=1.0)
    given = run._ask(n_labels=3, capacity=1, rng=np.random.RandomState(0))
    assert sorted(e for _, e in given) == [0, 1, 2]
    assert [body["active"] for body in stub.put_bodies] == [False] * 3
    assert stub.put_bodies[0]["cost_per_hour"] == pytest.approx(world.rate[given[0][1]])


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
