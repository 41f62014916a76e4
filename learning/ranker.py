"""The ranking model: a classifier plus a bootstrap committee of the same kind.

``TaskRanker`` learns from labeled items (their features and supplied predictions, laid
out by the caller) and gives, for unlabeled ones, the main model's probabilities and the
committee's probabilities, whose disagreement feeds :func:`~taskrank.learning.priority.score`.
Persisting a fitted ranker is the caller's job.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

# Probability given to a class the member never saw in training, before renormalising:
# small enough not to outvote a trained class, non-zero so no class is ever ruled out.
UNSEEN_PROBA = 1e-3


def _logistic_regression(ranker: TaskRanker, seed: int) -> Pipeline:
    return Pipeline(
        [
            ("scale", StandardScaler()),
            ("model", LogisticRegression(C=ranker.C, max_iter=ranker.max_iter, random_state=seed)),
        ]
    )


def _random_forest(ranker: TaskRanker, seed: int) -> RandomForestClassifier:
    return RandomForestClassifier(n_estimators=50, min_samples_leaf=2, random_state=seed)


def _naive_bayes(ranker: TaskRanker, seed: int) -> GaussianNB:
    return GaussianNB()


# name -> factory(ranker, seed) building an unfitted estimator from the ranker's params.
MODELS: dict[str, Callable[[TaskRanker, int], BaseEstimator]] = {
    "logistic_regression": _logistic_regression,
    "naive_bayes": _naive_bayes,
    "random_forest": _random_forest,
}


def get_model(name: str) -> Callable[[TaskRanker, int], BaseEstimator]:
    """Return the estimator factory registered under ``name``.

    Raises
    ------
    ValueError
        When ``name`` is not a key of :data:`MODELS`.
    """
    try:
        return MODELS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(MODELS)}") from None


class TaskRanker(ClassifierMixin, BaseEstimator):
    """Classifier with a bootstrap committee, for uncertainty and disagreement scores.

    Parameters
    ----------
    model : str
        Key of :data:`MODELS` (``"logistic_regression"``, ``"random_forest"``,
        ``"naive_bayes"``).
    members : int
        Committee size: members are fitted on stratified bootstrap replicas.
    classes : array-like of shape (n_classes,), optional
        Every label the project knows, in column order. When given, probabilities have
        one column per entry even for classes absent from training.
    C, max_iter : float, int
        Passed to ``LogisticRegression``.
    random_state : int, RandomState or None
        Seeds the bootstrap and the estimators.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Column order of every probability output.
    n_features_in_ : int
    estimator_ : estimator
        The main model, fitted on all data.
    committee_ : list of estimators, length ``members``
        Models fitted on bootstrap replicas.
    estimators_ : list of estimators, length ``members + 1``
        ``[estimator_, *committee_]``.
    n_iter_ : int
        Most solver iterations any estimator ran (a non-iterative fit counts as 1).
    """

    def __init__(
        self,
        model: str = "logistic_regression",
        members: int = 5,
        classes: object = None,
        random_state: int | np.random.RandomState | None = 0,
        C: float = 1.0,
        max_iter: int = 1000,
    ) -> None:
        self.model = model
        self.members = members
        self.classes = classes
        self.random_state = random_state
        self.C = C
        self.max_iter = max_iter

    def fit(self, X: object, y: object, sample_weight: object = None) -> TaskRanker:
        """Fit the main model and the committee.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        sample_weight : array-like of shape (n_samples,), optional

        Returns
        -------
        self : TaskRanker
        """
        factory = get_model(self.model)
        if isinstance(self.members, bool) or not isinstance(self.members, int | np.integer):
            raise ValueError(f"members must be an integer >= 1, got {self.members!r}")
        if self.members < 1:
            raise ValueError(f"members must be an integer >= 1, got {self.members}")
        X, y = validate_data(self, X, y)
        check_classification_targets(y)
        sample_weight = _check_sample_weight(sample_weight, X)
        self.classes_ = self._resolve_classes(y)
        rng = check_random_state(self.random_state)
        self.estimator_ = _fit_one(factory(self, _seed(rng)), X, y, sample_weight)
        self.committee_ = []
        for _ in range(self.members):  # loop over members
            rows = _stratified_bootstrap(y, rng)
            estimator = factory(self, _seed(rng))
            self.committee_.append(_fit_one(estimator, X[rows], y[rows], sample_weight[rows]))
        self.estimators_ = [self.estimator_, *self.committee_]
        self.n_iter_ = _max_iterations(self.estimators_)
        return self

    def predict_proba(self, X: object) -> np.ndarray:
        """Main model's probabilities, columns in ``classes_`` order.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False)
        return self._aligned_proba(self.estimator_, X)

    def predict(self, X: object) -> np.ndarray:
        """Most probable class per sample.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        labels : ndarray of shape (n_samples,)
        """
        proba = self.predict_proba(X)
        return self.classes_[proba.argmax(axis=1)]

    def committee_proba(self, X: object) -> np.ndarray:
        """Probabilities of every committee member.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        committee : ndarray of shape (members, n_samples, n_classes)
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False)
        return np.stack([self._aligned_proba(member, X) for member in self.committee_])

    def _resolve_classes(self, y: np.ndarray) -> np.ndarray:
        seen = np.unique(y)
        if self.classes is None:
            return seen
        classes = np.asarray(self.classes)
        if classes.ndim != 1 or classes.size == 0:
            raise ValueError(f"classes must be a non-empty 1-d list, got {self.classes!r}")
        if np.unique(classes).size != classes.size:
            raise ValueError(f"classes contains duplicates: {self.classes!r}")
        # Compare as Python values: np.setdiff1d would cast 0 and "0" to one string dtype.
        known = set(classes.tolist())
        unknown = [label for label in seen.tolist() if label not in known]
        if unknown:
            raise ValueError(
                f"y contains labels not in classes: {unknown}; classes is {classes.tolist()}"
            )
        return classes

    def _aligned_proba(self, estimator: BaseEstimator, X: np.ndarray) -> np.ndarray:
        """Estimator's probabilities moved into ``classes_`` columns, unseen ones small."""
        proba = estimator.predict_proba(X)
        if proba.shape[1] == len(self.classes_) and np.array_equal(
            estimator.classes_, self.classes_
        ):
            return proba
        out = np.full((X.shape[0], len(self.classes_)), UNSEEN_PROBA)
        position = {label: i for i, label in enumerate(self.classes_.tolist())}
        for j, label in enumerate(estimator.classes_.tolist()):  # loop over classes
            out[:, position[label]] = proba[:, j]
        return out / out.sum(axis=1, keepdims=True)


def _seed(rng: np.random.RandomState) -> int:
    return int(rng.randint(np.iinfo(np.int32).max))


def _stratified_bootstrap(y: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
    """Row indices resampled with replacement within each class.

    Keeping every class's count means no replica loses a class, which a plain bootstrap
    does often with a handful of labels (one minority label in ten is missing from a
    third of plain replicas).
    """
    _, inverse = np.unique(y, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    counts = np.bincount(inverse)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    offsets = np.floor(rng.random_sample(len(y)) * np.repeat(counts, counts)).astype(np.intp)
    return order[np.repeat(starts, counts) + offsets]


def _max_iterations(estimators: list) -> int:
    """Largest ``n_iter_`` among the estimators (or their final pipeline step)."""
    found = [1]
    for estimator in estimators:  # loop over members
        final = estimator[-1] if isinstance(estimator, Pipeline) else estimator
        found.append(int(np.max(getattr(final, "n_iter_", 1))))
    return max(found)


def _fit_one(estimator, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray):
    """Fit ``estimator``, or a constant prior model when one class has all the weight."""
    if np.unique(y[sample_weight > 0]).size < 2:
        estimator = DummyClassifier(strategy="prior")
        return estimator.fit(X, y, sample_weight=sample_weight)
    if isinstance(estimator, Pipeline):
        weights = {f"{name}__sample_weight": sample_weight for name, _ in estimator.steps}
        return estimator.fit(X, y, **weights)
    return estimator.fit(X, y, sample_weight=sample_weight)
