"""fastgd.sklearn's GridSearchCV and RandomizedSearchCV: every candidate × fold of fastgd's
estimators trained at once (fit_many), with the same results as scikit-learn's own search over
the same estimators (the oracle: scikit-learn's search, each fit alone)."""

import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

from scipy.stats import loguniform  # noqa: E402
from sklearn import model_selection  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from fastgd.sklearn import (  # noqa: E402
    GridSearchCV,
    MLPClassifier,
    MLPRegressor,
    RandomizedSearchCV,
    _search,  # noqa: E402
)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X[:600], y[:600]


def _same_results(ours, theirs):
    for key in ("mean_test_score", "rank_test_score", "params"):
        assert list(ours.cv_results_[key]) == list(theirs.cv_results_[key]), key
    assert set(ours.cv_results_) == set(theirs.cv_results_)
    assert ours.best_params_ == theirs.best_params_
    assert ours.best_score_ == theirs.best_score_
    np.testing.assert_allclose(
        ours.best_estimator_.network_.flat_parameters, theirs.best_estimator_.network_.flat_parameters
    )


@pytest.fixture(autouse=True)
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def _trained_at_once(monkeypatch):
    # Counts the fits the search trained through fit_many, and the fits that found them.
    counts = {"trained": 0, "found": 0}
    train, prefit = _search._train, _search.prefit

    def counted_train(jobs, X, Y):
        counts["trained"] += len(jobs)
        return train(jobs, X, Y)

    def counted_prefit(*args):
        found = prefit(*args)
        counts["found"] += found
        return found

    monkeypatch.setattr(_search, "_train", counted_train)
    monkeypatch.setattr(_search, "prefit", counted_prefit)
    return counts


@pytest.mark.parametrize(
    "estimator",
    [
        MLPClassifier(hidden_layer_sizes=(16,), max_iter=15, random_state=0),
        MLPClassifier(hidden_layer_sizes=(16,), max_iter=15, random_state=1, early_stopping=True, solver="sgd"),
        MLPClassifier(hidden_layer_sizes=(16,), max_iter=15, random_state=2, solver="sgd", learning_rate="invscaling"),
        MLPClassifier(hidden_layer_sizes=(16,), max_iter=30, random_state=3, solver="sgd", learning_rate="adaptive"),
    ],
)
def test_grid_search_gives_scikit_learns_results(digits, estimator, monkeypatch):
    X, y = digits
    grid = {"learning_rate_init": [1e-3, 1e-2], "alpha": [1e-4, 1e-2]}
    counts = _trained_at_once(monkeypatch)
    ours = GridSearchCV(estimator, grid, cv=3, return_train_score=True).fit(X, y)
    theirs = model_selection.GridSearchCV(estimator, grid, cv=3, return_train_score=True).fit(X, y)
    _same_results(ours, theirs)
    # every candidate × fold, none trained again, and the refit on all rows through fit_many too
    assert counts == {"trained": 13, "found": 13}


def test_randomized_search_with_scoring_and_class_weight_and_jobs(digits, monkeypatch):
    X, y = digits
    estimator = MLPClassifier(hidden_layer_sizes=(16,), max_iter=10, random_state=0, class_weight="balanced")
    distributions = {"learning_rate_init": loguniform(1e-3, 1e-1), "alpha": loguniform(1e-5, 1e-1)}
    counts = _trained_at_once(monkeypatch)
    arguments = dict(n_iter=4, cv=3, random_state=0, scoring=["accuracy", "neg_log_loss"], refit="neg_log_loss")
    ours = RandomizedSearchCV(estimator, distributions, n_jobs=2, **arguments).fit(X, y)
    theirs = model_selection.RandomizedSearchCV(estimator, distributions, **arguments).fit(X, y)
    assert list(ours.cv_results_["mean_test_accuracy"]) == list(theirs.cv_results_["mean_test_accuracy"])
    # (the log loss reads the probabilities themselves: equal to the rounding fit_many's sums
    # leave in the weights)
    np.testing.assert_allclose(
        ours.cv_results_["mean_test_neg_log_loss"], theirs.cv_results_["mean_test_neg_log_loss"], rtol=1e-9
    )
    assert ours.cv_results_["params"] == theirs.cv_results_["params"]
    assert ours.best_params_ == theirs.best_params_
    assert counts["found"] == 13  # (n_jobs=2: trained in joblib's workers, found here; and the refit)


def test_regressor_and_other_estimators_and_lbfgs(digits):
    X, y = digits
    target = X[:, 20] / 16.0
    grid = {"alpha": [1e-4, 1e-1]}
    regressor = MLPRegressor(hidden_layer_sizes=(8,), max_iter=10, random_state=0)
    _same_results(
        GridSearchCV(regressor, grid, cv=2).fit(X, target),
        model_selection.GridSearchCV(regressor, grid, cv=2).fit(X, target),
    )
    # Not fastgd's stochastic solvers: scikit-learn's search, unchanged.
    lbfgs = MLPClassifier(hidden_layer_sizes=(8,), max_iter=10, random_state=0, solver="lbfgs")
    _same_results(GridSearchCV(lbfgs, grid, cv=2).fit(X, y), model_selection.GridSearchCV(lbfgs, grid, cv=2).fit(X, y))
    ours = GridSearchCV(LogisticRegression(max_iter=50), {"C": [0.1, 1.0]}, cv=2).fit(X, y)
    theirs = model_selection.GridSearchCV(LogisticRegression(max_iter=50), {"C": [0.1, 1.0]}, cv=2).fit(X, y)
    assert list(ours.cv_results_["mean_test_score"]) == list(theirs.cv_results_["mean_test_score"])


def test_folds_with_other_classes_are_trained_apart(digits, monkeypatch):
    # Folds A, B, C: class 0 only in A, class 9 only in B. The training rows of the first fold
    # (B, C) have classes 1-9, the second's (A, C) 0-8: the same outputs, another encoding of C's
    # rows, so the second cannot share the first's targets: it trains by itself when the search
    # reaches it; the third (all classes) trains at once, apart. The results are the same.
    X, y = digits
    a, b = np.flatnonzero(y != 9)[:100], np.flatnonzero(y != 0)[-100:]
    c = np.setdiff1d(np.flatnonzero((y != 0) & (y != 9)), np.r_[a, b])[:100]
    X, y = X[np.r_[a, b, c]], y[np.r_[a, b, c]]
    estimator = MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, random_state=0)
    counts = _trained_at_once(monkeypatch)
    cv = model_selection.KFold(3)
    ours = GridSearchCV(estimator, {"alpha": [1e-4]}, cv=cv, error_score="raise").fit(X, y)
    theirs = model_selection.GridSearchCV(estimator, {"alpha": [1e-4]}, cv=cv, error_score="raise").fit(X, y)
    assert list(ours.cv_results_["mean_test_score"]) == list(theirs.cv_results_["mean_test_score"])
    assert counts == {"trained": 4, "found": 4}  # (the third fold, then the refit, one by one)


def test_the_search_leaves_no_table_behind(digits):
    X, y = digits
    estimator = MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, random_state=0)
    GridSearchCV(estimator, {"alpha": [1e-4]}, cv=2).fit(X, y)
    assert getattr(_search._PREFIT, "table", None) is None
    # A plain fit afterwards trains (nothing is taken from the search).
    fitted = MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, random_state=0).fit(X, y)
    assert fitted.n_iter_ == 3


def test_a_search_on_a_dask_cluster(digits):
    distributed = pytest.importorskip("distributed")
    import joblib

    X, y = digits
    estimator = MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, random_state=0)
    grid = {"alpha": [1e-4, 1e-2]}
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        with distributed.Client(cluster), joblib.parallel_backend("dask"):
            ours = GridSearchCV(estimator, grid, cv=2, n_jobs=2).fit(X, y)
    _same_results(ours, model_selection.GridSearchCV(estimator, grid, cv=2).fit(X, y))
