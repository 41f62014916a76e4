"""Acquisition strategy and the priority score that orders the labeling queue.

A :class:`Strategy` is the validated, JSON-shaped configuration of a project (DESIGN §4);
:func:`score` turns a committee of probability rows (plus optional features and business
boost) into one priority per item, keeping each weighted term for the explanation.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
from sklearn.utils import check_random_state

from taskrank.learning._checks import (
    Rule,
    check_committee,
    check_matrix,
    check_vector,
    rule_boolean,
    rule_choice,
    rule_integer,
    rule_number,
)
from taskrank.learning.density import density
from taskrank.learning.disagreement import DISAGREEMENT, DISAGREEMENT_KERNELS, consensus
from taskrank.learning.ranker import MODELS
from taskrank.learning.uncertainty import UNCERTAINTY, UNCERTAINTY_KERNELS


def _setting(default: Any, rule: Rule) -> Any:
    """A dataclass field with its default and the rule that validates JSON input."""
    return field(default=default, metadata={"rule": rule})


# Bounds keep every priority and routing value finite (and jobs affordable): a weight or
# exponent near float max would overflow to inf, which JSON cannot carry.
MAX_WEIGHT = 1000.0


@dataclass(frozen=True)
class Weights:
    """Weight of each normalised term in the priority (``weights`` section)."""

    # Disagreement is off by default: replayed on digits (taskrank simulate, 5 seeds), the
    # bootstrap committee's disagreement picks outliers far from the labeled set and any
    # weight on it lowers the AULC below plain margin sampling (0.6/0.4: 0.867; 1.0/0.0:
    # 0.892; margin 0.891).  Weight it when several supplied models disagree usefully.
    uncertainty: float = _setting(1.0, rule_number(0.0, MAX_WEIGHT))
    disagreement: float = _setting(0.0, rule_number(0.0, MAX_WEIGHT))
    density: float = _setting(0.0, rule_number(0.0, MAX_WEIGHT))


@dataclass(frozen=True)
class Committee:
    """Learned committee: model kind, bootstrap size, whether supplied predictions join."""

    model: str = _setting("logistic_regression", rule_choice("model", MODELS))
    members: int = _setting(5, rule_integer(1, 100))
    use_supplied: bool = _setting(True, rule_boolean)


@dataclass(frozen=True)
class Retrain:
    """Retrain after every ``every_labels`` new labels, once ``min_labels`` exist, and no
    sooner than ``min_interval_seconds`` after the previous retrain started, on at most
    ``max_train_items`` labeled items: all of them up to there, beyond it the labels new
    since the last retrain and a uniform sample of the older ones."""

    # 10, not 25: replayed as a platform runs it (cold start, the claim's exploration and
    # diversity; 3 seeds, budget 200), re-ranking every 25 labels lost to margin sampling
    # re-ranked every 10 on breast_cancer (-0.008 AULC) and wine (-0.016), every 10 did
    # not. Retrains merge while one waits, so under a fast label stream the worker's load
    # is the same; under a slow one a retrain of a small project costs well under a second.
    every_labels: int = _setting(10, rule_integer(1, 1_000_000))
    min_labels: int = _setting(10, rule_integer(1, 1_000_000))
    # A bound on the read and the fit of a retrain (and of its cross-validation): with it, a
    # retrain took 1.4-2.0 s (p50) at 100k and at 1M finished items, against 20 s and 155 s
    # re-aggregating and training on all of them (taskrank bench retrain).  20,000, not
    # fewer: on classes10 (2 seeds, taskrank bench train_cap) the capped model's held-out
    # accuracy is within 0.0022 of the all-labels one at 100k labels and 0.0012 at 50k,
    # where 10,000 lost 0.004 and 0.002, and 5,000 lost 0.007-0.009.
    max_train_items: int = _setting(20_000, rule_integer(100, 10_000_000))
    # 2 s: under 8 clients labeling as fast as the server answers (100k pending, one worker
    # at niceness 10, taskrank bench shipped, 3 rounds of 10 s) serving kept 0.98x of its
    # loops/s without the worker with a 2 s floor and 1.04x with 5 s (at niceness 0: 0.57x
    # and 0.44x, so niceness, not the floor, is what keeps serving); and replayed as a
    # platform runs it (digits, simulate --http --cold --concurrent 8, budget 300, 3 seeds)
    # the 2 s floor kept AULC at 0.906 against 0.909 without a floor (random 0.876,
    # margin 0.898): early retrains, which the cold start needs, are seconds apart anyway.
    min_interval_seconds: float = _setting(2.0, rule_number(0.0, 86_400.0))


@dataclass(frozen=True)
class Redundancy:
    """Adaptive redundancy: stop asking once the aggregated label is this confident."""

    adaptive: bool = _setting(False, rule_boolean)
    stop_confidence: float = _setting(0.95, rule_number(0.0, 1.0, open_low=True))
    max_labels: int = _setting(5, rule_integer(1, 50))


@dataclass(frozen=True)
class Routing:
    """Exponents of value = priority x fit^a / cost^b (cost: US dollars of one label), and
    the hold-back: an item waits for an expert who claimed within ``holdback_seconds``
    (0: off) and is better value per dollar (fit^a / cost^b) by more than
    ``holdback_margin`` (relative)."""

    # Measured with `taskrank simulate digits --experts` (1,000 labels, 8 experts over 4
    # domains, 2 overclaiming, $50-250/h, 5 % gold): at redundancy 1 (5 seeds), right items
    # per $1,000 were 218 with a=2, b=0 and hold-back; 299 with a=3, b=1 (the oracle with
    # the same rule: 325; random 128); a=2, b=1 lost accuracy (0.875 vs 0.883), a=3, b=0.5
    # dollars (278); without hold-back the cost hardly steers (204).  At redundancy 3 (10
    # seeds), a=3 kept 89 % of the accuracy gap to the oracle, a=4 92 %, a=5 96 % but 77 %
    # of the dollar gap; a=4 also did better at redundancy 1 (83 % of the dollar gap, 10
    # seeds, against 81 % with a=3).  b=0.5 and a margin of 0.3 did worse at redundancy 3.
    fit_exponent: float = _setting(4.0, rule_number(0.0, 10.0))
    cost_exponent: float = _setting(1.0, rule_number(0.0, 10.0))
    holdback_seconds: float = _setting(300.0, rule_number(0.0, 3600.0))
    holdback_margin: float = _setting(0.1, rule_number(0.0, 1.0))


@dataclass(frozen=True)
class DensityOptions:
    """Reference rows sampled by the density term."""

    sample_size: int = _setting(256, rule_integer(1, 10_000))


@dataclass(frozen=True)
class Coverage:
    """The pool map of the cold start and of diversity (``learning.coverage``).

    ``clusters`` k-means clusters over a reference sample of up to ``sample_size`` pending
    items; the map is refitted when the pool has grown by ``refit_growth`` (1.0: doubled).
    """

    clusters: int = _setting(32, rule_integer(1, 1024))
    sample_size: int = _setting(5000, rule_integer(10, 100_000))
    refit_growth: float = _setting(1.0, rule_number(0.01, 1000.0))


@dataclass(frozen=True)
class Explore:
    """Share of claims given to an item drawn uniformly from the pending pool.

    Once a model exists, a claim explores with probability ``share / sqrt(max(1, n /
    decay_labels))`` for n counted labels: the model's blind spots never decide alone,
    and the labels of those claims estimate its accuracy without selection bias.
    """

    share: float = _setting(0.1, rule_number(0.0, 1.0))
    decay_labels: int = _setting(100, rule_integer(1, 1_000_000))


@dataclass(frozen=True)
class Diversity:
    """Between two re-ranks, an item's value is multiplied by ``factor`` per lease already
    handed out in its cluster (1.0: off), so concurrent experts do not all get
    near-duplicates of one uncertain region."""

    factor: float = _setting(0.5, rule_number(0.0, 1.0))


@dataclass(frozen=True)
class Qualify:
    """The gate before an expert gets real items of a skill (``learning.routing.gate``):
    ``min_gold`` gold answers of the skill, then a learned accuracy of ``min_accuracy``."""

    min_gold: int = _setting(3, rule_integer(0, 1000))
    min_accuracy: float = _setting(0.5, rule_number(0.0, 1.0))


@dataclass(frozen=True)
class QA:
    """Learning each expert's accuracy at one label per item.

    ``gold_rate``: share of an expert's tasks that are gold items (known answers) while
    its accuracy posterior is wide, falling as it tightens (``learning.routing.
    gold_share``); served whatever their priority.  ``review_rate``: share of items
    finished with one label that get a second label from another expert (a spot check),
    at the same falling rate of the first labeller's posterior.
    """

    # Measured as Routing's exponents: gold 0.05 / spot checks 0.0 gave 299 right items per
    # $1,000 (overhead 6 %), 0.08 / 0.0: 296 (7 %), 0.05 / 0.03: 282 (9 %); where a
    # project has no gold, spot checks of 0.02 cost 1.4 % of labels for no loss (325 vs
    # 324) and 0.05 raised label accuracy (0.856 vs 0.843) for 1 % fewer right items per
    # dollar.  Spot checks stay on at 0.02: they are the only check of a skill without gold.
    gold_rate: float = _setting(0.05, rule_number(0.0, 1.0))
    review_rate: float = _setting(0.02, rule_number(0.0, 1.0))
    qualify: Qualify = field(default_factory=Qualify)


_SECTIONS = {
    "weights": Weights,
    "committee": Committee,
    "retrain": Retrain,
    "redundancy": Redundancy,
    "routing": Routing,
    "density": DensityOptions,
    "coverage": Coverage,
    "explore": Explore,
    "diversity": Diversity,
    "qa": QA,
}
# Sections inside sections, by field name.
_SUBSECTIONS = {"qualify": Qualify}


@dataclass(frozen=True)
class Strategy:
    """Validated acquisition strategy; ``Strategy()`` is the default of DESIGN §4.

    Build one from JSON with :meth:`from_dict`; read it with attribute access
    (``strategy.weights.uncertainty``, ``strategy.routing.fit_exponent``).
    """

    uncertainty: str = _setting("margin", rule_choice("uncertainty", UNCERTAINTY))
    disagreement: str = _setting("consensus_kl", rule_choice("disagreement", DISAGREEMENT))
    weights: Weights = field(default_factory=Weights)
    committee: Committee = field(default_factory=Committee)
    retrain: Retrain = field(default_factory=Retrain)
    redundancy: Redundancy = field(default_factory=Redundancy)
    routing: Routing = field(default_factory=Routing)
    density: DensityOptions = field(default_factory=DensityOptions)
    coverage: Coverage = field(default_factory=Coverage)
    explore: Explore = field(default_factory=Explore)
    diversity: Diversity = field(default_factory=Diversity)
    qa: QA = field(default_factory=QA)

    def __post_init__(self) -> None:
        for name, section in _SECTIONS.items():
            if not isinstance(getattr(self, name), section):
                raise ValueError(f"strategy {name} must be a {section.__name__}")
        _validated(asdict(self))

    @classmethod
    def from_dict(cls, d: Mapping | None = None) -> Strategy:
        """Merge a partial strategy dict onto the defaults and validate the whole.

        Raises
        ------
        ValueError
            Unknown key (named with its dotted path), unknown name, bad number.
        """
        return cls._build(_merge(DEFAULT_STRATEGY_DICT, {} if d is None else d))

    def updated(self, patch: Mapping) -> Strategy:
        """A copy with the partial dict ``patch`` merged on (for PATCH requests)."""
        return self._build(_merge(self.to_dict(), patch))

    def to_dict(self) -> dict:
        """Plain JSON-ready dict; ``Strategy.from_dict(s.to_dict()) == s``."""
        return asdict(self)

    @classmethod
    def _build(cls, tree: dict) -> Strategy:
        clean = _validated(tree)
        sections = {name: _section(kind, clean[name]) for name, kind in _SECTIONS.items()}
        return cls(uncertainty=clean["uncertainty"], disagreement=clean["disagreement"], **sections)


def _section(kind: type, clean: dict):
    """A section dataclass from its validated dict, building the sections inside it."""
    return kind(**{name: _section(_SUBSECTIONS[name], value) if name in _SUBSECTIONS else value
                   for name, value in clean.items()})


def _merge(base: Mapping, patch: object, prefix: str = "") -> dict:
    """Deep-merge ``patch`` onto a copy of ``base``; keys must already exist in ``base``."""
    if not isinstance(patch, Mapping):
        what = f"'{prefix[:-1]}'" if prefix else "strategy"
        raise ValueError(f"{what} must be an object, got {type(patch).__name__}")
    merged = copy.deepcopy(dict(base))
    for key, value in patch.items():
        if key not in base:
            raise ValueError(
                f"unknown strategy key '{prefix}{key}'; expected one of {sorted(base)}"
            )
        if isinstance(base[key], Mapping):
            merged[key] = _merge(base[key], value, f"{prefix}{key}.")
        else:
            merged[key] = value
    return merged


def _validated(tree: dict, kind: type = Strategy, prefix: str = "") -> dict:
    """Apply each field's rule (recursing into sections); return the coerced tree."""
    clean = {}
    for spec in fields(kind):
        path = prefix + spec.name
        if "rule" in spec.metadata:
            clean[spec.name] = spec.metadata["rule"](path, tree[spec.name])
        else:
            section = _SECTIONS.get(spec.name) or _SUBSECTIONS[spec.name]
            clean[spec.name] = _validated(tree[spec.name], section, path + ".")
    if kind is Weights and not any(clean.values()):
        raise ValueError(
            f"strategy weights are all 0; at least one of {sorted(clean)} must be positive"
        )
    return clean


# The JSON form of Strategy(): DESIGN §4 plus the redundancy, routing and density sections.
# Treat as read-only (from_dict deep-copies it before merging).
DEFAULT_STRATEGY_DICT: dict = Strategy().to_dict()


@dataclass(frozen=True, eq=False)
class Scores:
    """Priorities with the terms they are made of.

    ``priority == sum(weights[t] * terms[t] for t in terms)``; ``terms["boost"]`` has
    weight 1.

    Attributes
    ----------
    priority : ndarray of shape (n_items,)
    terms : dict of str to ndarray of shape (n_items,)
        Normalised value of each term: ``uncertainty``, ``disagreement``, ``density``
        (when weighted and features are given), ``coverage`` or ``random`` (cold start,
        with or without a pool map) and ``boost``.
    weights : dict of str to float
        Weight of each term in ``terms``.
    """

    priority: np.ndarray
    terms: dict[str, np.ndarray]
    weights: dict[str, float]

    def breakdown(self, index: int) -> dict[str, dict[str, float]]:
        """Value, weight and contribution of every term for item ``index``."""
        return {
            name: {
                "value": float(values[index]),
                "weight": self.weights[name],
                "contribution": self.weights[name] * float(values[index]),
            }
            for name, values in self.terms.items()
        }


def score(
    committee: object | None,
    features: object | None = None,
    boost: object | None = None,
    strategy: Strategy | Mapping | None = None,
    random_state: int | np.random.RandomState | None = 0,
    *,
    reference: object | None = None,
    coverage: object | None = None,
    estimates: object | None = None,
) -> Scores:
    """Priority of each item under ``strategy``; higher is labeled first.

    Uncertainty is taken on the consensus (mean over members). Cold start (no committee,
    or zero members) scores by ``coverage`` (the pool map's order, see
    ``learning.coverage``) when given, otherwise by a seeded uniform draw named
    ``random``; that term gets the strategy's total weight so cold and warm priorities
    share a scale.  Never by density within the batch: a batch is not the pool.

    Parameters
    ----------
    committee : array-like of shape (n_members, n_items, n_classes) or None
        Probability rows of every member (supplied models and learned ones).
    features : array-like of shape (n_items, n_features), optional
        Needed for the density term (used when its weight is positive, or at cold start).
    boost : array-like of shape (n_items,), optional
        Business priority added unweighted; defaults to 0.
    strategy : Strategy or dict, optional
        A dict is read with :meth:`Strategy.from_dict`; defaults to ``Strategy()``.
    random_state : int, RandomState or None
        Seeds the density sample and the cold-start draw.
    reference : array-like of shape (n_reference, n_features), optional
        Rows the density is measured against (a fixed sample of the project); defaults
        to ``features``.
    coverage : array-like of shape (n_items,), optional
        Cold-start priority from the pool map (``learning.coverage.coverage``); with a
        committee too (supplied models, no learned one yet) it is added at the strategy's
        total weight, so the first labels spread over the pool.
    estimates : array-like of shape (n_estimates, n_items, n_classes), optional
        The point estimates whose consensus the uncertainty is taken on (the supplied
        models and the learned model fitted on every label); defaults to ``committee``.
        A bootstrap member sees about 63% of the labels, so averaging the members blurs
        the boundary that a model fitted on all of them draws: measured in
        ``taskrank simulate``, uncertainty on the full model beat the members' mean
        (10 classes: AULC 0.46 vs 0.45), while disagreement still needs the members.

    Returns
    -------
    scores : Scores
    """
    strategy = _as_strategy(strategy)
    members, n_items = _committee_and_length(committee, features, boost)
    if features is not None:
        features = check_matrix(features, "features", n_items)
    boost = np.zeros(n_items) if boost is None else check_vector(boost, "boost", n_items)
    if members is None:
        terms, weights = _cold_terms(n_items, coverage, strategy, random_state)
    else:
        point = members if estimates is None else check_committee(estimates)
        if point.shape[1:] != members.shape[1:]:
            raise ValueError(f"estimates have shape {point.shape[1:]} per member, the "
                             f"committee {members.shape[1:]}")
        terms, weights = _warm_terms(members, point, features, strategy, random_state,
                                     reference)
        if coverage is not None:  # no learned model yet: spread the supplied models' picks
            terms["coverage"] = check_vector(coverage, "coverage", n_items)
            weights["coverage"] = float(sum(asdict(strategy.weights).values()))
    terms["boost"], weights["boost"] = boost, 1.0
    priority = np.zeros(n_items)
    for name, values in terms.items():  # loop over the handful of terms
        priority += weights[name] * values
    return Scores(priority=priority, terms=terms, weights=weights)


def _as_strategy(strategy: Strategy | Mapping | None) -> Strategy:
    if strategy is None:
        return Strategy()
    if isinstance(strategy, Strategy):
        return strategy
    if isinstance(strategy, Mapping):
        return Strategy.from_dict(strategy)
    raise ValueError(f"strategy must be a Strategy or a dict, got {type(strategy).__name__}")


def _committee_and_length(committee, features, boost) -> tuple[np.ndarray | None, int]:
    """Validated committee (None at cold start) and the number of items."""
    if committee is not None and not _has_no_members(committee):
        members = check_committee(committee)
        return members, members.shape[1]
    if committee is not None and np.ndim(committee) == 3:
        return None, np.shape(committee)[1]
    for given in (features, boost):
        if given is not None and np.ndim(given) >= 1:
            return None, np.shape(given)[0]
    raise ValueError("score needs a committee, features or boost to know the number of items")


def _has_no_members(committee: object) -> bool:
    """True for ``[]`` or an array of shape (0, n, k): nothing to score with yet."""
    shape = getattr(committee, "shape", None)
    if shape is not None:
        return len(shape) >= 1 and shape[0] == 0
    return isinstance(committee, list | tuple) and len(committee) == 0


def _density_term(features, strategy: Strategy, random_state, reference) -> np.ndarray:
    return density(
        features, reference, sample_size=strategy.density.sample_size, random_state=random_state
    )


def _cold_terms(n_items, coverage, strategy, random_state):
    total = float(sum(asdict(strategy.weights).values()))
    if coverage is not None:
        return {"coverage": check_vector(coverage, "coverage", n_items)}, {"coverage": total}
    draw = check_random_state(random_state).random_sample(n_items)
    return {"random": draw}, {"random": total}


def _warm_terms(members, point, features, strategy, random_state, reference):
    weights = strategy.weights
    terms = {
        "uncertainty": UNCERTAINTY_KERNELS[strategy.uncertainty](consensus(point)),
        "disagreement": DISAGREEMENT_KERNELS[strategy.disagreement](members,
                                                                    consensus(members)),
    }
    chosen = {"uncertainty": weights.uncertainty, "disagreement": weights.disagreement}
    if features is not None and weights.density > 0:
        terms["density"] = _density_term(features, strategy, random_state, reference)
        chosen["density"] = weights.density
    return terms, chosen
