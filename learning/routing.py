"""Routing maths (DESIGN §5): expert accuracy posteriors, fit, eligibility and value.

Everything here is vectorised over candidate items: the caller (``queue/``) loads one
expert and a slice of the pool as arrays and gets arrays back.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from taskrank.learning.aggregation import clip_accuracy

__all__ = [
    "DEFAULT_GENERAL_LEVEL",
    "PRIOR_STRENGTH",
    "BetaPosterior",
    "accuracy_posterior",
    "best_item",
    "best_other_fit",
    "eligible",
    "general_level",
    "hold_back",
    "item_fit",
    "value",
]

# The declared level counts as this many labels: a handful of real labels only nudges
# it, a few dozen override it.
PRIOR_STRENGTH = 10.0
# Prior accuracy on untagged items of an expert who declared no skill at all.
DEFAULT_GENERAL_LEVEL = 0.8


class BetaPosterior(NamedTuple):
    """Beta posterior of an expert's accuracy; each field has the broadcast shape."""

    alpha: np.ndarray
    beta: np.ndarray
    mean: np.ndarray


def accuracy_posterior(
    declared_level: np.ndarray | float,
    n_agree: np.ndarray | float,
    n_disagree: np.ndarray | float,
    prior_strength: float = PRIOR_STRENGTH,
) -> BetaPosterior:
    """Beta posterior of accuracy per (expert, tag) from a declared level and agreements.

    The prior is ``Beta(level * strength, (1 - level) * strength)``: the declared level
    counts as ``prior_strength`` pseudo-labels, so a handful of real labels only nudges it
    and a few dozen override it.

    Parameters
    ----------
    declared_level : array-like, any shape
        Declared skill level in [0, 1]; clipped into ``aggregation.ACCURACY_BOUNDS``.
    n_agree, n_disagree : array-like, broadcastable with ``declared_level``
        Counts (may be fractional, e.g. posterior-weighted) of labels that agreed or
        disagreed with the aggregated or gold label. Must be >= 0.
    prior_strength : float
        Pseudo-count weight of the declared level, > 0.

    Returns
    -------
    BetaPosterior
        ``(alpha, beta, mean)`` arrays of the broadcast shape; ``mean = alpha / (alpha + beta)``.
    """
    if not np.isfinite(prior_strength) or prior_strength <= 0:
        raise ValueError(f"prior_strength must be a finite number > 0, got {prior_strength!r}")
    level = np.asarray(declared_level, dtype=float)
    if np.any(~np.isfinite(level)) or np.any((level < 0) | (level > 1)):
        raise ValueError("declared_level must lie in [0, 1]")
    n_agree = np.asarray(n_agree, dtype=float)
    n_disagree = np.asarray(n_disagree, dtype=float)
    if np.any(~(n_agree >= 0)) or np.any(~(n_disagree >= 0)):
        raise ValueError("n_agree and n_disagree must be finite counts >= 0")
    level, n_agree, n_disagree = np.broadcast_arrays(
        clip_accuracy(level), n_agree, n_disagree
    )
    alpha = level * prior_strength + n_agree
    beta = (1.0 - level) * prior_strength + n_disagree
    return BetaPosterior(alpha, beta, alpha / (alpha + beta))


def general_level(declared_levels: np.ndarray) -> float:
    """Prior accuracy on untagged items: the mean declared level, or
    :data:`DEFAULT_GENERAL_LEVEL` when the expert declared no skill."""
    levels = np.asarray(declared_levels, dtype=float)
    return float(levels.mean()) if levels.size else DEFAULT_GENERAL_LEVEL


def _check_mask(item_tag_mask: np.ndarray, n_tags: int | None = None) -> np.ndarray:
    mask = np.asarray(item_tag_mask)
    if mask.ndim != 2 or mask.dtype != bool:
        raise ValueError(
            "item_tag_mask must be a boolean array (n_items, n_tags), "
            f"got {mask.dtype} {mask.shape}"
        )
    if n_tags is not None and mask.shape[1] != n_tags:
        raise ValueError(f"item_tag_mask has {mask.shape[1]} tags, expected {n_tags}")
    return mask


def item_fit(
    tag_accuracy: np.ndarray,
    item_tag_mask: np.ndarray,
    default: float | np.ndarray | None = None,
) -> np.ndarray:
    """Fit of an expert (or of several) for each item: the *minimum* accuracy over its tags.

    The minimum, not the mean, because an item that needs several skills is only labelled
    right when the expert masters all of them: the weakest required skill bounds the
    answer, and a mean would let a strong tag hide a missing one.

    Parameters
    ----------
    tag_accuracy : ndarray of shape (n_tags,) or (n_experts, n_tags)
        Estimated accuracy per tag (e.g. ``accuracy_posterior(...).mean``).
    item_tag_mask : ndarray of bool, shape (n_items, n_tags)
        ``True`` where the item requires the tag.
    default : float or ndarray of shape (n_experts,), optional
        Fit for items with no required tag; defaults to the expert's mean accuracy over
        all tags.

    Returns
    -------
    ndarray of shape (n_items,) or (n_experts, n_items)
    """
    acc = np.asarray(tag_accuracy, dtype=float)
    if acc.ndim not in (1, 2):
        raise ValueError(
            f"tag_accuracy must have shape (n_tags,) or (n_experts, n_tags), got {acc.shape}"
        )
    mask = _check_mask(item_tag_mask, acc.shape[-1])
    acc2 = np.atleast_2d(acc)
    fit = np.where(mask[None, :, :], acc2[:, None, :], np.inf).min(axis=2, initial=np.inf)
    fill = acc2.mean(axis=1) if default is None else np.broadcast_to(default, acc2.shape[:1])
    untagged = ~mask.any(axis=1)
    fit = np.where(untagged[None, :], np.asarray(fill, dtype=float)[:, None], fit)
    return fit[0] if acc.ndim == 1 else fit


def eligible(
    expert_tags_mask: np.ndarray,
    item_tag_mask: np.ndarray,
    already_seen: np.ndarray,
    active: bool,
    open_leases: int,
    capacity: int,
) -> np.ndarray:
    """Which items one expert may be given (DESIGN §5).

    Parameters
    ----------
    expert_tags_mask : ndarray of bool, shape (n_tags,)
        Tags the expert holds.
    item_tag_mask : ndarray of bool, shape (n_items, n_tags)
        Tags each item requires.
    already_seen : ndarray of bool, shape (n_items,)
        ``True`` where the expert already labelled or holds a lease on the item.
    active : bool
        Whether the expert is active.
    open_leases, capacity : int
        Open leases held and the maximum allowed.

    Returns
    -------
    ndarray of bool, shape (n_items,)
        ``True`` where the expert is active and under capacity, holds every required tag
        and has not seen the item.
    """
    held = np.asarray(expert_tags_mask)
    if held.ndim != 1 or held.dtype != bool:
        raise ValueError(
            f"expert_tags_mask must be a boolean array (n_tags,), got {held.dtype} {held.shape}"
        )
    mask = _check_mask(item_tag_mask, held.shape[0])
    seen = np.asarray(already_seen)
    if seen.shape != mask.shape[:1] or seen.dtype != bool:
        raise ValueError(
            f"already_seen must be a boolean array ({mask.shape[0]},), "
            f"got {seen.dtype} {seen.shape}"
        )
    if not active or open_leases >= capacity:
        return np.zeros(mask.shape[0], dtype=bool)
    missing_tag = (mask & ~held[None, :]).any(axis=1)
    return ~missing_tag & ~seen


def value(
    priority: np.ndarray,
    fit: np.ndarray,
    cost: float | np.ndarray,
    fit_exponent: float = 1.0,
    cost_exponent: float = 0.0,
) -> np.ndarray:
    """Value of giving items to an expert: ``priority * fit**a / cost**b``.

    Parameters
    ----------
    priority : ndarray of shape (n_items,)
        Item priorities (DESIGN §4).
    fit : ndarray of shape (n_items,)
        The expert's fit for each item, in [0, 1].
    cost : float or ndarray broadcastable to (n_items,)
        The expert's cost (e.g. per hour); must be > 0.
    fit_exponent, cost_exponent : float
        ``a`` and ``b``; ``b = 0`` ignores cost.

    Returns
    -------
    ndarray of shape (n_items,)
    """
    cost = np.asarray(cost, dtype=float)
    if np.any(~(cost > 0)) or np.any(~np.isfinite(cost)):
        raise ValueError(f"cost must be finite and > 0, got {cost!r}")
    fit = np.asarray(fit, dtype=float)
    if np.any(fit < 0):
        raise ValueError("fit must be >= 0")
    return np.asarray(priority, dtype=float) * fit**fit_exponent / cost**cost_exponent


def best_other_fit(fit: np.ndarray, available: np.ndarray, asking: int) -> np.ndarray:
    """Best fit per item among the *other* experts that could take it.

    Parameters
    ----------
    fit : ndarray of shape (n_experts, n_items)
        Fit of every expert for every candidate item.
    available : ndarray of bool, shape (n_experts, n_items)
        ``True`` where that expert is eligible for the item (see :func:`eligible`).
    asking : int
        Row of the expert asking for a task; it is left out.

    Returns
    -------
    ndarray of shape (n_items,)
        Best other fit, ``nan`` where no other expert is available.
    """
    fit = np.asarray(fit, dtype=float)
    available = np.asarray(available, dtype=bool)
    if fit.ndim != 2 or available.shape != fit.shape:
        raise ValueError(
            "fit and available must share a shape (n_experts, n_items), "
            f"got {fit.shape} and {available.shape}"
        )
    if not 0 <= asking < fit.shape[0]:
        raise ValueError(f"asking must be a row of fit in [0, {fit.shape[0]}), got {asking}")
    others = available.copy()
    others[asking] = False
    best = np.where(others, fit, -np.inf).max(axis=0, initial=-np.inf)
    return np.where(np.isfinite(best), best, np.nan)


def hold_back(asking_fit: np.ndarray, other_fit: np.ndarray, margin: float = 0.1) -> np.ndarray:
    """Global fit hold-back: keep an item for a clearly better expert.

    Greedy routing gives the asking expert its best item even when another available
    expert would label it much better; holding such items back trades a little latency
    for label quality. An item is held back when ``other_fit - asking_fit > margin``;
    items with no other available expert (``nan``) are never held back.

    Parameters
    ----------
    asking_fit : ndarray of shape (n_items,)
        Fit of the asking expert.
    other_fit : ndarray of shape (n_items,)
        Best fit among other available experts (:func:`best_other_fit`), ``nan`` if none.
    margin : float
        Fit advantage, >= 0, that justifies waiting for the other expert.

    Returns
    -------
    ndarray of bool, shape (n_items,)
    """
    if not margin >= 0:
        raise ValueError(f"margin must be >= 0, got {margin!r}")
    gap = np.asarray(other_fit, dtype=float) - np.asarray(asking_fit, dtype=float)
    return np.nan_to_num(gap, nan=-np.inf) > margin


def best_item(item_value: np.ndarray, candidates: np.ndarray) -> int:
    """Index of the candidate of highest value, or -1 when there is none.

    Parameters
    ----------
    item_value : ndarray of shape (n_items,)
        Output of :func:`value`.
    candidates : ndarray of bool, shape (n_items,)
        Eligible and not held back.

    Returns
    -------
    int
        Ties go to the lowest index.
    """
    item_value = np.asarray(item_value, dtype=float)
    candidates = np.asarray(candidates, dtype=bool)
    if candidates.shape != item_value.shape or item_value.ndim != 1:
        raise ValueError(
            "item_value and candidates must be (n_items,), "
            f"got {item_value.shape} and {candidates.shape}"
        )
    if not candidates.any():
        return -1
    return int(np.argmax(np.where(candidates, item_value, -np.inf)))
