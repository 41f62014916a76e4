"""Seeded benchmark items: k=5 labels, 2 supplied models, no features, a small payload.

Every random draw comes from ``numpy.random.default_rng([seed, first_index])``, so a
batch is the same whoever builds it and in whatever order.  Imports only numpy: client
processes build their request bodies with it and must start quickly.
"""

from __future__ import annotations

import json

import numpy as np

LABELS = ["a", "b", "c", "d", "e"]  # k = 5
MODELS = ("model-a", "model-b")  # 2 supplied models, no features
BATCH = 1000  # DESIGN §3 limit per ingest request
SEED = 20240601


def make_items(start: int, n: int, seed: int = SEED) -> list[dict]:
    """Items ``start .. start+n-1``: two rounded probability rows each, a small payload."""
    rng = np.random.default_rng([seed, start])
    proba = np.round(rng.dirichlet(np.ones(len(LABELS)), size=(len(MODELS), n)), 4)
    proba[..., -1] = np.round(1.0 - proba[..., :-1].sum(axis=-1), 4)  # rows sum to 1
    proba = np.clip(proba, 0.0, 1.0)
    return [{"id": f"item-{start + i:07d}",
             "predictions": {name: proba[m, i].tolist() for m, name in enumerate(MODELS)},
             "payload": {"doc": f"doc-{start + i}"}} for i in range(n)]


def encoded_batches(start: int, n: int, seed: int = SEED) -> list[bytes]:
    """Ingest request bodies of ``BATCH`` items each, JSON-encoded ahead of the timing."""
    return [json.dumps({"items": make_items(first, min(BATCH, start + n - first), seed)},
                       separators=(",", ":")).encode()
            for first in range(start, start + n, BATCH)]
