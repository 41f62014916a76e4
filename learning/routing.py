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
    "DEFAULT_LABEL_SECONDS",
    "FLAGGED",
    "NEEDS_GOLD",
    "PRIOR_STRENGTH",
    "QUALIFIED",
    "BetaPosterior",
    "accuracy_posterior",
    "best_item",
    "best_other_fit",
    "eligible",
    "gate",
    "gold_to_qualify",
    "general_level",
    "gold_share",
    "hold_back",
    "item_fit",
    "label_cost",
    "posterior_sd",
    "predicted_seconds",
    "value",
    "worth",
]

# The declared level counts as this many labels: a handful of real labels only nudges
# it, a few dozen override it.
PRIOR_STRENGTH = 10.0
# Prior accuracy on untagged items of an expert who declared no skill at all.
DEFAULT_GENERAL_LEVEL = 0.8
# Seconds one label is expected to take before an expert has reported any, and how many
# labels that guess is worth: the first few reported times move the prediction quickly.
DEFAULT_LABEL_SECONDS = 120.0
SECONDS_PRIOR_LABELS = 2.0
# Posterior width (standard deviation) of an expert's accuracy at which gold and spot
# checks are served at their full rate; narrower posteriors get proportionally fewer.
FULL_RATE_SD = 0.1
# Qualification states of an (expert, skill): see :func:`gate`.
QUALIFIED, NEEDS_GOLD, FLAGGED = 0, 1, 2


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
        The expert's cost of one label of each item (:func:`label_cost`); must be > 0.
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


def worth(fit: np.ndarray, cost: np.ndarray, fit_exponent: float = 1.0,
          cost_exponent: float = 0.0) -> np.ndarray:
    """Value per unit of priority, ``fit**a / cost**b``: what the hold-back compares
    between experts (``value = priority * worth``)."""
    return value(1.0, fit, cost, fit_exponent, cost_exponent)


def best_other_fit(fit: np.ndarray, available: np.ndarray, asking: int) -> np.ndarray:
    """Best figure per item among the *other* experts that could take it.

    Parameters
    ----------
    fit : ndarray of shape (n_experts, n_items)
        A figure of every expert for every candidate item (the hold-back passes
        :func:`worth`).
    available : ndarray of bool, shape (n_experts, n_items)
        ``True`` where that expert is eligible for the item (see :func:`eligible`).
    asking : int
        Row of the expert asking for a task; it is left out.

    Returns
    -------
    ndarray of shape (n_items,)
        Best other figure, ``nan`` where no other expert is available.
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


def hold_back(asking_worth: np.ndarray, other_worth: np.ndarray,
              margin: float = 0.1) -> np.ndarray:
    """Hold-back: keep an item for an expert who is clearly better value for the money.

    Greedy routing gives the asking expert its best item even when another working expert
    would label it much better, or as well for much less; holding such items back trades
    a little latency for label quality per dollar.  An item is held back when
    ``other_worth > asking_worth * (1 + margin)`` (:func:`worth`: fit^a / cost^b per
    label); items with no other available expert (``nan``) are never held back.

    Parameters
    ----------
    asking_worth : ndarray of shape (n_items,)
        Worth of the asking expert for each item.
    other_worth : ndarray of shape (n_items,)
        Best worth among other available experts (:func:`best_other_fit`), ``nan`` if none.
    margin : float
        Relative advantage, >= 0, that justifies waiting for the other expert.

    Returns
    -------
    ndarray of bool, shape (n_items,)
    """
    if not margin >= 0:
        raise ValueError(f"margin must be >= 0, got {margin!r}")
    other = np.nan_to_num(np.asarray(other_worth, dtype=float), nan=-np.inf)
    return other > np.asarray(asking_worth, dtype=float) * (1.0 + margin)


def predicted_seconds(seconds_sum: np.ndarray | float, n_labels: np.ndarray | float,
                      prior_seconds: np.ndarray | float = DEFAULT_LABEL_SECONDS,
                      strength: float = SECONDS_PRIOR_LABELS) -> np.ndarray:
    """Expected seconds of an expert's next label, per skill: the mean of the reported
    times, shrunk towards ``prior_seconds`` as if it had been reported ``strength`` times.

    Parameters
    ----------
    seconds_sum, n_labels : array-like, broadcastable
        Total seconds reported and the number of labels they cover (>= 0).
    prior_seconds : array-like, broadcastable
        The guess without reports (e.g. the expert's time over all its skills), > 0.
    strength : float
        Pseudo-labels the guess is worth, > 0.

    Returns
    -------
    ndarray of the broadcast shape, > 0
    """
    total = np.asarray(seconds_sum, dtype=float)
    n = np.asarray(n_labels, dtype=float)
    prior = np.asarray(prior_seconds, dtype=float)
    if np.any(~(total >= 0)) or np.any(~(n >= 0)) or np.any(~(prior > 0)) or not strength > 0:
        raise ValueError("seconds and counts must be >= 0, prior seconds and strength > 0")
    return (total + strength * prior) / (n + strength)


def label_cost(rate_per_hour: np.ndarray | float, seconds: np.ndarray | float) -> np.ndarray:
    """US dollars of one label: the hourly rate times the hours it takes."""
    return np.asarray(rate_per_hour, dtype=float) * np.asarray(seconds, dtype=float) / 3600.0


def posterior_sd(posterior: BetaPosterior) -> np.ndarray:
    """Standard deviation of a Beta posterior (its width)."""
    total = posterior.alpha + posterior.beta
    return np.sqrt(posterior.mean * (1.0 - posterior.mean) / (total + 1.0))


def gold_share(posterior: BetaPosterior, rate: float) -> np.ndarray:
    """Share of an expert's tasks spent on checking it (gold items, spot checks), per
    skill: the full ``rate`` while its accuracy posterior is as wide as a new expert's
    (standard deviation :data:`FULL_RATE_SD`), then in proportion to its variance, which
    falls as one over the evidence: new and doubtful experts are checked most, and the
    checks an expert costs grow only with the log of its labels."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must lie in [0, 1], got {rate!r}")
    return rate * np.minimum(1.0, (posterior_sd(posterior) / FULL_RATE_SD) ** 2)


def gold_to_qualify(min_gold: int, redundancy: int) -> int:
    """Gold answers the gate asks of an expert before real items of a skill: ``min_gold``
    where a label stands alone (redundancy 1); none where every item gets labels from
    several experts, whose agreement judges each of them (Dawid–Skene) and still flags
    the poor ones.  On digits at redundancy 3 the gate's gold cost 5 % of the labels,
    which left items a label short."""
    return min_gold if redundancy <= 1 else 0


# A skill is re-tested on gold up to this many times min_gold while its gold answers stay
# below min_accuracy, so that a few unlucky answers do not flag a fair expert.
RETEST_FACTOR = 3


def gate(n_gold: np.ndarray, gold_right: np.ndarray, gold_available: np.ndarray,
         evidence: np.ndarray, accuracy: np.ndarray, min_gold: int,
         min_accuracy: float) -> np.ndarray:
    """Qualification of each (expert, skill), before real items of the skill are served.

    - :data:`NEEDS_GOLD` while the project holds gold of the skill the expert has not
      answered, and the expert answered fewer than ``min_gold`` gold items, or its gold
      answers so far are right less often than ``min_accuracy`` and it answered fewer
      than :data:`RETEST_FACTOR` x ``min_gold`` (a sequential test: a spammer keeps
      answering gold, never real items, until it is flagged);
    - then :data:`FLAGGED` when, after ``min_gold`` gold answers, they are right less
      often than ``min_accuracy``, or when the learned accuracy (posterior mean) is below
      it once there is evidence at all (a gold answer, or ``min_gold`` labels' worth of
      agreement): a declared level alone never flags;
    - else :data:`QUALIFIED`.

    Parameters
    ----------
    n_gold, gold_right : array-like of int
        Gold items of the skill the expert answered, and those it got right.
    gold_available : array-like of int
        Gold items of the skill in the project.
    evidence : array-like
        Labels' worth of evidence in the posterior besides gold (agreement counts).
    accuracy : array-like
        Posterior mean accuracy.
    min_gold : int
        See :func:`gold_to_qualify`.
    min_accuracy : float

    Returns
    -------
    ndarray of int, the broadcast shape
    """
    n_gold, right, available, evidence, accuracy = np.broadcast_arrays(
        *(np.asarray(a, dtype=float)
          for a in (n_gold, gold_right, gold_available, evidence, accuracy)))
    tested = (min_gold >= 1) & (n_gold >= min_gold)  # min_gold 0: gold alone never judges
    failing = tested & (right < min_accuracy * n_gold)
    needs = (n_gold < available) & (
        (n_gold < min_gold) | (failing & (n_gold < RETEST_FACTOR * min_gold)))
    judged = (n_gold >= 1) | (evidence >= max(min_gold, 1))
    flagged = ~needs & (failing | (judged & (accuracy < min_accuracy)))
    return np.where(needs, NEEDS_GOLD, np.where(flagged, FLAGGED, QUALIFIED))


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
