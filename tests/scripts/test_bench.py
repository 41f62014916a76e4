"""``taskrank bench``: the cheapest benchmark end to end, and the shape of its JSON."""

from __future__ import annotations

import json

from taskrank.scripts import cli
from taskrank.scripts.bench import command as bench
from taskrank.scripts.bench.budgets import judge_all
from taskrank.scripts.bench.loops import percentiles


def test_memory_quick_writes_the_documented_json(tmp_path, capsys):
    """memory --quick measures bytes per item on a real Redis and writes machine, budgets."""
    out = tmp_path / "bench.json"
    assert bench.main(["memory", "--quick", "--out", str(out)]) == 0
    document = json.loads(out.read_text())
    assert {"machine", "date", "quick", "results", "budgets"} <= set(document)
    assert document["quick"] is True
    assert {"cpu", "cores", "python", "redis"} <= set(document["machine"])
    memory = document["results"]["memory"]
    assert memory["items"] == bench.QUICK["memory_items"]
    assert memory["bytes_per_item_used_memory"] > 0
    assert memory["item_hash_bytes"]["sampled"] > 0
    budget = document["budgets"]["memory_per_item"]
    assert budget["measured"] == memory["bytes_per_item_used_memory"]
    assert budget["pass"] == (budget["measured"] <= 1024)
    assert document["budgets"]["loop_1_client"]["pass"] is None  # serve did not run
    assert "Redis memory per item" in capsys.readouterr().out


def test_unknown_benchmark_is_a_usage_error(capsys):
    """A misspelt name exits 2 with a one-line message naming the choices, also when
    `taskrank bench` finds the command in the bench package."""
    assert bench.main(["memroy"]) == 2
    assert "unknown benchmark 'memroy'" in capsys.readouterr().err
    assert cli.main(["bench", "memroy"]) == 2
    assert "unknown benchmark 'memroy'" in capsys.readouterr().err


def test_budgets_judge_figures_in_the_right_direction():
    """A throughput passes at or above its budget, a latency at or below it."""
    results = {"ingest": {"items_per_s": 10_000.0}, "memory": {"bytes_per_item_used_memory": 1500}}
    budgets = judge_all(results)
    assert budgets["ingest"]["pass"] is True
    assert budgets["memory_per_item"]["pass"] is False
    assert budgets["rescore_2_workers"]["measured"] is None


def test_percentiles_nearest_rank():
    """p50 and p99 of 1..100 are 50 and 99 by nearest rank."""
    stats = percentiles([float(x) for x in range(100, 0, -1)])
    assert (stats["p50"], stats["p99"], stats["max"], stats["n"]) == (50.0, 99.0, 100.0, 100)
