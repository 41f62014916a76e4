"""Tests for taskrank.learning.ranker: the TaskRanker estimator and its committee."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.dummy import DummyClassifier
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks
from threadpoolctl import threadpool_limits

from taskrank.learning.priority import score
from taskrank.learning.ranker import MODELS, UNSEEN_PROBA, TaskRanker, get_model


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """Fits here are tiny: extra BLAS threads only spin and slow a shared box down."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _data(n=60, classes=3, seed=0):
    X, y = make_classification(
        n_samples=n,
        n_features=4,
        n_informative=3,
        n_redundant=0,
        n_classes=classes,
        n_clusters_per_class=1,
        random_state=seed,
    )
    return X, y


@parametrize_with_checks([TaskRanker(members=2)])
def test_sklearn_estimator_contract(estimator, check):
    """TaskRanker passes scikit-learn's estimator checks."""
    check(estimator)


def test_committee_shape_and_attributes():
    """committee_proba is (members, n, k); fitted attributes are set."""
    X, y = _data()
    ranker = TaskRanker(members=4).fit(X, y)
    assert ranker.committee_proba(X[:7]).shape == (4, 7, 3)
    assert ranker.predict_proba(X[:7]).shape == (7, 3)
    assert ranker.n_features_in_ == 4
    np.testing.assert_array_equal(ranker.classes_, [0, 1, 2])
    assert len(ranker.committee_) == 4
    assert ranker.estimators_ == [ranker.estimator_, *ranker.committee_]


def test_committee_members_differ_but_agree_broadly():
    """Bootstrap members are distinct models that mostly agree with the main one."""
    X, y = _data(n=200)
    ranker = TaskRanker(members=3).fit(X, y)
    committee = ranker.committee_proba(X)
    assert not np.allclose(committee[0], committee[1])
    agreement = (committee.argmax(axis=2) == ranker.predict_proba(X).argmax(axis=1)).mean()
    assert agreement > 0.8


def test_classes_param_aligns_columns_with_unseen_classes():
    """Given classes, columns follow its order and unseen classes get a small probability."""
    X, y = _data(classes=2)
    labels = np.array(["no", "yes"])[y]
    ranker = TaskRanker(classes=["maybe", "yes", "no"], members=2).fit(X, labels)
    np.testing.assert_array_equal(ranker.classes_, ["maybe", "yes", "no"])
    proba = ranker.predict_proba(X)
    committee = ranker.committee_proba(X)
    assert proba.shape == (60, 3) and committee.shape == (2, 60, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_allclose(committee.sum(axis=2), 1.0)
    assert np.all(proba[:, 0] > 0) and np.all(proba[:, 0] <= UNSEEN_PROBA)
    assert (ranker.predict(X) == labels).mean() > 0.8


def test_label_outside_classes_is_rejected():
    """A training label missing from classes raises ValueError listing it."""
    X, y = _data(classes=2)
    with pytest.raises(ValueError, match=r"y contains labels not in classes: \[1\]"):
        TaskRanker(classes=[0, 2]).fit(X, y)


@pytest.mark.parametrize(
    ("classes", "message"), [([0, 0, 1], "duplicates"), ([], "non-empty"), ([[0, 1]], "1-d")]
)
def test_bad_classes_param(classes, message):
    """classes must be a non-empty, duplicate-free 1-d list."""
    X, y = _data(classes=2)
    with pytest.raises(ValueError, match=message):
        TaskRanker(classes=classes).fit(X, y)


def test_single_class_training_predicts_that_class():
    """With one class in y, every member is a constant model predicting it."""
    X = np.random.default_rng(0).normal(size=(5, 3))
    ranker = TaskRanker(classes=["a", "b"], members=3).fit(X, ["b"] * 5)
    np.testing.assert_array_equal(ranker.predict(X), ["b"] * 5)
    assert ranker.committee_proba(X).shape == (3, 5, 2)
    assert all(isinstance(member, DummyClassifier) for member in ranker.estimators_)


def test_rare_class_is_in_every_bootstrap_replica():
    """Stratified bootstrap: one minority label in ten still reaches every member."""
    X = np.random.default_rng(1).normal(size=(10, 2))
    y = np.array([0] * 9 + [1])
    ranker = TaskRanker(members=8).fit(X, y)
    assert all(isinstance(member, Pipeline) for member in ranker.committee_)


def test_same_seed_same_committee():
    """random_state makes the bootstrap and the models reproducible."""
    X, y = _data()
    first = TaskRanker(members=2, random_state=4).fit(X, y).committee_proba(X)
    again = TaskRanker(members=2, random_state=4).fit(X, y).committee_proba(X)
    np.testing.assert_array_equal(first, again)
    other = TaskRanker(members=2, random_state=5).fit(X, y).committee_proba(X)
    assert not np.array_equal(first, other)


def test_sample_weight_changes_the_fit():
    """sample_weight reaches the models."""
    X, y = _data(classes=2)
    weights = np.where(y == 1, 10.0, 1.0)
    plain = TaskRanker(members=1).fit(X, y).predict_proba(X)[:, 1].mean()
    heavy = TaskRanker(members=1).fit(X, y, sample_weight=weights).predict_proba(X)[:, 1].mean()
    assert heavy > plain


@pytest.mark.parametrize("model", sorted(MODELS))
def test_every_registered_model_fits(model):
    """Each model in the registry fits, predicts and builds a committee."""
    X, y = _data()
    ranker = TaskRanker(model=model, members=2).fit(X, y)
    assert ranker.committee_proba(X).shape == (2, 60, 3)
    assert ranker.score(X, y) > 0.7


def test_unknown_model_and_bad_members():
    """Bad model names and committee sizes raise ValueError listing what is valid."""
    X, y = _data()
    with pytest.raises(ValueError, match=r"unknown model 'svm'; expected one of \["):
        TaskRanker(model="svm").fit(X, y)
    with pytest.raises(ValueError, match="unknown model"):
        get_model("svm")
    with pytest.raises(ValueError, match="members must be an integer >= 1, got 0"):
        TaskRanker(members=0).fit(X, y)


def test_committee_proba_needs_fit():
    """committee_proba before fit raises NotFittedError."""
    with pytest.raises(NotFittedError):
        TaskRanker().committee_proba(np.zeros((2, 2)))


def test_committee_feeds_score():
    """The committee output is a valid score() input."""
    X, y = _data()
    ranker = TaskRanker(members=3).fit(X[:30], y[:30])
    result = score(ranker.committee_proba(X[30:]))
    assert result.priority.shape == (30,)
    assert np.all(np.isfinite(result.priority))


def test_labels_of_another_type_than_classes_are_rejected():
    """Integer labels do not silently match string classes ("0" is not 0)."""
    X, y = _data(classes=2)
    with pytest.raises(ValueError, match="y contains labels not in classes"):
        TaskRanker(classes=["0", "1"]).fit(X, y)
