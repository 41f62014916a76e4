"""The DESIGN §7 budgets, each read from the benchmark results and judged pass or fail."""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Budget:
    key: str
    what: str
    limit: float
    unit: str
    higher_is_better: bool
    read: Callable[[dict], float | None]  # results -> measured figure (None: not measured)

    def judge(self, results: dict) -> dict:
        try:
            measured = self.read(results)
        except (KeyError, TypeError, IndexError, ZeroDivisionError):
            measured = None
        compare = operator.ge if self.higher_is_better else operator.le
        sign = ">=" if self.higher_is_better else "<="
        return {"what": self.what, "budget": f"{sign} {self.limit:g} {self.unit}".strip(),
                "limit": self.limit, "measured": measured, "unit": self.unit,
                "pass": None if measured is None else bool(compare(measured, self.limit))}


def _latency(size: str, stat: str) -> Callable[[dict], float]:
    return lambda res: res["serve"]["latency_ms"][size][stat]


def _sizes(res: dict) -> list[str]:
    return list(res["serve"]["latency_ms"])


def _p99_growth(res: dict) -> float:
    sizes = _sizes(res)
    latency = res["serve"]["latency_ms"]
    return round(latency[sizes[-1]]["p99"] / latency[sizes[0]]["p99"], 3)


def _double_leases(res: dict) -> float:
    integrity = res["serve"]["integrity"]
    return integrity["items_leased_twice"] + integrity["items_labeled_twice"]


def _cluster_ratio(res: dict) -> float:
    ratio = res["serve"]["cluster"]["ratio"]
    return min(ratio["one_client"], ratio["many_clients"])
def _rerank(res: dict, index: int) -> float:
    pools = res["rerank"]["by_pool"]
    return pools[sorted(pools, key=int)[index]]["p95_seconds"]


def budgets() -> list[Budget]:
    """Every budget of DESIGN §7; the serve latency ones at the middle and largest size."""
    return [
        Budget("loop_1_client", "next-task + label loop, 1 client (middle size)", 300,
               "loops/s", True, lambda res: res["serve"]["always"]["one_client"]["loops_per_s"]),
        Budget("next_p50_mid", "next-task p50 (middle size)", 3, "ms", False,
               lambda res: _latency(_sizes(res)[1], "p50")(res)),
        Budget("next_p99_mid", "next-task p99 (middle size)", 15, "ms", False,
               lambda res: _latency(_sizes(res)[1], "p99")(res)),
        Budget("next_p50_max", "next-task p50 (largest size)", 3, "ms", False,
               lambda res: _latency(_sizes(res)[-1], "p50")(res)),
        Budget("next_p99_max", "next-task p99 (largest size)", 15, "ms", False,
               lambda res: _latency(_sizes(res)[-1], "p99")(res)),
        Budget("p99_growth", "next-task p99 largest / smallest size", 1.25, "x", False,
               _p99_growth),
        Budget("concurrency_speedup", "8 clients' loops/s / 1 client's", 1.5, "x", True,
               lambda res: res["serve"]["always"]["speedup"]),
        Budget("double_leases", "items leased (or labeled) twice", 0, "items", False,
               _double_leases),
        Budget("ingest", "ingest over HTTP, batches of 1,000", 10_000, "items/s", True,
               lambda res: res["ingest"]["items_per_s"]),
        Budget("scoring_margin", "scoring kernel margin, k=10 (100k rows in full)", 10_000_000,
               "rows/s", True, lambda res: res["scoring"]["rows_per_s"]["margin"]),
        Budget("rescore_2_workers", "full re-score, 2 workers", 20, "s", False,
               lambda res: res["rescore"]["runs"]["2_workers"]["seconds"]),
        Budget("rerank", "label -> re-ranked queue p95, 100k pending", 5, "s", False,
               lambda res: _rerank(res, 0)),
        Budget("rerank_1m", "label -> re-ranked queue p95, largest pool (1M)", 2, "s",
               False, lambda res: _rerank(res, -1)),
        Budget("shipped", "8 clients with the worker / without (as shipped)", 0.7, "x",
               True, lambda res: res["shipped"]["ratio"]),
        Budget("memory_per_item", "Redis memory per item (used_memory delta)", 1024, "bytes",
               False, lambda res: res["memory"]["bytes_per_item_used_memory"]),
        Budget("cluster_serving", "3-master cluster loops/s / single Redis's (lower of 1, 8 "
               "clients; --cluster)", 0.8, "x", True, _cluster_ratio),
    ]


def judge_all(results: dict) -> dict:
    return {budget.key: budget.judge(results) for budget in budgets()}
