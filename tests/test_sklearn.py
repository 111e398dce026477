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


# ---------------------------------------------------------------------------------------------
# A failed fit or partial_fit leaves the estimator exactly as it was.

import warnings  # noqa: E402

import fastgd  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

PARAMETER_JUNK = st.one_of(st.none(), st.booleans(), st.integers(-3, 300), st.floats(allow_nan=True, allow_infinity=True),
                           st.text(max_size=3), st.just("no"), st.just([2, 0]), st.just((3,)), st.just(np.zeros(2)))  # fmt: skip
PARAMETERS = ["hidden_layer_sizes", "activation", "solver", "alpha", "batch_size", "learning_rate_init", "max_iter", "shuffle",
              "tol", "early_stopping", "validation_fraction", "n_iter_no_change", "optimizer_options", "dtype", "backend",
              "n_threads", "verbose"]  # fmt: skip


def fitted_state(estimator, X):
    state = {k: v for k, v in vars(estimator).items() if k.endswith("_") and not k.startswith("_")}
    prediction = estimator.predict(X) if "network_" in state else None
    return set(state), {k: (v.flat_parameters.copy() if hasattr(v, "flat_parameters") else v) for k, v in state.items()}, prediction


def assert_same_fitted_state(before, after):
    assert before[0] == after[0]
    for key in before[0]:
        a, b = before[1][key], after[1][key]
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b)
        elif key not in ("optimizer_",):
            assert a == b or (a != a and b != b), key
    if before[2] is not None:
        np.testing.assert_array_equal(before[2], after[2])


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_failed_fit_leaves_the_estimator_exactly_as_it_was(data):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 4))
    y_class = (X[:, 0] > 0).astype(int)
    y_reg = X[:, :2] @ np.array([[1.0], [-1.0]])
    kind = data.draw(st.sampled_from(["classifier", "regressor"]), label="estimator")
    fitted = data.draw(st.booleans(), label="fitted first")
    cls, y = (MLPClassifier, y_class) if kind == "classifier" else (MLPRegressor, y_reg.ravel())
    estimator = cls(hidden_layer_sizes=(5,), max_iter=3, random_state=0)
    if fitted:
        estimator.fit(X, y)
    name = data.draw(st.sampled_from(PARAMETERS), label="parameter")
    value = data.draw(PARAMETER_JUNK, label="value")
    method = data.draw(st.sampled_from(["fit", "partial_fit"]), label="method")
    bad_targets = data.draw(st.sampled_from([None, "strings", "other classes"]), label="targets")
    targets = y
    if bad_targets == "strings":
        targets = np.array(["a", "b"] * 15)
    elif bad_targets == "other classes" and kind == "classifier":
        targets = y + 5
    before = fitted_state(estimator, X)
    estimator.set_params(**{name: value})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if method == "partial_fit" and kind == "classifier":
                estimator.partial_fit(X, targets, classes=np.unique(y) if not fitted else None)
            else:
                getattr(estimator, method)(X, targets)
    except (ValueError, TypeError, fastgd.DivergenceError):
        assert_same_fitted_state(before, fitted_state(estimator, X))
    else:
        assert np.isfinite(estimator.predict(X).astype(float)).all() if kind == "regressor" else True


@pytest.mark.parametrize("estimator", [MLPClassifier(hidden_layer_sizes=(7, 5), activation="tanh", max_iter=3, random_state=0),
                                       MLPRegressor(hidden_layer_sizes=(6,), max_iter=3, random_state=0)])  # fmt: skip
def test_coefs_and_intercepts_are_laid_out_as_scikit_learns(estimator):
    from sklearn.neural_network import MLPClassifier as SkClassifier
    from sklearn.neural_network import MLPRegressor as SkRegressor

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0) if isinstance(estimator, MLPClassifier) else X @ [1.0, 2.0, 0.0, -1.0]
    with pytest.raises(AttributeError):  # not fitted: NotFittedError is an AttributeError
        estimator.coefs_
    estimator.fit(X, y)
    reference = (SkClassifier if isinstance(estimator, MLPClassifier) else SkRegressor)(
        hidden_layer_sizes=estimator.hidden_layer_sizes, max_iter=1).fit(X, y)  # fmt: skip
    assert [c.shape for c in estimator.coefs_] == [c.shape for c in reference.coefs_]
    assert [b.shape for b in estimator.intercepts_] == [b.shape for b in reference.intercepts_]
    assert (estimator.n_layers_, estimator.n_outputs_) == (reference.n_layers_, reference.n_outputs_)
    # The forward pass written from coefs_ and intercepts_ gives predict's outputs.
    act = {"tanh": np.tanh, "relu": lambda z: np.maximum(z, 0)}[estimator.activation]
    a = X
    for k, (W, b) in enumerate(zip(estimator.coefs_, estimator.intercepts_)):
        z = a @ W + b
        a = act(z) if k < len(estimator.coefs_) - 1 else z
    if isinstance(estimator, MLPClassifier):
        e = np.exp(a - a.max(axis=1, keepdims=True))
        np.testing.assert_allclose(e / e.sum(axis=1, keepdims=True), estimator.predict_proba(X), rtol=1e-10)
    else:
        np.testing.assert_allclose(a.ravel(), estimator.predict(X), rtol=1e-10)
    # They are the model's own: writing into them changes the predictions.
    before = estimator.predict_proba(X) if isinstance(estimator, MLPClassifier) else estimator.predict(X)
    estimator.intercepts_[-1][0] += 1.0
    after = estimator.predict_proba(X) if isinstance(estimator, MLPClassifier) else estimator.predict(X)
    assert not np.allclose(before, after)
