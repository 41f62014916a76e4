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
    """--experts replays simulated experts and reports accuracy and cost per arm."""
    out = tmp_path / "routing.json"
    code = main(["digits", "--experts", "--seeds", "1", "--n-labels", "150", "--json", str(out)])
    assert code == 0
    table = capsys.readouterr().out
    for arm in ("taskrank", "random", "oracle"):
        assert arm in table
    result = json.loads(out.read_text())
    assert set(result["arms"]) == {"taskrank", "random", "oracle"}
    assert result["arms"]["oracle"]["labels"]["mean"] == 150


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
    [("{not json", "bad strategy file"), ('{"weights": {"novelty": 1}}', "weights.novelty")],
)
def test_simulate_bad_strategy_file(tmp_path, capsys, content, needle):
    """A strategy file that is not JSON or not a valid partial strategy exits 2."""
    spec = tmp_path / "strategy.json"
    spec.write_text(content)
    assert main(["iris", "--strategy-file", str(spec)]) == 2
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
