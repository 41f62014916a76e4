"""Tests for ``taskrank simulate`` (scripts/simulate.py), called through ``main(argv)``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from taskrank.learning.simulate import load_dataset
from taskrank.scripts.simulate import main

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "simulate.py"
SMALL = ["--seeds", "2", "--initial", "6", "--batch", "6", "--budget", "24"]


def test_simulate_writes_table_json_and_plot(tmp_path, capsys):
    """A small run prints the table and writes the JSON result and a PNG."""
    out, png = tmp_path / "out.json", tmp_path / "curves.png"
    code = main(["iris", *SMALL, "--strategies", "random,margin",
                 "--json", str(out), "--plot", str(png)])
    assert code == 0
    table = capsys.readouterr().out
    assert "AULC" in table and "acc@50" not in table  # no checkpoint beyond the budget
    assert table.splitlines()[1].startswith("random") and "±" in table
    result = json.loads(out.read_text())
    assert result["dataset"] == "iris" and list(result["strategies"]) == ["random", "margin"]
    assert len(result["strategies"]["margin"]["curves"]) == 2
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_simulate_strategy_file_adds_candidate(tmp_path, capsys):
    """--strategy-file adds a strategy named 'candidate' built from the partial dict."""
    spec = tmp_path / "strategy.json"
    spec.write_text(json.dumps({"weights": {"disagreement": 0.0}, "committee": {"members": 2}}))
    out = tmp_path / "out.json"
    code = main(["iris", *SMALL, "--strategies", "random", "--strategy-file", str(spec),
                 "--json", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert list(result["strategies"]) == ["random", "candidate"]
    assert result["strategies"]["candidate"]["spec"]["committee"]["members"] == 2
    assert "candidate" in capsys.readouterr().out


def test_simulate_reads_npz(tmp_path, capsys):
    """A .npz with X and y is a dataset named after the file."""
    X, y = load_dataset("wine")
    path = tmp_path / "mine.npz"
    np.savez(path, X=X, y=y)
    out = tmp_path / "out.json"
    assert main([str(path), *SMALL, "--strategies", "random", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["dataset"] == "mine"


def test_simulate_experts_table_and_json(tmp_path, capsys):
    """--experts replays simulated experts at redundancy 1 with a 5 % gold bank and prints
    every figure per arm and both gap-closed shares."""
    out = tmp_path / "routing.json"
    code = main(["digits", "--experts", "--seeds", "1", "--n-labels", "150", "--json", str(out)])
    assert code == 0
    table = capsys.readouterr().out
    header = table.splitlines()[0]
    for heading in ("label accuracy", "correct items", "cost (USD)", "right items per $1,000",
                    "overhead share", "labels"):
        assert heading in header
    assert [line.split()[0] for line in table.splitlines()[1:4]] == ["taskrank", "random",
                                                                      "oracle"]
    result = json.loads(out.read_text())
    closed = result["gap_closed"]
    assert f"label accuracy: {closed['accuracy']:.0%}" in table
    assert f"right items per $1,000: {closed['correct_per_1000_usd']:.0%}" in table
    assert (result["config"]["redundancy"], result["config"]["gold"]) == (1, 0.05)
    assert result["arms"]["oracle"]["labels"]["mean"] == 150
    assert result["arms"]["taskrank"]["overhead_share"]["mean"] > 0


def test_simulate_experts_strategy_file_is_the_projects_strategy(tmp_path, capsys):
    """--experts --strategy-file: the partial strategy is merged onto the defaults and
    routes the replay (a flat value rule with no checks: taskrank picks as random does)."""
    spec, out = tmp_path / "strategy.json", tmp_path / "routing.json"
    spec.write_text(json.dumps({"routing": {"fit_exponent": 0, "cost_exponent": 0,
                                            "holdback_seconds": 0},
                                "qa": {"gold_rate": 0, "review_rate": 0,
                                       "qualify": {"min_gold": 0, "min_accuracy": 0}}}))
    code = main(["digits", "--experts", "--seeds", "1", "--n-labels", "100",
                 "--strategy-file", str(spec), "--json", str(out)])
    assert code == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    assert result["config"]["strategy"]["routing"]["fit_exponent"] == 0.0
    assert result["config"]["strategy"]["routing"]["holdback_margin"] == 0.1  # a default
    assert result["arms"]["taskrank"] == result["arms"]["random"]
    assert "- (the oracle does not beat random)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["mnist"], "unknown dataset 'mnist'"),
        (["missing.npz"], "no such file"),
        (["iris", "--strategies", "random,psychic"], "unknown strategies ['psychic']"),
        (["iris", "--seeds", "0"], "--seeds"),
        (["iris", "--budget", "lots"], "--budget"),
        (["iris", "--initial", "80"], "initial (80) exceeds the budget"),
        (["iris", "--test-size", "1.5"], "--test-size"),
        (["iris", "--experts", "--redundancy", "9"], "redundancy (9) exceeds n_experts"),
        (["iris", "--strategy-file", "nowhere.json"], "cannot read strategy file"),
        (["iris", "--experts", "--strategy-file", "nowhere.json"], "cannot read strategy file"),
        (["iris", "--experts", "--gold", "1"], "--gold"),
        (["iris", "--json", "no/such/dir/out.json"], "no/such/dir"),
    ],
)
def test_simulate_bad_input_exits_2_with_one_line(argv, needle, capsys, tmp_path, monkeypatch):
    """Bad input gives exit status 2 and one clear line on stderr."""
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("taskrank simulate: error:") and needle in err


@pytest.mark.parametrize(
    ("content", "needle"),
    [("{not json", "bad strategy file"), ('{"weights": {"novelty": 1}}', "weights.novelty"),
     ('{"routing": {"holdback_margin": 2}}', "routing.holdback_margin"),
     ("[1]", "strategy must be an object")],
)
@pytest.mark.parametrize("experts", [[], ["--experts"]])
def test_simulate_bad_strategy_file(tmp_path, capsys, content, needle, experts):
    """A strategy file that is not JSON or not a valid partial strategy exits 2."""
    spec = tmp_path / "strategy.json"
    spec.write_text(content)
    assert main(["iris", *experts, "--strategy-file", str(spec)]) == 2
    assert needle in capsys.readouterr().err


def test_simulate_bad_npz(tmp_path, capsys):
    """A .npz without X and y exits 2 naming what is missing."""
    path = tmp_path / "bad.npz"
    np.savez(path, features=np.zeros((4, 2)))
    assert main([str(path)]) == 2
    assert "lacks array 'X'" in capsys.readouterr().err


def test_simulate_runs_as_a_script():
    """``python scripts/simulate.py`` works by path and exits 2 on bad input."""
    done = subprocess.run([sys.executable, str(SCRIPT), "mnist"], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 2
    assert done.stderr.startswith("taskrank simulate: error: unknown dataset")
