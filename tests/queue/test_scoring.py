"""Committees built for scoring: supplied predictions and the learned ranker."""

from __future__ import annotations

import numpy as np

from taskrank.learning.priority import Strategy
from taskrank.learning.ranker import TaskRanker
from taskrank.queue.models import LoadedModel
from taskrank.queue.scoring import ItemInput, score_items


def _items(n: int, seed: int = 0) -> list[ItemInput]:
    rng = np.random.default_rng(seed)
    return [ItemInput(f"i{i}", {"m": [0.5, 0.5]}, rng.normal(size=2).tolist(), [], None, 0.0,
                      None) for i in range(n)]


def _model(items: list[ItemInput]) -> LoadedModel:
    X = np.array([item.features for item in items])
    ranker = TaskRanker(members=3, classes=[0, 1]).fit(X, (X.sum(axis=1) > 0).astype(int))
    return LoadedModel(ranker, [], 2, 2, 1)


def test_use_supplied_false_leaves_supplied_models_out_once_a_model_exists():
    """With committee.use_supplied false and a trained model, the flat supplied
    predictions no longer pull every item's uncertainty to the maximum."""
    items = _items(40)
    model = _model(items)
    with_supplied = Strategy.from_dict({}).to_dict()
    without = Strategy.from_dict({"committee": {"use_supplied": False}}).to_dict()
    pri_with, _ = score_items(items, with_supplied, 2, model)
    pri_without, _ = score_items(items, without, 2, model)
    assert pri_without.std() > pri_with.std()
    assert not np.allclose(pri_with, pri_without)


def test_use_supplied_false_still_ranks_by_supplied_before_any_model():
    """Before a model is trained, supplied predictions rank items even when
    use_supplied is false (cold start never ignores the only signal there is)."""
    items = _items(5)
    items[0].predictions["m"] = [0.99, 0.01]
    without = Strategy.from_dict({"committee": {"use_supplied": False}}).to_dict()
    priorities, breakdowns = score_items(items, without, 2, None)
    assert priorities.argmin() == 0
    assert all('"uncertainty"' in b for b in breakdowns)
