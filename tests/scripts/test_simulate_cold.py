"""``taskrank simulate --http --cold`` (scripts/simulate_cold.py) against a real server and RQ
worker."""

from __future__ import annotations

import json

import pytest

from taskrank.client import Client
from taskrank.scripts.simulate import main
from tests.scripts.helpers import http_server, rq_worker

SMALL = ["--seeds", "1", "--batch", "10", "--budget", "30", "--wait", "60"]


def _run(settings, r, tokens, tmp_path, *flags):
    """Run a small cold simulation; (exit code, result, the seed's exported labels)."""
    out = tmp_path / "cold.json"
    with http_server(settings) as url, rq_worker(settings, r):
        code = main(["iris", "--http", "--cold", "--url", url, "--token", tokens["admin"],
                     *SMALL, *flags, "--json", str(out), "--plot", str(tmp_path / "c.png")])
        result = json.loads(out.read_text()) if code == 0 else None
        client = Client(url, tokens["admin"])
        pid = result["seeds_detail"][0]["project"] if result else None
        labels = client.get(f"/v1/projects/{pid}/labels?limit=1000")["labels"] if pid else []
        project = client.get(f"/v1/projects/{pid}") if pid else None
    return code, result, labels, project


def _check_result(result: dict, labels: list[dict]) -> None:
    """The shape shared by both modes: three arms, paired differences, exactly the budget."""
    assert result["mode"] == "cold" and set(result["strategies"]) == {
        "taskrank", "random", "margin"}
    for arm in result["strategies"].values():
        assert arm["n_labels"] == [10, 20, 30] and len(arm["curves"]) == 1
        assert 0.0 < arm["aulc"]["mean"] <= 1.0 and len(arm["aulc"]["per_seed"]) == 1
    assert set(result["differences"]) == {"taskrank-random", "taskrank-margin"}
    for diff in result["differences"].values():
        assert set(diff) == {"aulc", "acc@30"} and len(diff["aulc"]["per_seed"]) == 1
    counted = [record["item_id"] for record in labels if record["counted"]]
    assert len(counted) == 30 and len(set(counted)) == 30  # no item labelled twice
    detail = result["seeds_detail"][0]
    assert detail["labels_counted"] == 30 and detail["items_labeled"] == 30


def test_cold_run_one_expert_retrains_every_batch(settings, r, tokens, tmp_path, capsys):
    """--cold: defaults plus retrain every batch, three arms judged, the budget labelled."""
    code, result, labels, project = _run(settings, r, tokens, tmp_path)
    assert code == 0, capsys.readouterr().err
    _check_result(result, labels)
    assert result["config"]["concurrent"] == 0 and result["config"]["experts"] == 1
    assert result["config"]["retrain"]["every_labels"] == 10
    assert project["strategy"]["retrain"]["every_labels"] == 10
    out = capsys.readouterr().out
    assert "taskrank-random" in out and "taskrank-margin" in out and "margin" in out
    assert (tmp_path / "c.png").stat().st_size > 0


def test_cold_run_with_concurrent_experts(settings, r, tokens, tmp_path, capsys):
    """--cold --concurrent 3: three experts, the project's default cadence, the budget
    labelled exactly once per item, no lease left open."""
    code, result, labels, project = _run(settings, r, tokens, tmp_path, "--concurrent", "3",
                                         "--label-seconds", "0.05")
    assert code == 0, capsys.readouterr().err
    _check_result(result, labels)
    assert result["config"]["concurrent"] == 3 and result["config"]["experts"] == 3
    assert result["config"]["label_seconds"] == 0.05
    assert {record["seconds_spent"] for record in labels} == {0.05}
    assert result["config"]["strategy"] is None  # the project's defaults, no retrain patch
    assert result["config"]["retrain"] == project["strategy"]["retrain"]
    assert {record["expert_id"] for record in labels} <= {
        f"{project['id']}.e{k}" for k in range(3)}


@pytest.mark.parametrize(("flags", "message"), [
    (["--http", "--cold", "--concurrent", "0"], "expected a number >= 1"),
    (["--concurrent", "2"], "--concurrent needs --http --cold"),
    (["--http", "--concurrent", "2"], "--concurrent needs --http --cold"),
    (["--cold"], "--cold runs through a server"),
    (["--http", "--cold", "--experts"], "does not combine with --experts"),
    (["--http", "--cold", "--concurrent", "2", "--label-seconds", "-1"],
     "expected seconds in [0, 3600]"),
])
def test_bad_cold_flags_exit_2(flags, message, capsys):
    """Flags that do not fit together exit 2 with one line, before any server is asked."""
    assert main(["iris", *flags, "--url", "http://127.0.0.1:9", "--token", "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_cold_budget_above_the_pool_exits_2(settings, r, tokens, capsys):
    """A budget larger than the train split is refused before any project is made."""
    with http_server(settings) as url:
        code = main(["iris", "--http", "--cold", "--url", url, "--token", tokens["admin"],
                     "--budget", "200"])
    assert code == 2
    assert "--cold needs initial" in capsys.readouterr().err
