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
    dawid_skene,
    vote_posterior,
    weighted_vote,
)
from taskrank.learning.datasets import DATASETS, load_dataset
from taskrank.learning.disagreement import get_disagreement
from taskrank.learning.priority import Strategy, score
from taskrank.learning.ranker import TaskRanker
from taskrank.learning.routing import (
    PRIOR_STRENGTH,
    accuracy_posterior,
    best_item,
    best_other_fit,
    eligible,
    hold_back,
    item_fit,
    value,
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
    """One seed's simulated project: items in skill domains, experts, their answers."""

    n_classes: int
    truth: np.ndarray  # (n_items,) class index
    domain: np.ndarray  # (n_items,) skill tag index
    tag_mask: np.ndarray  # (n_items, n_domains) bool
    gold: np.ndarray  # (n_items,) bool, answer known to the system
    priority: np.ndarray  # (n_items,) stand-in for the model's priority
    true_acc: np.ndarray  # (n_experts, n_domains)
    declared: np.ndarray  # (n_experts, n_domains)
    rate: np.ndarray  # (n_experts,) US dollars per hour, as declared to the server
    seconds: np.ndarray  # (n_experts, n_domains) true seconds one label takes
    answers: np.ndarray  # (n_experts, n_items) what each expert would answer


def _make_world(X, y, pool: int, n_domains: int, n_experts: int, gold, overclaim, seed):
    """``pool`` items; specialists (one home domain each, accuracy 0.85-0.95, else
    0.55-0.75) who declare their levels up to noise, except ``overclaim`` of them who
    claim >= 0.9 everywhere. Rates are $50-250 an hour; a label takes an expert 60-240 s,
    40 % less in its home domain (drawn from their own stream: the answers do not move)."""
    rng = check_random_state(seed)
    _, truth = np.unique(y, return_inverse=True)
    k, rows = int(truth.max()) + 1, rng.choice(truth.shape[0], pool, replace=False)
    X, truth, n = X[rows], truth[rows], pool
    domain = KMeans(n_domains, n_init=3, random_state=seed).fit_predict(X)
    true_acc = rng.uniform(0.55, 0.75, (n_experts, n_domains))
    home = np.arange(n_experts) % n_domains
    true_acc[np.arange(n_experts), home] = rng.uniform(0.85, 0.95, n_experts)
    declared = np.clip(true_acc + rng.normal(0.0, 0.05, true_acc.shape), 0.0, 1.0)
    liars = rng.choice(n_experts, int(round(overclaim * n_experts)), replace=False)
    declared[liars] = np.maximum(declared[liars], 0.9)
    correct = rng.random_sample((n_experts, n)) < true_acc[:, domain]
    wrong = (truth[None, :] + rng.randint(1, k, (n_experts, n))) % k
    gold, priority = rng.random_sample(n) < gold, rng.random_sample(n)
    pay = np.random.default_rng([seed, 1])
    seconds = np.repeat(pay.uniform(60.0, 240.0, (n_experts, 1)), n_domains, axis=1)
    seconds[np.arange(n_experts), home] *= 0.6
    return _World(
        n_classes=k, truth=truth, domain=domain, tag_mask=np.eye(n_domains, dtype=bool)[domain],
        gold=gold, priority=priority, true_acc=true_acc, declared=declared,
        rate=pay.uniform(50.0, 250.0, n_experts), seconds=seconds,
        answers=np.where(correct, truth[None, :], wrong),
    )


def _pick(arm: str, asking: int, available: np.ndarray, fit: np.ndarray, world, margin):
    """Item the asking expert gets (-1: none), as ``tasks/next`` would answer."""
    if arm == "random":
        return best_item(world.priority, available[asking])
    candidates = available[asking]
    if margin is not None:
        held = hold_back(fit[asking], best_other_fit(fit, available, asking), margin)
        candidates = candidates & ~held
    return best_item(value(world.priority, fit[asking], world.rate[asking]), candidates)


def _learn(world, item: int, labellers: np.ndarray, tag_fit, agree, disagree, soft: bool):
    """On completion, as the server does: each labeller agrees or not with the weighted
    vote under the current fits (or with the gold answer). ``soft`` credits the vote's
    probability that the label is right instead of 0/1 agreement with the winner."""
    answers = world.answers[labellers, item]
    gold = int(world.truth[item]) if world.gold[item] else None
    tag = world.domain[item]
    posterior = vote_posterior(
        np.zeros(labellers.size, dtype=np.intp), np.arange(labellers.size), answers,
        clip_accuracy(tag_fit[labellers, tag]), 1, world.n_classes,
    )[0]
    credit = agreement_credit(answers, posterior, gold, soft)
    if credit is None:  # one label only agrees with itself
        return
    agree[labellers, tag] += credit
    disagree[labellers, tag] += 1.0 - credit


def _route(arm, world, n_labels, redundancy, capacity, margin, strength, soft, rng):
    """Experts ask in random order until ``n_labels`` labels; returns (n_labels, 2) pairs."""
    n_experts, n_items = world.answers.shape
    seen = np.zeros((n_experts, n_items), dtype=bool)
    wanted, done = np.full(n_items, redundancy), np.zeros(n_experts, dtype=int)
    agree, disagree = np.zeros(world.declared.shape), np.zeros(world.declared.shape)
    tag_fit = world.true_acc if arm == "oracle" else world.declared
    fit = item_fit(tag_fit, world.tag_mask)  # (n_experts, n_items)
    holds_all = np.ones(world.tag_mask.shape[1], dtype=bool)
    available = np.stack([  # loop over experts; afterwards kept up to date per label
        eligible(holds_all, world.tag_mask, seen[e], True, 0, capacity) for e in range(n_experts)
    ])
    given: list[tuple[int, int]] = []
    while len(given) < n_labels and available.any():  # loop over task requests
        asking = int(rng.randint(n_experts))
        item = _pick(arm, asking, available, fit, world, margin)
        if item < 0:
            continue
        seen[asking, item], wanted[item], done[asking] = True, wanted[item] - 1, done[asking] + 1
        available[asking, item] = False
        available[:, item] &= wanted[item] > 0
        available[asking] &= done[asking] < capacity
        given.append((item, asking))
        if arm == "taskrank" and wanted[item] == 0:
            _learn(world, item, np.flatnonzero(seen[:, item]), tag_fit, agree, disagree, soft)
            tag_fit = accuracy_posterior(world.declared, agree, disagree, strength).mean
            fit = item_fit(tag_fit, world.tag_mask)
    return np.array(given, dtype=np.intp).reshape(-1, 2)


def _evaluate(arm: str, world, given: np.ndarray, strength: float) -> dict:
    """Accuracy and number of right aggregated labels on labelled non-gold items, the
    dollars spent (rate x true seconds of each label) and the share of labels on gold."""
    items, experts = given[:, 0], given[:, 1]
    labels, tags = world.answers[experts, items], world.domain[items]
    n_items, k = world.truth.shape[0], world.n_classes
    if arm == "oracle":
        final, _ = weighted_vote(items, experts, labels, world.true_acc, n_items, k, item_tag=tags)
    else:
        prior = accuracy_posterior(world.declared, 0.0, 0.0, strength)
        final, _, _ = dawid_skene(
            items, experts, labels, n_items, world.declared.shape[0], k, item_tag=tags,
            n_tags=world.declared.shape[1], prior=(prior.alpha, prior.beta),
        )
    scored = (final >= 0) & ~world.gold
    hits = final[scored] == world.truth[scored]
    dollars = float((world.rate[experts] * world.seconds[experts, tags]).sum() / 3600.0)
    return {"accuracy": float(hits.mean()) if hits.size else float("nan"),
            "correct_items": int(hits.sum()), "cost": dollars,
            "correct_per_1000_usd": 1000.0 * int(hits.sum()) / dollars if dollars else 0.0,
            "overhead_share": float(world.gold[items].mean()) if items.size else 0.0,
            "labels": int(items.size)}


def simulate_routing(
    X: np.ndarray,
    y: np.ndarray,
    n_domains: int = 4,
    n_experts: int = 8,
    n_labels: int = 1000,
    redundancy: int = 3,
    arms: Sequence[str] = ROUTING_ARMS,
    seeds: int = 5,
    gold: float = 0.0,
    overclaim: float = 0.25,
    hold_back_margin: float | None = 0.1,
    agreement: str = "soft",
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
    labels are given, ``redundancy`` distinct experts per item. Arms:

    - ``"taskrank"``: value routing with hold-back on Beta posteriors that start at the
      declared levels and learn from agreement with each finished item's weighted vote
      (and gold answers); final labels by per-(expert, tag) Dawid–Skene.
    - ``"random"``: the asking expert gets the top-priority item, whoever it is; same
      final aggregation as ``"taskrank"``.
    - ``"oracle"``: routing and weighted vote with the true accuracies.

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
        Share of items whose answer the system knows (used only for learning skills).
    overclaim : float
        Share of experts who overstate their skills.
    hold_back_margin : float or None
        Fit advantage for which an item waits for a better expert; None disables it.
    agreement : {"soft", "hard"}
        How a finished item updates its labellers' posteriors: ``"hard"`` counts 0/1
        agreement with the weighted vote (the server today), ``"soft"`` the vote's
        probability that each label is right (:func:`~taskrank.learning.aggregation.
        vote_posterior`), which does not hand every split decision to the expert
        currently believed best.
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
        items) and ``labels``; ``gap_closed`` is (taskrank - random) / (oracle - random)
        of mean accuracy, or None.
    """
    config = _routing_config(
        n_domains=n_domains, n_experts=n_experts, n_labels=n_labels, redundancy=redundancy,
        arms=list(arms), seeds=seeds, gold=gold, overclaim=overclaim,
        hold_back_margin=hold_back_margin, agreement=agreement, capacity=capacity, pool=pool,
        n_samples=len(y), prior_strength=prior_strength,
    )
    X, y = np.asarray(X, dtype=float), np.asarray(y)
    if X.ndim != 2 or y.shape != X.shape[:1]:
        raise ValueError(
            f"X must be (n_samples, n_features) and y (n_samples,), got {X.shape} and {y.shape}"
        )
    results = {arm: defaultdict(list) for arm in config["arms"]}  # figure -> per seed
    for seed in check_random_state(random_state).randint(np.iinfo(np.int32).max, size=seeds):
        world = _make_world(X, y, config["pool"], n_domains, n_experts, gold, overclaim, seed)
        for arm in config["arms"]:  # loop over arms; same request order for each
            given = _route(arm, world, n_labels, redundancy, config["capacity"], hold_back_margin,
                           prior_strength, agreement == "soft", check_random_state(seed))
            for key, number in _evaluate(arm, world, given, prior_strength).items():
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
    if config["agreement"] not in ("soft", "hard"):
        raise ValueError(f"agreement must be 'soft' or 'hard', got {config['agreement']!r}")
    margin = config["hold_back_margin"]
    if margin is not None and not margin >= 0:
        raise ValueError(f"hold_back_margin must be >= 0 or None, got {margin!r}")
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


def gap_closed(arms: dict[str, dict]) -> float | None:
    """(taskrank - random) / (oracle - random) of mean label accuracy, or None."""
    if not set(ROUTING_ARMS) <= set(arms):
        return None
    mean = {arm: arms[arm]["accuracy"]["mean"] for arm in ROUTING_ARMS}
    gap = mean["oracle"] - mean["random"]
    return float((mean["taskrank"] - mean["random"]) / gap) if gap > 0 else None
