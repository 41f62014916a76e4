"""Offline replays (DESIGN §8): pool-based active learning and simulated expert routing.

:func:`run_simulation` replays a labelled dataset through the product's own ranker and
scoring: each round fits :class:`~taskrank.learning.ranker.TaskRanker` on the labelled
items, records test accuracy and queries the top ``batch`` pool items of a strategy.
:func:`simulate_routing` replays labels from simulated experts through
:mod:`~taskrank.learning.routing` and :mod:`~taskrank.learning.aggregation`.
Pure: arrays and dicts in and out; plotting and files belong to ``scripts/simulate.py``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from threadpoolctl import threadpool_limits

from taskrank.learning.aggregation import (
    agreement_credit,
    clip_accuracy,
    vote_posterior,
    weighted_vote,
)
from taskrank.learning.datasets import DATASETS, load_dataset
from taskrank.learning.dawid_skene import dawid_skene
from taskrank.learning.disagreement import get_disagreement
from taskrank.learning.priority import Strategy, score
from taskrank.learning.ranker import TaskRanker
from taskrank.learning.routing import (
    FLAGGED,
    NEEDS_GOLD,
    PRIOR_STRENGTH,
    accuracy_posterior,
    best_item,
    best_other_fit,
    gate,
    gold_share,
    gold_to_qualify,
    hold_back,
    label_cost,
    predicted_seconds,
    worth,
)
from taskrank.learning.uncertainty import UNCERTAINTY, get_uncertainty

__all__ = [
    "BUILTIN_STRATEGIES",
    "DATASETS",
    "ROUTING_ARMS",
    "load_dataset",
    "run_simulation",
    "simulate_routing",
]

BUILTIN_STRATEGIES = ("random", "least_confidence", "margin", "entropy", "committee", "default")
# Continuous, so a small committee still ranks every item (vote entropy ties most of them).
COMMITTEE_DISAGREEMENT = "consensus_kl"


def _check_count(name: str, number: object, low: int = 1) -> None:
    if isinstance(number, bool) or not isinstance(number, int | np.integer) or number < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {number!r}")


def _resolve_strategies(strategies) -> dict[str, str | Strategy]:
    if isinstance(strategies, str):
        strategies = [strategies]
    pairs = strategies.items() if isinstance(strategies, Mapping) else ((s, s) for s in strategies)
    resolved: dict[str, str | Strategy] = {}
    for name, spec in pairs:
        if isinstance(spec, str) and spec not in BUILTIN_STRATEGIES:
            raise ValueError(
                f"unknown strategy {spec!r}; expected one of {list(BUILTIN_STRATEGIES)}"
            )
        if not isinstance(spec, str | Strategy):
            raise TypeError(
                f"strategy {name!r} must be a name or a Strategy, got {type(spec).__name__}"
            )
        resolved[str(name)] = spec
    if not resolved:
        raise ValueError("strategies must name at least one strategy")
    return resolved


def _label_counts(initial: int, batch: int, budget: int, n_pool: int) -> np.ndarray:
    """Labelled-set sizes at which accuracy is measured: initial, +batch, ..., budget."""
    for name, number in (("initial", initial), ("batch", batch), ("budget", budget)):
        _check_count(name, number)
    budget = min(budget, n_pool // 2)
    if initial > budget:
        raise ValueError(
            f"initial ({initial}) exceeds the budget ({budget}; at most half the pool)"
        )
    return np.append(np.arange(initial, budget, batch), budget)


def _ranker_for(spec: str | Strategy, classes: np.ndarray, seed: int) -> TaskRanker:
    """The ranker a strategy needs; single-model strategies skip the committee."""
    if isinstance(spec, Strategy) or spec in ("default", "committee"):
        committee = (spec if isinstance(spec, Strategy) else Strategy()).committee
        model, members = committee.model, committee.members
    else:
        model, members = "logistic_regression", 1
    return TaskRanker(model=model, members=members, classes=classes, random_state=seed)


def _acquisition_scores(spec, ranker: TaskRanker, X_pool: np.ndarray, rng) -> np.ndarray:
    """Score per pool item, higher = query first."""
    if spec == "random":
        return rng.random_sample(X_pool.shape[0])
    if isinstance(spec, str) and spec in UNCERTAINTY:
        return get_uncertainty(spec)(ranker.predict_proba(X_pool))
    committee = ranker.committee_proba(X_pool)
    if spec == "committee":
        return get_disagreement(COMMITTEE_DISAGREEMENT)(committee)
    strategy = Strategy() if spec == "default" else spec
    features = X_pool if strategy.weights.density > 0 else None
    return score(committee, features=features, strategy=strategy, random_state=rng,
                 estimates=ranker.predict_proba(X_pool)[None]).priority


def _learning_curve(spec, split, start: np.ndarray, counts: np.ndarray, classes, seed: int):
    """Test accuracy at each labelled count for one strategy and one seed."""
    X_pool, y_pool, X_test, y_test = split
    rng = check_random_state(seed)
    labelled = np.zeros(X_pool.shape[0], dtype=bool)
    labelled[start] = True
    curve = []
    for now, after in zip(counts, [*counts[1:], None], strict=True):  # loop over rounds
        ranker = _ranker_for(spec, classes, seed).fit(X_pool[labelled], y_pool[labelled])
        curve.append(float(ranker.score(X_test, y_test)))
        if after is not None:
            rest = np.flatnonzero(~labelled)
            scores = _acquisition_scores(spec, ranker, X_pool[rest], rng)
            labelled[rest[np.argsort(-scores, kind="stable")[: after - now]]] = True
    return curve


def run_simulation(
    X: np.ndarray,
    y: np.ndarray,
    strategies: Sequence[str] | Mapping[str, str | Strategy] = BUILTIN_STRATEGIES,
    seeds: int = 5,
    initial: int = 10,
    batch: int = 10,
    budget: int = 300,
    test_size: float = 0.25,
    random_state: int | np.random.RandomState | None = 0,
    dataset: str = "custom",
    progress: Callable[[int], object] | None = None,
) -> dict:
    """Replay pool-based active learning for several strategies and seeds.

    Every seed draws one stratified train/test split and one random initial labelled
    set, shared by all strategies (a paired comparison). Each round fits a
    ``TaskRanker`` on the labelled items, records its test accuracy, then labels the
    pool items the strategy scores highest.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    y : ndarray of shape (n_samples,)
    strategies : sequence of names, or mapping name -> name or ``Strategy``
        Names from :data:`BUILTIN_STRATEGIES`: ``"random"``, the uncertainty names on
        the main model, ``"committee"`` (consensus KL of the bootstrap committee) and
        ``"default"`` (``priority.score`` with the default ``Strategy``, as the server
        ranks). A ``Strategy`` is scored like ``"default"`` with its own settings.
    seeds : int
        Number of repetitions.
    initial, batch, budget : int
        Labels to start from, labels per round, and labels at the end (capped at half
        the pool).
    test_size : float
        Share of the data held out for test accuracy, in (0, 1).
    random_state : int, RandomState or None
        Seeds the seeds.
    dataset : str
        Name recorded in the result.
    progress : callable, optional
        Called with 1 after each (seed, strategy) curve, e.g. ``tqdm.update``.

    Returns
    -------
    dict
        ``{"dataset", "config", "strategies": {name: {"aulc": {"mean", "std",
        "per_seed"}, "curves": (seeds, n_rounds) lists, "n_labels": (n_rounds,) list}}}``;
        AULC is the mean of a curve (mean test accuracy over the budget).
    """
    resolved = _resolve_strategies(strategies)
    X, y = np.asarray(X, dtype=float), np.asarray(y)
    if X.ndim != 2 or y.shape != X.shape[:1]:
        raise ValueError(
            f"X must be (n_samples, n_features) and y (n_samples,), got {X.shape} and {y.shape}"
        )
    if not 0 < test_size < 1:
        raise ValueError(f"test_size must lie in (0, 1), got {test_size!r}")
    _check_count("seeds", seeds)
    classes = np.unique(y)
    counts = _label_counts(initial, batch, budget, int(round(X.shape[0] * (1 - test_size))))
    curves: dict[str, list] = {name: [] for name in resolved}
    seed_list = check_random_state(random_state).randint(np.iinfo(np.int32).max, size=seeds)
    # Thousands of tiny fits: BLAS threads only add hand-offs (4x slower on a busy 2-core box).
    with threadpool_limits(limits=1, user_api="blas"):
        for seed in seed_list:
            X_pool, X_test, y_pool, y_test = train_test_split(
                X, y, test_size=test_size, stratify=y, random_state=seed
            )
            split = (X_pool, y_pool, X_test, y_test)
            start = check_random_state(seed).choice(X_pool.shape[0], counts[0], replace=False)
            for name, spec in resolved.items():  # loop over strategies
                curve = _learning_curve(spec, split, start, counts, classes, int(seed))
                curves[name].append(curve)
                if progress is not None:
                    progress(1)
    config = {
        "seeds": seeds, "initial": int(counts[0]), "batch": batch, "budget": int(counts[-1]),
        "test_size": test_size, "n_samples": int(X.shape[0]), "n_classes": int(classes.size),
        "model": "TaskRanker", "committee_disagreement": COMMITTEE_DISAGREEMENT,
    }
    return {
        "dataset": dataset,
        "config": config,
        "strategies": {name: _summarise(curves[name], counts, resolved[name]) for name in resolved},
    }


def _summarise(curves: list, counts: np.ndarray, spec) -> dict:
    aulc = np.mean(curves, axis=1)
    return {
        "aulc": {"mean": float(aulc.mean()), "std": float(aulc.std()), "per_seed": aulc.tolist()},
        "curves": curves,
        "n_labels": counts.tolist(),
        "spec": spec if isinstance(spec, str) else spec.to_dict(),
    }


# --------------------------------------------------------------------------------------
# Simulated experts (``taskrank simulate --experts``)

ROUTING_ARMS = ("taskrank", "random", "oracle")


@dataclass(frozen=True)
class _World:
    """One seed's simulated project: real items and gold items in skill domains, experts,
    their answers and the time each label takes them."""

    n_classes: int
    truth: np.ndarray  # (n_items,) class index
    domain: np.ndarray  # (n_items,) skill tag index
    tag_mask: np.ndarray  # (n_items, n_domains) bool
    gold: np.ndarray  # (n_items,) bool: a gold item (answer known), not a real one
    priority: np.ndarray  # (n_items,) stand-in for the model's priority
    review_draw: np.ndarray  # (n_items,) uniform draw deciding a spot check
    true_acc: np.ndarray  # (n_experts, n_domains)
    declared: np.ndarray  # (n_experts, n_domains)
    rate: np.ndarray  # (n_experts,) US dollars per hour, as declared to the server
    seconds: np.ndarray  # (n_experts, n_domains) mean seconds one label takes
    label_seconds: np.ndarray  # (n_experts, n_items) seconds each label would take
    answers: np.ndarray  # (n_experts, n_items) what each expert would answer

    @property
    def real(self) -> np.ndarray:
        return ~self.gold


def _make_world(X, y, pool: int, n_domains: int, n_experts: int, gold, overclaim, seed):
    """``pool`` real items plus ``gold x pool`` gold items; specialists (one home domain
    each, accuracy 0.85-0.95, else 0.55-0.75) who declare their levels up to noise, except
    ``overclaim`` of them who claim >= 0.9 everywhere. Rates are $50-250 an hour; a label
    takes an expert 60-240 s on average, 40 % less in its home domain, each label varying
    by a log-normal factor (drawn from their own stream: the answers do not move)."""
    rng = check_random_state(seed)
    _, truth = np.unique(y, return_inverse=True)
    n = min(truth.shape[0], pool + int(round(gold * pool)))
    k, rows = int(truth.max()) + 1, rng.choice(truth.shape[0], n, replace=False)
    X, truth = X[rows], truth[rows]
    domain = KMeans(n_domains, n_init=3, random_state=seed).fit_predict(X)
    true_acc = rng.uniform(0.55, 0.75, (n_experts, n_domains))
    home = np.arange(n_experts) % n_domains
    true_acc[np.arange(n_experts), home] = rng.uniform(0.85, 0.95, n_experts)
    declared = np.clip(true_acc + rng.normal(0.0, 0.05, true_acc.shape), 0.0, 1.0)
    liars = rng.choice(n_experts, int(round(overclaim * n_experts)), replace=False)
    declared[liars] = np.maximum(declared[liars], 0.9)
    correct = rng.random_sample((n_experts, n)) < true_acc[:, domain]
    wrong = (truth[None, :] + rng.randint(1, k, (n_experts, n))) % k
    is_gold, priority = np.arange(n) >= pool, rng.random_sample(n)
    pay = np.random.default_rng([seed, 1])
    seconds = np.repeat(pay.uniform(60.0, 240.0, (n_experts, 1)), n_domains, axis=1)
    seconds[np.arange(n_experts), home] *= 0.6
    jitter = pay.lognormal(-0.045, 0.3, (n_experts, n))  # mean 1
    return _World(
        n_classes=k, truth=truth, domain=domain, tag_mask=np.eye(n_domains, dtype=bool)[domain],
        gold=is_gold, priority=priority, review_draw=pay.random(n), true_acc=true_acc,
        declared=declared, rate=pay.uniform(50.0, 250.0, n_experts), seconds=seconds,
        label_seconds=seconds[:, domain] * jitter,
        answers=np.where(correct, truth[None, :], wrong),
    )


class _Learned:
    """What the taskrank arm knows of its experts, per (expert, tag), kept as the server
    keeps it: agreement evidence (soft credit, replaced by Dawid-Skene's at every
    re-aggregation), gold answers, reported seconds, and the running gold share."""

    def __init__(self, world: _World, strength: float):
        shape = world.declared.shape
        self.world, self.strength = world, strength
        self.agree, self.disagree = np.zeros(shape), np.zeros(shape)
        self.gold_right, self.gold_seen = np.zeros(shape), np.zeros(shape)
        self.seconds, self.timed = np.zeros(shape), np.zeros(shape)
        self.debt = np.zeros(shape[0])

    def posterior(self):
        return accuracy_posterior(self.world.declared, self.agree + self.gold_right,
                                  self.disagree + self.gold_seen - self.gold_right,
                                  self.strength)

    def label_seconds(self) -> np.ndarray:
        """Predicted seconds per (expert, tag): per skill, shrunk to the expert's mean."""
        overall = predicted_seconds(self.seconds.sum(axis=1), self.timed.sum(axis=1))
        return predicted_seconds(self.seconds, self.timed, overall[:, None])

    def record(self, expert: int, item: int) -> None:
        """A label came back: its time, and against gold whether it was right."""
        w, tag = self.world, self.world.domain[item]
        self.seconds[expert, tag] += w.label_seconds[expert, item]
        self.timed[expert, tag] += 1
        if w.gold[item]:
            self.gold_seen[expert, tag] += 1
            self.gold_right[expert, tag] += w.answers[expert, item] == w.truth[item]

    def credit(self, item: int, labellers: np.ndarray) -> None:
        """A real item finished with several labels: soft agreement with its vote."""
        w, tag = self.world, self.world.domain[item]
        answers = w.answers[labellers, item]
        posterior = vote_posterior(
            np.zeros(labellers.size, dtype=np.intp), np.arange(labellers.size), answers,
            clip_accuracy(self.posterior().mean[labellers, tag]), 1, w.n_classes)[0]
        credit = agreement_credit(answers, posterior)
        if credit is not None:
            self.agree[labellers, tag] += credit
            self.disagree[labellers, tag] += 1.0 - credit

    def reaggregate(self, given: list[tuple[int, int]]) -> None:
        """Dawid-Skene per (expert, tag) over the real items with two labels or more; its
        accuracies, as counts of right and wrong labels, replace the agreement evidence
        (the prior it starts from holds the declared levels and the gold answers)."""
        w = self.world
        pairs = np.array([(i, e) for i, e in given if not w.gold[i]], dtype=np.intp)
        if pairs.size == 0:
            return
        counts = np.bincount(pairs[:, 0], minlength=w.truth.shape[0])
        pairs = pairs[counts[pairs[:, 0]] >= 2]
        if np.unique(pairs[:, 1]).size < 2 if pairs.size else True:
            return
        items, experts = pairs[:, 0], pairs[:, 1]
        tags, shape = w.domain[items], w.declared.shape
        prior = accuracy_posterior(w.declared, self.gold_right,
                                   self.gold_seen - self.gold_right, self.strength)
        _, _, accuracy = dawid_skene(items, experts, w.answers[experts, items],
                                     w.truth.shape[0], shape[0], w.n_classes, item_tag=tags,
                                     n_tags=shape[1], prior=(prior.alpha, prior.beta))
        total = np.zeros(shape)
        np.add.at(total, (experts, tags), 1.0)
        right = accuracy * (total + prior.alpha + prior.beta) - prior.alpha
        self.agree, self.disagree = np.clip(right, 0.0, total), np.clip(total - right, 0, total)


def _worth(arm: str, world: _World, learned: _Learned | None, routing) -> np.ndarray:
    """fit^a / cost^b per (expert, tag), on true figures for the oracle."""
    if arm == "oracle":
        fit, seconds = world.true_acc, world.seconds
    else:
        fit, seconds = learned.posterior().mean, learned.label_seconds()
    cost = label_cost(world.rate[:, None], seconds)
    return worth(fit, cost, routing.fit_exponent, routing.cost_exponent)


def _pick(arm: str, asking: int, available: np.ndarray, world: _World, tag_worth, routing):
    """Real item the asking expert gets (-1: none), as ``tasks/next`` would answer."""
    if arm == "random":
        return best_item(world.priority, available[asking])
    item_worth = tag_worth[:, world.domain]  # (n_experts, n_items)
    candidates = available[asking]
    if routing.holdback_seconds > 0:
        held = hold_back(item_worth[asking], best_other_fit(item_worth, available, asking),
                         routing.holdback_margin)
        candidates = candidates & ~held
    return best_item(world.priority * item_worth[asking], candidates)


def _gold_instead(asking: int, item: int, seen: np.ndarray, learned: _Learned, states,
                  qa) -> int:
    """The gold item served in place of ``item`` (-1: serve the item): while the expert
    has not qualified on the item's skill, or when its gold share comes due."""
    w = learned.world
    tag = w.domain[item]
    unseen = np.flatnonzero(w.gold & (w.domain == tag) & ~seen[asking])
    if unseen.size == 0:
        return -1
    if states[asking, tag] != NEEDS_GOLD:
        share = gold_share(learned.posterior(), qa.gold_rate)[asking, tag]
        learned.debt[asking] += share
        if learned.debt[asking] < 1.0:
            return -1
        learned.debt[asking] -= 1.0
    return int(unseen[0])


def _route(arm, world, n_labels, redundancy, capacity, strategy, strength, rng):
    """Experts ask in random order until ``n_labels`` labels; returns (n_labels, 2) pairs
    (item, expert) and how many labels were spot checks."""
    n_experts, n_items = world.answers.shape
    routing, qa = strategy.routing, strategy.qa
    seen = np.zeros((n_experts, n_items), dtype=bool)
    wanted = np.where(world.gold, 0, redundancy)
    done = np.zeros(n_experts, dtype=int)
    learned = _Learned(world, strength) if arm == "taskrank" else None
    gold_available = np.bincount(world.domain[world.gold], minlength=world.declared.shape[1])
    given: list[tuple[int, int]] = []
    reviews = 0
    available = (wanted > 0)[None, :] & ~seen
    tag_worth = _worth(arm, world, learned, routing) if arm != "random" else None
    for _ in range(100 * n_labels):  # loop over task requests
        if len(given) >= n_labels or not available.any():
            break
        asking = int(rng.randint(n_experts))
        states = None
        if learned is not None:
            post = learned.posterior()
            states = gate(learned.gold_seen, learned.gold_right, gold_available[None, :],
                          learned.agree + learned.disagree, post.mean,
                          gold_to_qualify(qa.qualify.min_gold, redundancy),
                          qa.qualify.min_accuracy)
            tag_worth = _worth(arm, world, learned, routing)
            servable = available & (states != FLAGGED)[:, world.domain]
        else:
            servable = available
        item = _pick(arm, asking, servable, world, tag_worth, routing)
        if item < 0:
            continue
        gold_item = -1 if learned is None else _gold_instead(asking, item, seen, learned,
                                                             states, qa)
        if gold_item >= 0:
            item = gold_item
        seen[asking, item], done[asking] = True, done[asking] + 1
        given.append((item, asking))
        if learned is not None:
            learned.record(asking, item)
        if not world.gold[item]:
            wanted[item] -= 1
            labellers = np.flatnonzero(seen[:, item])
            if wanted[item] == 0 and learned is not None:
                if labellers.size == 1 and _spot_check(item, asking, learned, qa):
                    wanted[item], reviews = 1, reviews + 1
                elif labellers.size >= 2:
                    learned.credit(item, labellers)
        available = (wanted > 0)[None, :] & ~seen & (done < capacity)[:, None]
        if learned is not None and len(given) % strategy.retrain.every_labels == 0:
            learned.reaggregate(given)
    return np.array(given, dtype=np.intp).reshape(-1, 2), reviews


def _spot_check(item: int, labeller: int, learned: _Learned, qa) -> bool:
    """Whether an item finished with one label gets a second one: at the review rate
    while the labeller's posterior on the skill is wide, less as it tightens."""
    tag = learned.world.domain[item]
    share = gold_share(learned.posterior(), qa.review_rate)[labeller, tag]
    return bool(learned.world.review_draw[item] < share)


def _evaluate(world, given: np.ndarray, reviews: int, strength: float, oracle: bool) -> dict:
    """Accuracy and number of right aggregated labels on labelled real items, the dollars
    spent (rate x true seconds of each label, gold included) and the share of labels
    spent on gold items and spot checks."""
    items, experts = given[:, 0], given[:, 1]
    dollars = float(label_cost(world.rate[experts], world.label_seconds[experts, items]).sum())
    overhead = int(world.gold[items].sum()) + reviews
    real = ~world.gold[items]
    items, experts = items[real], experts[real]
    labels, tags = world.answers[experts, items], world.domain[items]
    n_items, k = world.truth.shape[0], world.n_classes
    if oracle:
        final, _ = weighted_vote(items, experts, labels, world.true_acc, n_items, k, item_tag=tags)
    else:  # as the server: Dawid-Skene over items with two labels or more, one label kept,
        # from a prior of the declared levels and the gold answers (queue/aggregate.py)
        final = np.full(n_items, -1)
        final[items] = labels
        several = np.bincount(items, minlength=n_items)[items] >= 2
        if np.unique(experts[several]).size >= 2:
            on_gold = given[world.gold[given[:, 0]]]
            seen, right = np.zeros(world.declared.shape), np.zeros(world.declared.shape)
            where = (on_gold[:, 1], world.domain[on_gold[:, 0]])
            np.add.at(seen, where, 1.0)
            np.add.at(right, where, world.answers[on_gold[:, 1], on_gold[:, 0]]
                      == world.truth[on_gold[:, 0]])
            prior = accuracy_posterior(world.declared, right, seen - right, strength)
            joint, _, _ = dawid_skene(
                items[several], experts[several], labels[several], n_items,
                world.declared.shape[0], k, item_tag=tags[several],
                n_tags=world.declared.shape[1], prior=(prior.alpha, prior.beta))
            final[items[several]] = joint[items[several]]
    scored = (final >= 0) & ~world.gold
    hits = final[scored] == world.truth[scored]
    return {"accuracy": float(hits.mean()) if hits.size else float("nan"),
            "correct_items": int(hits.sum()), "cost": dollars,
            "correct_per_1000_usd": 1000.0 * int(hits.sum()) / dollars if dollars else 0.0,
            "overhead_share": overhead / given.shape[0] if given.size else 0.0,
            "labels": int(given.shape[0])}


def simulate_routing(
    X: np.ndarray,
    y: np.ndarray,
    n_domains: int = 4,
    n_experts: int = 8,
    n_labels: int = 1000,
    redundancy: int = 1,
    arms: Sequence[str] = ROUTING_ARMS,
    seeds: int = 5,
    gold: float = 0.05,
    overclaim: float = 0.25,
    strategy: Strategy | Mapping | None = None,
    capacity: int | None = None,
    pool: int | None = None,
    prior_strength: float = PRIOR_STRENGTH,
    random_state: int | np.random.RandomState | None = 0,
    progress: Callable[[int], object] | None = None,
) -> dict:
    """Replay labelling by simulated experts under several routing arms.

    Items fall into ``n_domains`` skill domains (k-means on ``X``). Each expert is a
    specialist of one domain and mediocre elsewhere, and answers right with its true
    accuracy for the item's domain (else a uniformly wrong class); ``overclaim`` of them
    declare >= 0.9 everywhere. Experts ask for tasks in random order until ``n_labels``
    labels are given, ``redundancy`` distinct experts per item. Each label costs the
    expert's hourly rate times the seconds it took. Arms:

    - ``"taskrank"``: the server's rule (``learning.routing``) with the strategy's
      settings: value = priority x fit^a / cost^b per label, hold-back by value per
      dollar, the qualification gate, gold items served at a share falling as each
      posterior tightens, spot checks, and posteriors that start at the declared levels
      and learn from gold, from agreement as multi-label items finish, and from
      per-(expert, tag) Dawid–Skene at every retrain's re-aggregation; times predicted
      from the seconds reported.  Final labels by per-(expert, tag) Dawid–Skene.
    - ``"random"``: the asking expert gets the top-priority item, whoever it is; same
      final aggregation as ``"taskrank"``; no gold.
    - ``"oracle"``: the same value rule and hold-back on the true accuracies and times,
      weighted vote with the true accuracies; it pays nothing to learn them.

    All arms of a seed share the world (domains, experts and every potential answer).

    Parameters
    ----------
    X : ndarray of shape (n_items, n_features)
    y : ndarray of shape (n_items,)
        True labels.
    n_domains, n_experts, n_labels, redundancy : int
        Skill tags, experts, label budget, labels wanted per item.
    arms : sequence of str
        Any of :data:`ROUTING_ARMS`.
    seeds : int
    gold : float
        Gold items (answers known to the project, served only by the taskrank arm to
        learn skills) as a share of the real items.
    overclaim : float
        Share of experts who overstate their skills.
    strategy : Strategy or mapping, optional
        The project's strategy (``routing``, ``qa``, ``retrain.every_labels``); a
        partial dict is merged onto the defaults, as the server does.
    capacity : int, optional
        Most labels one expert gives; defaults to twice an even share.
    pool : int, optional
        Items drawn from ``X`` into the project; defaults to ``ceil(n_labels /
        redundancy)``, so every arm labels (nearly) the same items as often and only
        who labels what differs (a larger pool lets experts cherry-pick their domain).
    prior_strength : float
        Pseudo-labels the declared level is worth.
    random_state : int, RandomState or None
    progress : callable, optional
        Called with 1 after each (seed, arm) run.

    Returns
    -------
    dict
        ``{"config", "arms": {arm: {figure: {"mean", "std", "per_seed"}}}, "gap_closed"}``
        with the figures ``accuracy`` (of the aggregated labels on labelled non-gold
        items), ``correct_items`` (those right), ``cost`` (US dollars: each label's rate x
        true seconds), ``correct_per_1000_usd``, ``overhead_share`` (labels spent on gold
        items and spot checks) and ``labels``; ``gap_closed`` is, per figure
        (``accuracy``, ``correct_per_1000_usd``), (taskrank - random) / (oracle - random)
        of the means, or None.
    """
    config = _routing_config(
        n_domains=n_domains, n_experts=n_experts, n_labels=n_labels, redundancy=redundancy,
        arms=list(arms), seeds=seeds, gold=gold, overclaim=overclaim, capacity=capacity,
        pool=pool, n_samples=len(y), prior_strength=prior_strength,
    )
    strategy = strategy if isinstance(strategy, Strategy) else Strategy.from_dict(strategy)
    config["strategy"] = {name: strategy.to_dict()[name] for name in ("routing", "qa")}
    X, y = np.asarray(X, dtype=float), np.asarray(y)
    if X.ndim != 2 or y.shape != X.shape[:1]:
        raise ValueError(
            f"X must be (n_samples, n_features) and y (n_samples,), got {X.shape} and {y.shape}"
        )
    results = {arm: defaultdict(list) for arm in config["arms"]}  # figure -> per seed
    for seed in check_random_state(random_state).randint(np.iinfo(np.int32).max, size=seeds):
        world = _make_world(X, y, config["pool"], n_domains, n_experts, gold, overclaim, seed)
        for arm in config["arms"]:  # loop over arms; same request order for each
            given, reviews = _route(arm, world, n_labels, redundancy, config["capacity"],
                                    strategy, prior_strength, check_random_state(seed))
            figures = _evaluate(world, given, reviews, prior_strength, arm == "oracle")
            for key, number in figures.items():
                results[arm][key].append(number)
            if progress is not None:
                progress(1)
    arms = {arm: arm_summary(r) for arm, r in results.items()}
    return {"config": config, "arms": arms, "gap_closed": gap_closed(arms)}


def _routing_config(**config) -> dict:
    """Validated settings of :func:`simulate_routing`, with the capacity filled in."""
    for name in ("n_domains", "n_experts", "n_labels", "redundancy", "seeds"):
        _check_count(name, config[name])
    if config["redundancy"] > config["n_experts"]:
        raise ValueError(
            f"redundancy ({config['redundancy']}) exceeds n_experts ({config['n_experts']})"
        )
    unknown = sorted(set(config["arms"]) - set(ROUTING_ARMS))
    if unknown or not config["arms"]:
        raise ValueError(f"unknown routing arms {unknown}; expected some of {list(ROUTING_ARMS)}")
    for name in ("gold", "overclaim"):
        if not 0.0 <= config[name] < 1.0:
            raise ValueError(f"{name} must lie in [0, 1), got {config[name]!r}")
    if config["capacity"] is None:
        config["capacity"] = -(-2 * config["n_labels"] // config["n_experts"])
    _check_count("capacity", config["capacity"])
    if config["pool"] is None:
        config["pool"] = min(config["n_samples"], -(-config["n_labels"] // config["redundancy"]))
    _check_count("pool", config["pool"], low=config["redundancy"])
    if config["pool"] > config["n_samples"]:
        raise ValueError(f"pool ({config['pool']}) exceeds the {config['n_samples']} samples")
    return config


def arm_summary(result: dict[str, list]) -> dict:
    """Mean, std and per-seed values of each figure an arm reported per seed."""
    summary = {}
    for key, per_seed in result.items():
        values = np.array(per_seed, dtype=float)
        summary[key] = {"mean": float(values.mean()), "std": float(values.std()),
                        "per_seed": values.tolist()}
    return summary


GAP_FIGURES = ("accuracy", "correct_per_1000_usd")


def gap_closed(arms: dict[str, dict]) -> dict[str, float | None] | None:
    """Per figure of :data:`GAP_FIGURES`, (taskrank - random) / (oracle - random) of the
    means (None where the oracle does not beat random); None without all three arms."""
    if not set(ROUTING_ARMS) <= set(arms):
        return None
    closed = {}
    for figure in GAP_FIGURES:
        mean = {arm: arms[arm][figure]["mean"] for arm in ROUTING_ARMS}
        gap = mean["oracle"] - mean["random"]
        closed[figure] = float((mean["taskrank"] - mean["random"]) / gap) if gap > 0 else None
    return closed
