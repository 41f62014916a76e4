"""Scores a batch of items: builds committees from supplied predictions and the project's
ranking model, then calls ``taskrank.learning.priority.score`` once per group."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from taskrank.learning.priority import Strategy, score


@dataclass
class ItemInput:
    """One validated item, ready to score and store."""

    id: str
    predictions: dict[str, list[float]]  # model name -> probabilities (renormalised)
    features: list[float] | None
    skills: list[str]
    payload: object
    boost: float
    gold: str | None


def model_inputs(items: list[ItemInput], models: list[str], n_features: int | None,
                 n_classes: int) -> np.ndarray:
    """The ranking model's input rows: features, then each known model's probabilities
    (uniform where an item lacks that model). Shape (n, n_features + len(models) * k)."""
    uniform = [1.0 / n_classes] * n_classes
    rows = []
    for item in items:
        row = list(item.features) if n_features else []
        for name in models:
            row.extend(item.predictions.get(name, uniform))
        rows.append(row)
    return np.asarray(rows, dtype=float).reshape(len(items), -1)


def stored_item(iid: str, preds: str | None, feats: str | None,
                boost: str | None = None) -> ItemInput:
    """An item to score, from the JSON fields of its hash (``p``, ``f``, ``b``)."""
    return ItemInput(iid, json.loads(preds) if preds else {},
                     json.loads(feats) if feats else None, [], None, float(boost or 0), None)


def score_items(items: list[ItemInput], strategy: dict, n_classes: int,
                ranker: object | None = None, breakdown: bool = True,
                coverage: np.ndarray | None = None,
                reference: np.ndarray | None = None) -> tuple[np.ndarray, list[str]]:
    """Priorities (n,) and breakdown JSON strings for ``items`` (empty strings when
    ``breakdown`` is false: a re-score stores only priorities).

    Items are grouped by which supplied models they carry, so each group's committee is a
    dense (m, n_g, k) tensor; the ranking model's bootstrap committee joins every group.
    ``coverage`` (n,) is the pool map's cold-start priority (``queue.pool_map.cover``),
    used for items nothing can score yet; ``reference`` the project's fixed rows for the
    density term.
    """
    strategy_obj = Strategy.from_dict(strategy)
    priorities = np.zeros(len(items))
    breakdowns = [""] * len(items)
    for group in _groups(items):
        members, estimates = _committee(items, group, n_classes, ranker,
                                        strategy["committee"]["use_supplied"])
        features = _features(items, group)
        boost = np.array([items[i].boost for i in group])
        # Before the project's own model, coverage joins the supplied models' terms: a
        # platform's weak model alone put every first label on its own boundary (taskrank
        # demo: 25 boundary items, labeled worse than 25 random ones under expert noise).
        covered = coverage is not None and (members is None or ranker is None)
        result = score(members, features=features, boost=boost, strategy=strategy_obj,
                       coverage=coverage[group] if covered else None,
                       reference=_reference(reference, features), estimates=estimates)
        priorities[group] = result.priority
        if not breakdown:
            continue
        terms = {name: np.asarray(values) for name, values in result.terms.items()}
        for row, index in enumerate(group):
            breakdowns[index] = json.dumps(
                {name: round(float(values[row]), 6) for name, values in terms.items()},
                separators=(",", ":"))
    return priorities, breakdowns


def _reference(reference: np.ndarray | None, features: np.ndarray | None) -> np.ndarray | None:
    """The project's reference rows when they match the features (else the batch's own)."""
    if reference is None or features is None or reference.shape[1] != features.shape[1]:
        return None
    return reference


def _groups(items: list[ItemInput]) -> list[list[int]]:
    groups: dict[tuple, list[int]] = defaultdict(list)
    for index, item in enumerate(items):
        groups[(tuple(sorted(item.predictions)), item.features is not None)].append(index)
    return list(groups.values())


def _committee(items: list[ItemInput], group: list[int], n_classes: int,
               ranker: object | None, use_supplied: bool
               ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(committee, point estimates): supplied models plus the learned bootstrap members,
    and supplied models plus the learned main model (None: the committee itself)."""
    first = items[group[0]]
    names = sorted(first.predictions)
    learned = ranker is not None and ranker.accepts(first)
    parts = []
    # Without a usable trained model the supplied predictions are all there is to rank by.
    if names and (use_supplied or not learned):
        supplied = np.array([[items[i].predictions[name] for i in group] for name in names])
        parts.append(supplied.reshape(len(names), len(group), n_classes))
    if not learned:
        return (np.concatenate(parts, axis=0) if parts else None), None
    main, members = ranker.committee([items[i] for i in group])
    return np.concatenate([*parts, members], axis=0), np.concatenate([*parts, main], axis=0)


def _features(items: list[ItemInput], group: list[int]) -> np.ndarray | None:
    if items[group[0]].features is None:
        return None
    return np.array([items[i].features for i in group], dtype=float)
