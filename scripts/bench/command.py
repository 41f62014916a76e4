"""``taskrank bench [NAMES...] [--quick] [--cluster] [--out FILE.json]``: the DESIGN §7
benchmarks.

Each benchmark runs against a fresh real Redis (``appendfsync always``, the product
default) and, where it serves HTTP, a real ``gunicorn -w 2``.  Prints a table of every
budget with the measured figure and writes one JSON document.  ``--quick`` uses small
sizes (the whole run takes under a minute); its figures are not comparable to the budgets.
``--cluster`` adds to ``serve`` the same serving runs on a local Redis Cluster of 3 masters,
alternated with runs on a single Redis (``bench.cluster``), under ``serve.cluster``.
``failover`` (run only when named) measures what waiting for a replica costs a label, and a
master's failover as clients see it (``bench.failover``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence

from taskrank.scripts.bench.budgets import judge_all
from taskrank.scripts.bench.machine import cpu_pressure

NAMES = ("scoring", "serve", "ingest", "rescore", "rerank", "shipped", "retrain", "train_cap",
         "memory")
# Run only when named: a cluster with replicas, a master killed (bench.failover).
ON_REQUEST = ("failover",)

FULL = {"serve_sizes": [10_000, 100_000, 1_000_000], "serve_seconds": 10.0,
        "latency_requests": 2000, "serve_extras": True, "ingest_items": 100_000,
        "rescore_items": 1_000_000, "rescore_chunk": None, "rescore_model": True,
        "rerank_pools": [100_000, 1_000_000], "rerank_trials": 10, "shipped_pool": 100_000,
        "shipped_seconds": 10.0, "shipped_rounds": 3, "memory_items": 100_000,
        "retrain_sizes": [10_000, 100_000, 1_000_000], "retrain_trials": 5,
        "retrain_full_up_to": 1_000_000,
        "train_cap_plan": [["classes10", 20_000], ["classes10", 50_000],
                           ["classes10", 100_000], ["embeddings384", 50_000]],
        "train_cap_caps": [5_000, 10_000, 20_000, 50_000], "train_cap_seeds": [0, 1],
        "scoring_rows": 100_000, "scoring_repeats": 5, "failover_size": 10_000,
        "failover_seconds": 5.0}
QUICK = {"serve_sizes": [1_000, 3_000, 6_000], "serve_seconds": 1.0,
         "latency_requests": 100, "serve_extras": False, "ingest_items": 6_000,
         "rescore_items": 20_000, "rescore_chunk": 5_000, "rescore_model": False,
         "rerank_pools": [2_000], "rerank_trials": 2, "shipped_pool": 3_000,
         "shipped_seconds": 1.0, "shipped_rounds": 1, "memory_items": 2_000,
         "retrain_sizes": [1_000, 4_000], "retrain_trials": 2, "retrain_full_up_to": 4_000,
         "train_cap_plan": [["classes10", 3_000]], "train_cap_caps": [1_000, 2_000],
         "train_cap_seeds": [0],
         "scoring_rows": 20_000, "scoring_repeats": 2, "failover_size": 1_000,
         "failover_seconds": 1.0}


def _scoring(sizes: dict) -> dict:
    from taskrank.scripts.bench import scoring as bench_scoring

    return bench_scoring.run(n=sizes["scoring_rows"], k=10, repeats=sizes["scoring_repeats"])


def _serve(sizes: dict) -> dict:
    from taskrank.scripts.bench import serve as bench_serve

    result = bench_serve.run(sizes["serve_sizes"], sizes["serve_seconds"],
                             sizes["latency_requests"], variants=sizes["serve_extras"])
    if sizes.get("serve_cluster"):
        result["cluster"] = _serve_cluster(sizes)
    return result


def _serve_cluster(sizes: dict) -> dict:
    """The cluster's serving beside the single Redis, at the middle size; a failure is
    recorded and the single-Redis figures are kept."""
    from taskrank.scripts.bench import cluster as bench_cluster

    try:
        return bench_cluster.run(sizes["serve_sizes"][1], sizes["serve_seconds"],
                                 sizes["latency_requests"])
    except Exception as error:  # recorded in the JSON
        return {"error": f"{type(error).__name__}: {error}"}


def _ingest(sizes: dict) -> dict:
    from taskrank.scripts.bench import ingest as bench_ingest

    return bench_ingest.run(sizes["ingest_items"])


def _rescore(sizes: dict) -> dict:
    from taskrank.scripts.bench import rescore as bench_rescore

    return bench_rescore.run(sizes["rescore_items"], chunk=sizes["rescore_chunk"],
                             with_model=sizes["rescore_model"])


def _rerank(sizes: dict) -> dict:
    from taskrank.scripts.bench import rerank as bench_rerank

    return bench_rerank.run(sizes["rerank_pools"], sizes["rerank_trials"])


def _shipped(sizes: dict) -> dict:
    from taskrank.scripts.bench import shipped as bench_shipped

    return bench_shipped.run(sizes["shipped_pool"], sizes["shipped_seconds"],
                             sizes["shipped_rounds"])


def _retrain(sizes: dict) -> dict:
    from taskrank.scripts.bench import retrain as bench_retrain

    return bench_retrain.run(sizes["retrain_sizes"], sizes["retrain_trials"],
                             sizes["retrain_full_up_to"])


def _train_cap(sizes: dict) -> dict:
    from taskrank.scripts.bench import train_cap as bench_train_cap

    return bench_train_cap.run([tuple(entry) for entry in sizes["train_cap_plan"]],
                               sizes["train_cap_caps"], sizes["train_cap_seeds"])


def _memory(sizes: dict) -> dict:
    from taskrank.scripts.bench import memory as bench_memory

    return bench_memory.run(sizes["memory_items"])


def _failover(sizes: dict) -> dict:
    from taskrank.scripts.bench import failover as bench_failover

    return bench_failover.run(sizes["failover_size"], sizes["failover_seconds"])


RUNNERS: dict[str, Callable[[dict], dict]] = {
    "scoring": _scoring, "serve": _serve, "ingest": _ingest, "rescore": _rescore,
    "rerank": _rerank, "shipped": _shipped, "retrain": _retrain, "train_cap": _train_cap,
    "memory": _memory, "failover": _failover}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="taskrank bench", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"benchmarks to run (default all): {', '.join(NAMES)}; "
                             f"only when named: {', '.join(ON_REQUEST)}")
    parser.add_argument("--quick", action="store_true", help="small sizes, under a minute")
    parser.add_argument("--cluster", action="store_true",
                        help="serve: also on a local Redis Cluster of 3 masters, alternated "
                             "with a single Redis (results under serve.cluster)")
    parser.add_argument("--out", help="write the results as JSON to this file")
    return parser.parse_args(argv)


def run_all(names: list[str], sizes: dict) -> dict:
    """Run each benchmark in turn; a failing one is recorded and the others still run."""
    results = {}
    for name in names:
        print(f"bench: running {name} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        try:
            results[name] = RUNNERS[name](sizes)
        except Exception as error:  # recorded in the JSON; the other benchmarks still run
            results[name] = {"error": f"{type(error).__name__}: {error}"}
        results[name]["wall_seconds"] = round(time.perf_counter() - start, 1)
    return results


def machine() -> dict:
    """The machine and the Redis version (read from a short-lived embedded Redis)."""
    from taskrank.scripts.bench.machine import machine_info
    from taskrank.scripts.bench.processes import fresh_redis

    with fresh_redis() as (_, r):
        return machine_info(r)


def format_table(budgets: dict) -> str:
    lines = [f"{'budget':<52} {'limit':>22} {'measured':>14}  result"]
    for entry in budgets.values():
        measured = entry["measured"]
        shown = "-" if measured is None else f"{measured:,.6g}"
        verdict = {True: "pass", False: "FAIL", None: "not run"}[entry["pass"]]
        lines.append(f"{entry['what'][:52]:<52} {entry['budget']:>22} {shown:>14}  {verdict}")
    return "\n".join(lines)


def _stop_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so every started server and worker is stopped."""
    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_term)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    _stop_on_sigterm()
    unknown = [name for name in args.names if name not in NAMES + ON_REQUEST]
    if unknown:
        print(f"taskrank bench: unknown benchmark '{unknown[0]}'; expected some of "
              f"{', '.join(NAMES + ON_REQUEST)}", file=sys.stderr)
        return 2
    names = args.names or list(NAMES)
    document = {"machine": machine(), "date": datetime.datetime.now(datetime.UTC).isoformat(
        timespec="seconds"), "quick": args.quick,
        "sizes": {**(QUICK if args.quick else FULL), "serve_cluster": args.cluster}}
    document["machine"]["load_average_before"] = os.getloadavg()
    document["results"] = run_all(names, document["sizes"])
    document["machine"]["load_average_after"] = os.getloadavg()
    document["machine"]["cpu_pressure_after"] = cpu_pressure()
    document["budgets"] = judge_all(document["results"])
    print(format_table(document["budgets"]))
    if args.out:
        with open(args.out, "w") as out:
            json.dump(document, out, indent=2)
        print(f"wrote {args.out}", file=sys.stderr)
    failed = [name for name, result in document["results"].items() if "error" in result]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
