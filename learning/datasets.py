"""Labelled pools for ``taskrank simulate``: scikit-learn's bundled sets and two generated ones.

Everything is built in memory with fixed seeds; nothing is downloaded. The generated pools
stand in for real ones that the bundled sets do not resemble: :func:`make_classes10`
(many classes, several clusters per class, label noise) and :func:`make_embeddings384`
(unit-normalised 384-dimensional vectors shaped like sentence embeddings).
Pure: numpy and scikit-learn only.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.datasets import (
    load_breast_cancer,
    load_digits,
    load_iris,
    load_wine,
    make_classification,
)
from sklearn.utils import check_random_state

__all__ = ["DATASETS", "load_dataset", "make_classes10", "make_embeddings384"]

# Mildly imbalanced: the largest class is about 2.4x the smallest.
CLASSES10_WEIGHTS = (0.14, 0.13, 0.12, 0.11, 0.10, 0.10, 0.09, 0.08, 0.07, 0.06)
# Unequal class sizes, as in a real labelling backlog.
EMBEDDINGS_SHARES = (0.22, 0.17, 0.14, 0.12, 0.11, 0.09, 0.08, 0.07)


def make_classes10(n_samples: int = 3000, class_sep: float = 4.0,
                   random_state: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A hard ten-class pool: three Gaussian clusters per class, 2 % flipped labels.

    ``make_classification`` with 30 features (12 informative, 6 redundant, 12 noise),
    ten mildly imbalanced classes (:data:`CLASSES10_WEIGHTS`) of three clusters each,
    ``flip_y=0.02``. With the defaults, a ``LogisticRegression(max_iter=1000)`` fitted on
    300 random labels scores 0.61 on a held-out quarter (mean of 5 splits, range
    0.57-0.64); on all 2,250 training rows, 0.72.

    Returns
    -------
    X : ndarray of shape (n_samples, 30), float
    y : ndarray of shape (n_samples,), int in [0, 10)
    """
    X, y = make_classification(
        n_samples=n_samples, n_features=30, n_informative=12, n_redundant=6,
        n_classes=10, n_clusters_per_class=3, weights=list(CLASSES10_WEIGHTS),
        flip_y=0.02, class_sep=class_sep, random_state=random_state,
    )
    # Standardised: the hypercube vertices sit at +-class_sep, and lbfgs converges
    # within max_iter=1000 on unit-scale features.
    return (X - X.mean(axis=0)) / X.std(axis=0), y


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def make_embeddings384(n_samples: int = 3000, noise: float = 0.9,
                       random_state: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sentence-embedding-like pool: 384-d unit vectors, 8 unequal classes of sub-topics.

    Recipe (one ``RandomState(random_state)`` draws everything):

    1. a direction ``g`` shared by every row (real embeddings are anisotropic: all
       sentences sit in one cone);
    2. class directions ``c_j = unit(sqrt(rho_j) g + sqrt(1 - rho_j) u_j)``, ``u_j``
       random unit, ``rho_j ~ U(0.35, 0.7)``: centroids are not orthogonal, pairwise
       cosines about 0.35-0.7;
    3. per class 2-4 sub-topic directions ``0.6 * unit(random)``, rows split between them
       at random;
    4. noise mostly in a shared 48-dimensional subspace, with standard deviations
       decaying from ``noise`` to ``noise / 4`` over its axes (anisotropic), plus
       isotropic noise of ``0.35 * noise / sqrt(384)`` per coordinate;
    5. row = ``unit(c_j + s_jm + noise)``.

    Class sizes follow :data:`EMBEDDINGS_SHARES`. With the defaults, a
    ``LogisticRegression(max_iter=1000)`` fitted on 300 random labels scores 0.77 on a
    held-out quarter (mean of 5 splits, range 0.75-0.79; 1.00 on all 2,250 training rows);
    the cosines between the class centroids of the normalised rows lie in 0.34-0.55.

    Returns
    -------
    X : ndarray of shape (n_samples, 384), float, unit rows
    y : ndarray of shape (n_samples,), int in [0, 8), class
    topic : ndarray of shape (n_samples,), int, sub-topic (unique across classes)
    """
    rng, dim, rank = check_random_state(random_state), 384, 48
    shares = np.array(EMBEDDINGS_SHARES)
    y = np.repeat(np.arange(shares.size), _sizes(shares, n_samples))
    g = _unit(rng.normal(size=dim))
    rho = rng.uniform(0.35, 0.7, size=shares.size)
    u = _unit(rng.normal(size=(shares.size, dim)))
    centres = _unit(np.sqrt(rho)[:, None] * g + np.sqrt(1 - rho)[:, None] * u)
    n_topics = rng.randint(2, 5, size=shares.size)  # 2-4 sub-topics per class
    first = np.concatenate([[0], np.cumsum(n_topics)[:-1]])
    topic = first[y] + (rng.random_sample(y.size) * n_topics[y]).astype(int)
    topics = 0.6 * _unit(rng.normal(size=(n_topics.sum(), dim)))
    basis = np.linalg.qr(rng.normal(size=(dim, rank)))[0]  # (dim, rank), orthonormal
    scales = noise * np.geomspace(1.0, 0.25, rank)
    low_rank = (rng.normal(size=(y.size, rank)) * scales) @ basis.T
    isotropic = rng.normal(scale=0.35 * noise / np.sqrt(dim), size=(y.size, dim))
    X = _unit(centres[y] + topics[topic] + low_rank + isotropic)
    order = rng.permutation(y.size)  # classes interleaved, as a real pool arrives
    return X[order], y[order], topic[order]


def _sizes(shares: np.ndarray, n: int) -> np.ndarray:
    """Integer class sizes proportional to ``shares``, summing to ``n``."""
    sizes = np.floor(shares / shares.sum() * n).astype(int)
    sizes[: n - sizes.sum()] += 1
    return sizes


def _bundled(loader: Callable) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
    return lambda: loader(return_X_y=True)


DATASETS: dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]] = {
    "breast_cancer": _bundled(load_breast_cancer),
    "classes10": make_classes10,
    "digits": _bundled(load_digits),
    "embeddings384": lambda: make_embeddings384()[:2],
    "iris": _bundled(load_iris),
    "wine": _bundled(load_wine),
}


def load_dataset(name: str) -> tuple[np.ndarray, np.ndarray]:
    """A bundled or generated dataset by name (nothing is downloaded).

    Parameters
    ----------
    name : {"breast_cancer", "classes10", "digits", "embeddings384", "iris", "wine"}

    Returns
    -------
    X : ndarray of shape (n_samples, n_features), float
    y : ndarray of shape (n_samples,), int
    """
    try:
        loader = DATASETS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}") from None
    X, y = loader()
    return np.asarray(X, dtype=float), np.asarray(y)
