"""Label aggregation (DESIGN §5): the accuracy-weighted vote (Dawid–Skene's EM over many
items is ``dawid_skene.py``).

Labels come as parallel triples ``(item_index, expert_index, label)``, one entry per
label given. The one-coin model says expert ``e`` answers right with probability
``acc[e]`` (optionally ``acc[e, tag]``) and otherwise picks one of the ``k - 1`` wrong
classes uniformly, so a label for class ``c`` adds ``log(k - 1) + log(acc / (1 - acc))``
to the log-odds of ``c``.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "ACCURACY_BOUNDS",
    "agreement_credit",
    "clip_accuracy",
    "vote_posterior",
    "weighted_vote",
]

# No expert is taken as certainly right or certainly wrong: declared levels (the prior of
# routing's posteriors) and the accuracies a running vote weighs stay inside these bounds.
# A level of 0 or 1 would make a prior that no evidence can move, and one label of an
# expert believed perfect would outvote any number of others.  The claim and label
# scripts receive them through ARGV (queue/tasks.py).
ACCURACY_BOUNDS = (0.01, 0.99)

# Keeps log-odds finite when an expert (so far) never disagreed.
_ACC_EPS = 1e-3


def clip_accuracy(accuracy: np.ndarray | float) -> np.ndarray:
    """``accuracy`` clipped into :data:`ACCURACY_BOUNDS` (any shape, as a float array)."""
    return np.clip(np.asarray(accuracy, dtype=float), *ACCURACY_BOUNDS)


def _check_index(name: str, values: np.ndarray, upper: int, length: int | None) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{name} must be a 1-d integer array, got {arr.dtype} {arr.shape}")
    if length is not None and arr.shape[0] != length:
        raise ValueError(f"{name} has {arr.shape[0]} entries, expected {length}")
    if arr.size and (arr.min() < 0 or arr.max() >= upper):
        raise ValueError(
            f"{name} must lie in [0, {upper}), got values in [{arr.min()}, {arr.max()}]"
        )
    return arr.astype(np.intp, copy=False)


def _check_triples(
    item_index, expert_index, labels, n_items, n_experts, n_classes, item_tag, n_tags
):
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2, got {n_classes}")
    items = _check_index("item_index", item_index, n_items, None)
    n = items.shape[0]
    experts = _check_index("expert_index", expert_index, n_experts, n)
    labs = _check_index("labels", labels, n_classes, n)
    tags = None if item_tag is None else _check_index("item_tag", item_tag, n_tags, n)
    return items, experts, labs, tags


def _label_weight(accuracy: np.ndarray, experts: np.ndarray, tags: np.ndarray | None, k: int):
    acc = accuracy[experts] if tags is None else accuracy[experts, tags]
    acc = np.clip(acc, _ACC_EPS, 1.0 - _ACC_EPS)
    return np.log(k - 1) + np.log(acc) - np.log1p(-acc)


def _vote_scores(items, labs, weight, n_items: int, k: int) -> np.ndarray:
    flat = np.bincount(items * k + labs, weights=weight, minlength=n_items * k)
    return flat.reshape(n_items, k)


def _softmax(scores: np.ndarray) -> np.ndarray:
    z = np.exp(scores - scores.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def _decide(posterior: np.ndarray, has_label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    label = np.where(has_label, posterior.argmax(axis=1), -1)
    confidence = np.where(has_label, posterior.max(axis=1), 0.0)
    return label, confidence


def vote_posterior(
    item_index: np.ndarray,
    expert_index: np.ndarray,
    labels: np.ndarray,
    accuracy: np.ndarray,
    n_items: int,
    n_classes: int,
    item_tag: np.ndarray | None = None,
) -> np.ndarray:
    """Posterior over classes per item under the one-coin model and a uniform prior.

    ``posterior[item_index, labels]`` is the probability that each given label is right:
    a soft agreement count that, unlike agreement with the winning label, does not hand
    every disagreement to the expert currently believed best.

    Parameters
    ----------
    item_index, expert_index, labels : ndarray of int, shape (n_labels,)
        One entry per label given.
    accuracy : ndarray of shape (n_experts,) or (n_experts, n_tags)
        Accuracy of each expert (per tag when ``item_tag`` is given), in (0, 1).
    n_items, n_classes : int
        Number of items and of classes ``k >= 2``.
    item_tag : ndarray of int, shape (n_labels,), optional
        Tag under which each label was given; selects the column of ``accuracy``.

    Returns
    -------
    posterior : ndarray of shape (n_items, n_classes)
        Rows sum to 1; uniform for unlabelled items.
    """
    acc = np.asarray(accuracy, dtype=float)
    if acc.ndim != (1 if item_tag is None else 2):
        raise ValueError(
            f"accuracy must be (n_experts,) without item_tag and (n_experts, n_tags) with it, "
            f"got {acc.shape}"
        )
    if np.any(~((acc > 0) & (acc < 1))):
        raise ValueError("accuracy must lie strictly between 0 and 1")
    n_tags = acc.shape[1] if acc.ndim == 2 else None
    items, experts, labs, tags = _check_triples(
        item_index, expert_index, labels, n_items, acc.shape[0], n_classes, item_tag, n_tags
    )
    weight = _label_weight(acc, experts, tags, n_classes)
    return _softmax(_vote_scores(items, labs, weight, n_items, n_classes))


def weighted_vote(
    item_index: np.ndarray,
    expert_index: np.ndarray,
    labels: np.ndarray,
    accuracy: np.ndarray,
    n_items: int,
    n_classes: int,
    item_tag: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy-weighted (one-coin log-odds) vote per item.

    Parameters
    ----------
    item_index, expert_index, labels, accuracy, n_items, n_classes, item_tag
        As :func:`vote_posterior`.

    Returns
    -------
    item_label : ndarray of int, shape (n_items,)
        Label of highest posterior (ties to the lowest class); -1 for unlabelled items.
    confidence : ndarray of shape (n_items,)
        Posterior probability of ``item_label`` under a uniform class prior; 0 if unlabelled.
    """
    posterior = vote_posterior(
        item_index, expert_index, labels, accuracy, n_items, n_classes, item_tag
    )
    has_label = np.bincount(np.asarray(item_index, dtype=np.intp), minlength=n_items) > 0
    return _decide(posterior, has_label)


def agreement_credit(
    labels: np.ndarray,
    posterior: np.ndarray,
    gold: int | None = None,
    soft: bool = True,
) -> np.ndarray | None:
    """How much each label of one finished item says its expert was right.

    Against a gold answer the credit is 1 or 0.  Otherwise it is the item's vote
    posterior of the label (``soft``), a soft agreement count that does not hand every
    split decision to the expert currently believed best, or 0/1 agreement with the
    vote's winner (``soft=False``).  A single label without gold agrees with itself and
    says nothing about its expert: no credit (None).

    Parameters
    ----------
    labels : ndarray of int, shape (n_labels,)
        Class index of each label given on the item.
    posterior : ndarray of shape (n_classes,)
        The item's vote posterior (a row of :func:`vote_posterior`).
    gold : int, optional
        Class index of the known answer; -1 matches no label.
    soft : bool
        Soft credit (above) or hard agreement with the winner.

    Returns
    -------
    ndarray of shape (n_labels,) with values in [0, 1], or None
    """
    posterior = np.asarray(posterior, dtype=float)
    labs = _check_index("labels", labels, posterior.shape[0], None)
    if gold is None and labs.shape[0] < 2:
        return None
    if gold is not None:
        return (labs == gold).astype(float)
    if soft:
        return posterior[labs]
    return (labs == posterior.argmax()).astype(float)
