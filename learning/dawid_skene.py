"""One-coin Dawid–Skene EM (DESIGN §5): item labels and expert accuracies learned together,
over a whole project or, incrementally, over a batch of items against what the others taught.

Labels come as parallel triples ``(item_index, expert_index, label)`` as in
``aggregation.py``, whose one-coin vote is the E-step.
"""

from __future__ import annotations

import numpy as np

from taskrank.learning.aggregation import (
    _check_triples,
    _decide,
    _label_weight,
    _softmax,
    _vote_scores,
)

__all__ = [
    "dawid_skene",
    "dawid_skene_parameters",
    "dawid_skene_statistics",
    "dawid_skene_update",
]


def _majority_posterior(items, labs, n_items: int, k: int) -> np.ndarray:
    """Vote shares per item (n_items, k); uniform for unlabelled items."""
    counts = _vote_scores(items, labs, np.ones(items.shape[0]), n_items, k)
    totals = counts.sum(axis=1, keepdims=True)
    return np.where(totals > 0, counts / np.maximum(totals, 1.0), 1.0 / k)


def dawid_skene_statistics(
    item_index: np.ndarray,
    expert_index: np.ndarray,
    labels: np.ndarray,
    posterior: np.ndarray,
    n_experts: int,
    item_tag: np.ndarray | None = None,
    n_tags: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Sufficient statistics of the Dawid–Skene M-step for some items at their posteriors.

    They add up over items, so the statistics of a project are kept as a running sum: an
    item decided again takes its old share out and puts its new one in.

    Parameters
    ----------
    item_index, expert_index, labels : ndarray of int, shape (n_labels,)
        One entry per label given.
    posterior : ndarray of shape (n_items, n_classes)
        Each item's posterior over classes.
    n_experts : int
    item_tag : ndarray of int, shape (n_labels,), optional
        Tag each label was given under; with it, counts are per (expert, tag).
    n_tags : int, optional
        Number of tags; defaults to ``item_tag.max() + 1``.

    Returns
    -------
    correct : ndarray of shape (n_experts,) or (n_experts, n_tags)
        Soft count of right labels: the sum of ``posterior[item, label]``.
    total : ndarray, same shape
        Labels given.
    class_mass : ndarray of shape (n_classes,)
        Summed posterior of the items with a label.
    n_labelled : int
        Items with a label.
    """
    posterior = np.asarray(posterior, dtype=float)
    if posterior.ndim != 2:
        raise ValueError(f"posterior must be (n_items, n_classes), got {posterior.shape}")
    if item_tag is not None and n_tags is None:
        n_tags = int(np.max(item_tag, initial=0)) + 1
    items, experts, labs, tags = _check_triples(
        item_index, expert_index, labels, posterior.shape[0], n_experts, posterior.shape[1],
        item_tag, n_tags
    )
    shape = (n_experts,) if tags is None else (n_experts, n_tags)
    return _statistics(posterior, items, labs, _cells(experts, tags, n_tags), shape,
                       np.unique(items))


def dawid_skene_parameters(
    correct: np.ndarray,
    total: np.ndarray,
    class_mass: np.ndarray,
    n_labelled: int,
    prior: tuple[float | np.ndarray, float | np.ndarray] = (2.0, 1.0),
) -> tuple[np.ndarray, np.ndarray]:
    """The M-step from sufficient statistics (:func:`dawid_skene_statistics`).

    Returns
    -------
    accuracy : ndarray shaped as ``correct``
        Posterior mean of each accuracy under the Beta ``prior`` (pseudo-counts of right
        and wrong labels, broadcastable to ``correct``).
    prevalence : ndarray of shape (n_classes,)
        Class shares of the labelled items, with one pseudo-item per class.
    """
    correct, total = np.asarray(correct, dtype=float), np.asarray(total, dtype=float)
    alpha0, beta0 = (np.broadcast_to(np.asarray(p, dtype=float), correct.shape) for p in prior)
    class_mass = np.asarray(class_mass, dtype=float)
    accuracy = (correct + alpha0) / (total + alpha0 + beta0)
    prevalence = (class_mass + 1.0) / (n_labelled + class_mass.shape[0])
    return accuracy, prevalence


def _cells(experts: np.ndarray, tags: np.ndarray | None, n_tags: int | None) -> np.ndarray:
    return experts if tags is None else experts * n_tags + tags


def _statistics(posterior, items, labs, cell, shape, labelled):
    """``labelled``: the items with a label (``np.unique(items)``, computed once per EM)."""
    n_cells = int(np.prod(shape))
    correct = np.bincount(cell, weights=posterior[items, labs], minlength=n_cells)
    total = np.bincount(cell, minlength=n_cells).astype(float)
    mass = posterior[labelled]
    return correct.reshape(shape), total.reshape(shape), mass.sum(axis=0), mass.shape[0]


def _e_step(accuracy, prevalence, items, experts, labs, tags, n_items, k) -> np.ndarray:
    weight = _label_weight(accuracy, experts, tags, k)
    return _softmax(_vote_scores(items, labs, weight, n_items, k) + np.log(prevalence))


def dawid_skene(
    item_index: np.ndarray,
    expert_index: np.ndarray,
    labels: np.ndarray,
    n_items: int,
    n_experts: int,
    n_classes: int,
    item_tag: np.ndarray | None = None,
    n_tags: int | None = None,
    max_iter: int = 50,
    tol: float = 1e-6,
    prior: tuple[float | np.ndarray, float | np.ndarray] = (2.0, 1.0),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-coin Dawid–Skene EM: item labels and expert accuracies, learned together.

    Starts from the (soft) majority vote, then alternates the M-step (accuracy per expert,
    or per (expert, tag), as the Beta posterior mean of its soft agreement with the
    current item posteriors; class prevalence) and the E-step (item posteriors from the
    log-odds weighted vote plus log prevalence) until accuracies move less than ``tol``.

    Parameters
    ----------
    item_index, expert_index, labels : ndarray of int, shape (n_labels,)
        One entry per label given.
    n_items, n_experts, n_classes : int
        Sizes; ``n_classes >= 2``.
    item_tag : ndarray of int, shape (n_labels,), optional
        Skill tag of the item each label was given on (e.g. its primary tag); with it,
        accuracy is estimated per (expert, tag).
    n_tags : int, optional
        Number of tags; defaults to ``item_tag.max() + 1``.
    max_iter : int
        Maximum EM iterations, >= 1.
    tol : float
        Stop when no accuracy changes by more than this.
    prior : (alpha, beta)
        Beta prior on every accuracy, as pseudo-counts of right and wrong labels; each
        may be an array broadcastable to the accuracy shape (e.g. from declared levels).

    Returns
    -------
    item_label : ndarray of int, shape (n_items,)
        -1 for unlabelled items.
    confidence : ndarray of shape (n_items,)
        Posterior probability of ``item_label``; 0 for unlabelled items.
    expert_accuracy : ndarray of shape (n_experts,) or (n_experts, n_tags)
        Estimated accuracies; the prior mean where an expert gave no label.
    """
    posterior, accuracy = dawid_skene_update(
        item_index, expert_index, labels, n_items, n_experts, n_classes, item_tag=item_tag,
        n_tags=n_tags, max_iter=max_iter, tol=tol, prior=prior)
    has_label = np.bincount(np.asarray(item_index, dtype=np.intp), minlength=n_items) > 0
    label, confidence = _decide(posterior, has_label)
    return label, confidence, accuracy


def dawid_skene_update(
    item_index: np.ndarray,
    expert_index: np.ndarray,
    labels: np.ndarray,
    n_items: int,
    n_experts: int,
    n_classes: int,
    rest: tuple[np.ndarray, np.ndarray, np.ndarray, int] | None = None,
    item_tag: np.ndarray | None = None,
    n_tags: int | None = None,
    max_iter: int = 50,
    tol: float = 1e-6,
    prior: tuple[float | np.ndarray, float | np.ndarray] = (2.0, 1.0),
) -> tuple[np.ndarray, np.ndarray]:
    """Dawid–Skene EM over a batch of items, the other items held at what they taught.

    Incremental EM (Neal & Hinton, 1998): the M-step sees the statistics of the items
    outside the batch (``rest``, from :func:`dawid_skene_statistics`, unchanged) plus
    those of the batch at its current posteriors; only the batch is decided again.
    Without ``rest`` it is :func:`dawid_skene` (which calls it) and starts from the
    majority vote; with it, from the E-step at the parameters ``rest`` gives.

    Parameters
    ----------
    item_index, expert_index, labels, n_items, n_experts, n_classes, item_tag, n_tags,
    max_iter, tol, prior
        As :func:`dawid_skene`, for the labels of the batch.
    rest : (correct, total, class_mass, n_labelled), optional
        Sufficient statistics of the other items; ``correct`` and ``total`` shaped as the
        accuracies.

    Returns
    -------
    posterior : ndarray of shape (n_items, n_classes)
        The batch's posteriors (uniform for items without a label).
    expert_accuracy : ndarray of shape (n_experts,) or (n_experts, n_tags)
        The accuracies of the last M-step.
    """
    if item_tag is not None and n_tags is None:
        n_tags = int(np.max(item_tag, initial=0)) + 1
    items, experts, labs, tags = _check_triples(
        item_index, expert_index, labels, n_items, n_experts, n_classes, item_tag, n_tags
    )
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    shape = (n_experts,) if tags is None else (n_experts, n_tags)
    alpha0, beta0 = (np.broadcast_to(np.asarray(p, dtype=float), shape) for p in prior)
    if np.any(~(alpha0 > 0)) or np.any(~(beta0 > 0)):
        raise ValueError("prior pseudo-counts must be > 0")
    rest = _check_rest(rest, shape, n_classes)
    cell, labelled = _cells(experts, tags, n_tags), np.unique(items)
    if rest[3] > 0:
        accuracy, prevalence = dawid_skene_parameters(*rest, prior=(alpha0, beta0))
        posterior = _e_step(accuracy, prevalence, items, experts, labs, tags, n_items, n_classes)
    else:
        posterior = _majority_posterior(items, labs, n_items, n_classes)
        accuracy = alpha0 / (alpha0 + beta0)
    for _ in range(max_iter):
        batch = _statistics(posterior, items, labs, cell, shape, labelled)
        new_acc, prevalence = dawid_skene_parameters(
            *(part + mine for part, mine in zip(rest, batch, strict=True)), prior=(alpha0, beta0))
        posterior = _e_step(new_acc, prevalence, items, experts, labs, tags, n_items, n_classes)
        converged = np.max(np.abs(new_acc - accuracy), initial=0.0) < tol
        accuracy = new_acc
        if converged:
            break
    return posterior, accuracy


def _check_rest(rest, shape: tuple, k: int) -> tuple:
    if rest is None:
        return np.zeros(shape), np.zeros(shape), np.zeros(k), 0
    correct, total, class_mass, n_labelled = rest
    correct, total = np.asarray(correct, dtype=float), np.asarray(total, dtype=float)
    class_mass = np.asarray(class_mass, dtype=float)
    if correct.shape != shape or total.shape != shape or class_mass.shape != (k,):
        raise ValueError(
            f"rest must hold correct and total of shape {shape} and class_mass of shape "
            f"({k},), got {correct.shape}, {total.shape} and {class_mass.shape}"
        )
    return correct, total, class_mass, int(n_labelled)
