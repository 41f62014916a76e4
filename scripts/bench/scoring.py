"""Throughput of the scoring kernels on seeded random probabilities (DESIGN §7).

Budgets: ``margin`` >= 10 M rows/s and the full ``score`` with a 3-member committee
>= 2 M rows/s on 100k x 10. Run ``python -m taskrank.scripts.bench.scoring`` or call ``run()``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np

from taskrank.learning.density import density
from taskrank.learning.disagreement import consensus_kl, vote_entropy
from taskrank.learning.priority import score
from taskrank.learning.uncertainty import entropy, least_confidence, margin

COMMITTEE_MEMBERS = 3
FEATURES = 10


def _best_seconds(call: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


def run(n: int = 100_000, k: int = 10, repeats: int = 5) -> dict:
    """Best-of-``repeats`` rows per second of every kernel and of the full score.

    Returns
    -------
    result : dict
        ``{"rows": n, "k": k, "rows_per_s": {name: float}}``.
    """
    if n < 1 or k < 2 or repeats < 1:
        raise ValueError(f"need n >= 1, k >= 2, repeats >= 1; got n={n}, k={k}, repeats={repeats}")
    rng = np.random.default_rng(0)
    proba = rng.dirichlet(np.ones(k), size=n)
    committee = rng.dirichlet(np.ones(k), size=(COMMITTEE_MEMBERS, n))
    features = rng.normal(size=(n, FEATURES))
    kernels: dict[str, Callable[[], object]] = {
        "least_confidence": lambda: least_confidence(proba),
        "margin": lambda: margin(proba),
        "entropy": lambda: entropy(proba),
        "vote_entropy": lambda: vote_entropy(committee),
        "consensus_kl": lambda: consensus_kl(committee),
        "density": lambda: density(features),
        # Default strategy: margin + consensus_kl; density has weight 0 so it is skipped.
        "score": lambda: score(committee, features=features),
    }
    rates = {name: n / _best_seconds(call, repeats) for name, call in kernels.items()}
    return {"rows": n, "k": k, "rows_per_s": rates}


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, run the benchmark and print its JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="items per batch")
    parser.add_argument("--classes", type=int, default=10, help="classes per item (k)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs; the best counts")
    args = parser.parse_args(argv)
    try:
        result = run(n=args.rows, k=args.classes, repeats=args.repeats)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
