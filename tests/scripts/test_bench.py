"""``taskrank bench``: the cheapest benchmark end to end, and the shape of its JSON."""

from __future__ import annotations

import json

from taskrank.queue.reaggregate import REFRESH_ITEMS
from taskrank.scripts import cli
from taskrank.scripts.bench import command as bench
from taskrank.scripts.bench import retrain as bench_retrain
from taskrank.scripts.bench import train_cap as bench_train_cap
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


def test_retrain_bench_times_a_full_then_incremental_retrains_at_each_size():
    """retrain: at each size the first retrain is a full pass over every finished item, the
    next ones decide only the new items (every_labels / 2 of them); below the cap every
    labeled item trains."""
    result = bench_retrain.run([600, 1200], trials=2, full_up_to=600)
    assert list(result["sizes"]) == ["600", "1200"]
    for size, entry in result["sizes"].items():
        first = entry["first"]
        assert first["dawid_skene"]["mode"] == "full" and first["uncapped"] == (size == "600")
        assert first["dawid_skene"]["items"] >= int(size)
        for trial in entry["incremental"]:
            assert trial["dawid_skene"]["mode"] == "incremental"
            assert trial["dawid_skene"]["new"] == trial["dawid_skene"]["items"] == 5
            assert trial["n_labels"] >= int(size) and trial["seconds"] > 0
        assert set(entry["p50_steps"]) == {"seconds", "reaggregate", "training_set", "fit",
                                           "store_and_queue"}
        refreshing = entry["refreshing"]["dawid_skene"]
        assert refreshing["new"] == 5 and 0 < refreshing["refreshed"] <= REFRESH_ITEMS


def test_train_cap_compares_capped_models_with_the_all_labels_one():
    """train_cap: per pool and size, the all-labels model, a 90 % reference and each cap
    below the size, judged on the same held-out pool."""
    result = bench_train_cap.run([("classes10", 1500)], [1000, 5000], [0])
    run = result["runs"]["classes10-1500"]
    assert set(run) == {"all", "90%", "1000"}
    assert run["all"]["top_overlap"] == 1.0 and 0 < run["1000"]["top_overlap"] < 1
    assert 0.3 < run["1000"]["accuracy"] <= 1
