"""scikit-learn estimators: check_estimator, Pipeline, GridSearchCV, attributes; optional import."""

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("sklearn")
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from fastgd.sklearn import MLPClassifier, MLPRegressor  # noqa: E402


@parametrize_with_checks([MLPClassifier(random_state=0), MLPRegressor(random_state=0)])
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def blobs(n=120, seed=0):
    rng = np.random.default_rng(seed)
    centers = np.array([[0, 0, 0, 0], [3, 3, 0, 0], [0, 3, 3, 3]])
    labels = rng.integers(0, 3, size=n)
    return centers[labels] + rng.normal(size=(n, 4)), np.array(["a", "b", "c"])[labels]


def test_classifier_attributes_and_string_labels():
    X, y = blobs()
    clf = MLPClassifier(hidden_layer_sizes=(16,), max_iter=300, learning_rate_init=0.01, random_state=0, early_stopping=True)
    clf.fit(X, y)
    assert list(clf.classes_) == ["a", "b", "c"]
    assert clf.n_iter_ == len(clf.loss_curve_) == len(clf.validation_scores_) <= 300
    assert clf.score(X, y) > 0.95
    np.testing.assert_allclose(clf.predict_proba(X).sum(axis=1), 1, rtol=1e-12)
    assert set(clf.predict(X)) <= {"a", "b", "c"}


def test_partial_fit_needs_classes_first_and_trains_one_epoch():
    X, y = blobs()
    clf = MLPClassifier(hidden_layer_sizes=(8,), random_state=0)
    with pytest.raises(ValueError, match="classes must be passed"):
        clf.partial_fit(X, y)
    clf.partial_fit(X, y, classes=["a", "b", "c"])
    clf.partial_fit(X, y)
    assert clf.n_iter_ == 2 and clf.network_.epochs_trained == 2


def test_pipeline_and_grid_search():
    X, y = blobs(n=150)
    search = GridSearchCV(
        make_pipeline(StandardScaler(), MLPClassifier(max_iter=100, learning_rate_init=0.01, random_state=0)),
        {"mlpclassifier__hidden_layer_sizes": [(4,), (16,)], "mlpclassifier__solver": ["adam", "sgd"]},
        cv=3,
    )
    search.fit(X, y)
    assert search.best_score_ > 0.9
    assert search.best_params_["mlpclassifier__solver"] in {"adam", "sgd"}


def test_regressor_fits_a_smooth_function_with_optimizer_options():
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, size=(200, 2))
    y = np.sin(2 * X[:, 0]) + X[:, 1] ** 2
    reg = MLPRegressor(hidden_layer_sizes=(32,), activation="tanh", solver="sgd", learning_rate_init=0.05,
                       optimizer_options={"momentum": 0.9}, batch_size=20, max_iter=500, random_state=0)  # fmt: skip
    reg.fit(X, y)
    assert reg.predict(X).shape == (200,)
    assert reg.score(X, y) > 0.95
    assert reg.optimizer_.momentum == 0.9


def test_import_fastgd_does_not_import_scikit_learn():
    code = "import sys, fastgd; fastgd.Network([2, 1]); sys.exit('sklearn' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
