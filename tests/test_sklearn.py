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
    # (scikit-learn's rule stops after 10 epochs without a better validation accuracy, 17 here,
    # at 0.775 for both libraries: a longer wait lets it learn the blobs)
    clf = MLPClassifier(
        hidden_layer_sizes=(16,),
        max_iter=300,
        learning_rate_init=0.01,
        random_state=0,
        early_stopping=True,
        n_iter_no_change=50,
    )
    clf.fit(X, y)
    assert list(clf.classes_) == ["a", "b", "c"]
    assert clf.n_iter_ == len(clf.loss_curve_) == len(clf.validation_scores_) <= 300
    assert clf.score(X, y) > 0.9
    np.testing.assert_allclose(clf.predict_proba(X).sum(axis=1), 1, rtol=1e-12)
    assert set(clf.predict(X)) <= {"a", "b", "c"}


def test_partial_fit_needs_classes_first_and_trains_one_epoch():
    X, y = blobs()
    clf = MLPClassifier(hidden_layer_sizes=(8,), random_state=0)
    with pytest.raises(ValueError, match="classes must be passed"):
        clf.partial_fit(X, y)
    clf.partial_fit(X, y, classes=["a", "b", "c"])
    clf.partial_fit(X, y)
    # n_iter_ counts the last call's epochs, as scikit-learn's; loss_curve_ and t_ every one.
    assert clf.n_iter_ == 1 and clf.network_.epochs_trained == 2 == len(clf.loss_curve_) and clf.t_ == 2 * len(X)


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
    reg = MLPRegressor(
        hidden_layer_sizes=(32,),
        activation="tanh",
        solver="rmsprop",
        learning_rate_init=0.01,
        optimizer_options={"momentum": 0.5},
        batch_size=20,
        max_iter=500,
        random_state=0,
    )
    reg.fit(X, y)
    assert reg.predict(X).shape == (200,)
    assert reg.score(X, y) > 0.95
    assert reg.optimizer_.momentum == 0.5
    # scikit-learn's solvers take scikit-learn's parameters, not fastgd's options.
    with pytest.raises(ValueError, match="optimizer_options apply to fastgd's own solvers"):
        MLPRegressor(solver="sgd", optimizer_options={"momentum": 0.9}).fit(X, y)


def test_import_fastgd_does_not_import_scikit_learn():
    code = "import sys, fastgd; fastgd.Network([2, 1]); sys.exit('sklearn' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# ---------------------------------------------------------------------------------------------
# A failed fit or partial_fit leaves the estimator exactly as it was.

import warnings  # noqa: E402

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import fastgd  # noqa: E402

PARAMETER_JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 300),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3),
    st.just("no"),
    st.just([2, 0]),
    st.just((3,)),
    st.just(np.zeros(2)),
)
# Every parameter (a new one is fuzzed as soon as the estimators declare it).
PARAMETERS = sorted(MLPRegressor._parameter_constraints)


def fitted_state(estimator, X):
    state = {k: v for k, v in vars(estimator).items() if k.endswith("_") and not k.startswith("_")}
    prediction = estimator.predict(X) if "network_" in state else None
    return (
        set(state),
        {k: (v.flat_parameters.copy() if hasattr(v, "flat_parameters") else v) for k, v in state.items()},
        prediction,
    )


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
    name = data.draw(st.sampled_from([p for p in PARAMETERS if p in estimator.get_params()]), label="parameter")
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
    except (ValueError, TypeError, fastgd.DivergenceError, AttributeError) as error:
        # (AttributeError: partial_fit does not exist for a solver that is not stochastic, as
        # scikit-learn's available_if has it)
        assert not isinstance(error, AttributeError) or "has no attribute 'partial_fit'" in str(error)
        assert_same_fitted_state(before, fitted_state(estimator, X))
    else:
        assert np.isfinite(estimator.predict(X).astype(float)).all() if kind == "regressor" else True


@pytest.mark.parametrize(
    "estimator",
    [
        MLPClassifier(hidden_layer_sizes=(7, 5), activation="tanh", max_iter=3, random_state=0),
        MLPRegressor(hidden_layer_sizes=(6,), max_iter=3, random_state=0),
    ],
)
def test_coefs_and_intercepts_are_laid_out_as_scikit_learns(estimator):
    from sklearn.neural_network import MLPClassifier as SkClassifier
    from sklearn.neural_network import MLPRegressor as SkRegressor

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0) if isinstance(estimator, MLPClassifier) else X @ [1.0, 2.0, 0.0, -1.0]
    with pytest.raises(AttributeError):  # not fitted: NotFittedError is an AttributeError
        _ = estimator.coefs_
    estimator.fit(X, y)
    reference = (SkClassifier if isinstance(estimator, MLPClassifier) else SkRegressor)(
        hidden_layer_sizes=estimator.hidden_layer_sizes, max_iter=1
    ).fit(X, y)
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


# ---------------------------------------------------------------------------------------------
# scikit-learn's own MLP tests (tests/sklearn_suite.py builds them from the installed package),
# and what their six private-attribute tests check, here through fastgd's attributes.

import math  # noqa: E402
import pathlib  # noqa: E402

from sklearn.exceptions import ConvergenceWarning  # noqa: E402


def test_scikit_learns_own_mlp_tests_pass_against_fastgds_estimators(tmp_path):
    sys.path.insert(0, str(pathlib.Path(__file__).parent))
    try:
        import sklearn_suite
    finally:
        sys.path.pop(0)
    result = sklearn_suite.run(tmp_path, timeout=1200)
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-3000:]
    assert "53 passed" in summary and "failed" not in summary, summary


def test_one_step_equals_scikit_learns_worked_example():
    # scikit-learn's test_fit: one SGD step on one row, the expected values worked out by hand
    # in that test (3 decimals), from weights set through coefs_ and intercepts_.
    X, y = np.array([[0.6, 0.8, 0.7]]), np.array([0])
    mlp = MLPClassifier(
        solver="sgd",
        learning_rate_init=0.1,
        alpha=0.1,
        activation="logistic",
        random_state=1,
        max_iter=1,
        hidden_layer_sizes=2,
        momentum=0,
    )
    mlp.partial_fit(X, y, classes=[0, 1])
    mlp.coefs_ = [np.array([[0.1, 0.2], [0.3, 0.1], [0.5, 0]]), np.array([[0.1], [0.2]])]
    mlp.intercepts_ = [np.array([0.1, 0.1]), np.array([1.0])]
    mlp.partial_fit(X, y)
    np.testing.assert_almost_equal(
        mlp.coefs_[0], [[0.098, 0.195756], [0.2956664, 0.096008], [0.4939998, -0.002244]], decimal=3
    )
    np.testing.assert_almost_equal(mlp.coefs_[1], [[0.04706], [0.154089]], decimal=3)
    np.testing.assert_almost_equal(mlp.intercepts_[0], [0.098333, 0.09626], decimal=3)
    np.testing.assert_almost_equal(mlp.intercepts_[1], [0.9235], decimal=3)
    np.testing.assert_almost_equal(mlp.predict_proba(X)[0, 1], 0.739, decimal=3)


def _numerical_gradient(net, X, Y, eps=1e-6):
    flat = net.flat_parameters
    numeric = np.empty(flat.size)
    for i in range(flat.size):
        keep = flat[i]
        flat[i] = keep + eps
        plus = net.loss(X, Y)
        flat[i] = keep - eps
        minus = net.loss(X, Y)
        flat[i] = keep
        numeric[i] = (plus - minus) / (2 * eps)
    return numeric


@pytest.mark.parametrize("activation", ["identity", "logistic", "tanh", "relu"])
@pytest.mark.parametrize("target", ["binary", "multiclass", "multilabel", "squared_error", "poisson"])
def test_loss_gradient_matches_finite_differences(activation, target):
    # scikit-learn's test_gradient (which calls its private _loss_grad_lbfgs): the full-batch
    # gradient L-BFGS is given, against central differences of the loss, alpha included.
    from fastgd.sklearn._lbfgs import FullBatch

    rng = np.random.default_rng(0)
    X = rng.uniform(size=(5, 10))
    Y = {
        "binary": rng.integers(0, 2, 5),
        "multiclass": np.arange(5) % 3,
        "multilabel": rng.integers(0, 2, (5, 3)),
        "squared_error": rng.normal(size=5),
        "poisson": rng.poisson(2.0, 5).astype(float),
    }[target]
    regression = target in ("squared_error", "poisson")
    mlp = (MLPRegressor(loss=target) if regression else MLPClassifier()).set_params(
        activation=activation,
        hidden_layer_sizes=10,
        solver="lbfgs",
        alpha=1e-5,
        learning_rate_init=0.2,
        max_iter=1,
        random_state=1,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp.fit(X, Y)
    net = mlp.network_
    targets = Y if regression else mlp._label_binarizer.transform(Y).astype(float)
    value, gradient = FullBatch(net, X, targets.reshape(5, -1), None)(net.flat_parameters.copy())
    assert value == pytest.approx(net.loss(X, targets.reshape(5, -1)), rel=1e-12)
    np.testing.assert_allclose(gradient, _numerical_gradient(net, X, targets.reshape(5, -1)), rtol=1e-5, atol=1e-9)


def test_invscaling_carries_on_across_warm_starts_and_constant_does_not_change():
    # scikit-learn's test_learning_rate_warmstart, through learning_rate_ (scikit-learn keeps the
    # rate in its private _optimizer): after two warm-started fits of one epoch of 4 rows the
    # invscaling rate is learning_rate_init / (8 + 1)^power_t.
    X, y = [[3, 2], [1, 6], [5, 6], [-2, -4]], [1, 1, 1, 0]
    for learning_rate in ["invscaling", "constant"]:
        mlp = MLPClassifier(
            solver="sgd", hidden_layer_sizes=4, learning_rate=learning_rate, max_iter=1, power_t=0.25, warm_start=True
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            mlp.fit(X, y)
            before = mlp.learning_rate_
            mlp.fit(X, y)
        if learning_rate == "constant":
            assert before == mlp.learning_rate_ == mlp.learning_rate_init
        else:
            assert mlp.learning_rate_ == pytest.approx(mlp.learning_rate_init / pow(8 + 1, mlp.power_t), rel=1e-15)


def test_adaptive_rate_falls_below_its_floor_before_stopping():
    # scikit-learn's test_adaptive_learning_rate.
    X, y = [[3, 2], [1, 6]], [1, 0]
    mlp = MLPClassifier(tol=0.5, max_iter=3000, solver="sgd", learning_rate="adaptive")
    mlp.fit(X, y)
    assert mlp.max_iter > mlp.n_iter_
    assert 1e-6 > mlp.learning_rate_


def test_n_iter_no_change_counts_as_scikit_learns():
    # scikit-learn's test_n_iter_no_change and test_n_iter_no_change_inf, reading the count
    # from the stopping rule (scikit-learn's private _no_improvement_count).
    X, y = _digits_binary()
    for n_iter_no_change in [2, 5, 10, 50, 100]:
        mlp = MLPClassifier(tol=0.01, max_iter=3000, solver="sgd", n_iter_no_change=n_iter_no_change)
        mlp.fit(X, y)
        assert mlp._stopping.waited == n_iter_no_change + 1
        assert mlp.max_iter > mlp.n_iter_
    mlp = MLPClassifier(tol=1e9, max_iter=3000, solver="sgd", n_iter_no_change=np.inf)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp.fit(X, y)
    assert mlp.n_iter_ == 3000
    assert mlp._stopping.waited == mlp.n_iter_ - 1


def _digits_binary():
    from sklearn.datasets import load_digits
    from sklearn.preprocessing import MinMaxScaler

    X, y = load_digits(n_class=2, return_X_y=True)
    return MinMaxScaler().fit_transform(X[:100]), y[:100]


# Settings under which fastgd and scikit-learn run the same algorithm step for step (no shuffling:
# fastgd shuffles with its own generator): the trained weights agree to rounding. Adam differs
# only by where epsilon enters (scikit-learn adds it to √v before the bias correction, PyTorch's
# rule, fastgd's, after), which a tiny epsilon makes immaterial.
SAME_ALGORITHM = [
    (
        "classifier",
        "multiclass",
        dict(solver="sgd", momentum=0.9, nesterovs_momentum=True, activation="relu", alpha=1e-3),
        1e-9,
    ),
    (
        "classifier",
        "binary",
        dict(
            solver="sgd",
            momentum=0.0,
            learning_rate="invscaling",
            learning_rate_init=0.5,
            activation="logistic",
            alpha=1e-2,
        ),
        1e-9,
    ),
    ("classifier", "multilabel", dict(solver="sgd", momentum=0.5, nesterovs_momentum=False, activation="tanh"), 1e-9),
    (
        "regressor",
        "squared_error",
        dict(solver="sgd", momentum=0.9, activation="tanh", alpha=0.1, learning_rate_init=0.01),
        1e-9,
    ),
    ("regressor", "poisson", dict(solver="sgd", momentum=0.5, activation="tanh", learning_rate_init=0.01), 1e-9),
    (
        "regressor",
        "squared_error",
        dict(solver="adam", activation="relu", alpha=1e-3, learning_rate_init=0.01, epsilon=1e-14),
        1e-8,
    ),
    ("classifier", "multiclass", dict(solver="lbfgs", activation="tanh", alpha=1e-3, max_iter=30), 1e-6),
]


@pytest.mark.parametrize("kind, target, settings_, rtol", SAME_ALGORITHM)
@pytest.mark.parametrize("weighted", [False, True])
def test_trained_weights_equal_scikit_learns_for_the_same_algorithm(kind, target, settings_, rtol, weighted):
    from sklearn import neural_network

    rng = np.random.default_rng(3)
    X = rng.normal(size=(61, 5))
    Y = {
        "multiclass": rng.integers(0, 3, 61),
        "binary": rng.integers(0, 2, 61),
        "multilabel": rng.integers(0, 2, (61, 3)),
        "squared_error": X @ rng.normal(size=5),
        "poisson": rng.poisson(np.exp(0.3 * X[:, 0])),
    }[target]
    weight = rng.uniform(0.2, 3.0, 61) if weighted else None
    params = dict(
        hidden_layer_sizes=(7, 4),
        batch_size=16,
        max_iter=settings_.pop("max_iter", 6),
        shuffle=False,
        random_state=0,
        tol=0.0,
        n_iter_no_change=np.inf,
        **settings_,
    )
    if kind == "regressor":
        params["loss"] = target
    ours = (MLPClassifier if kind == "classifier" else MLPRegressor)(**params)
    theirs = (neural_network.MLPClassifier if kind == "classifier" else neural_network.MLPRegressor)(**params)
    settings_.update(max_iter=params["max_iter"]) if params["solver"] == "lbfgs" else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours.fit(X, Y, sample_weight=weight)
        theirs.fit(X, Y, sample_weight=weight)
    for mine, reference in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(mine, reference, rtol=rtol, atol=rtol)
    if params["solver"] != "lbfgs" and not weighted:
        # Both report the epochs' losses alike (penalty included). With sample weights fastgd's
        # is the weighted mean over the epoch's rows, scikit-learn's the row-count average of
        # its batches' weighted means: they differ (docs/user_guide/sklearn.rst).
        np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=max(rtol, 1e-12))
    assert ours.n_iter_ == theirs.n_iter_


def test_float32_input_trains_in_float32_and_float64_stays_float64():
    X, y = _digits_binary()
    for dtype in (np.float32, np.float64):
        mlp = MLPRegressor(hidden_layer_sizes=(5,), max_iter=5, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            mlp.fit(X.astype(dtype), y)
        assert mlp.network_.dtype == dtype and mlp.predict(X.astype(dtype)).dtype == dtype
        assert all(c.dtype == dtype for c in mlp.coefs_)
    forced = MLPRegressor(hidden_layer_sizes=(5,), max_iter=2, dtype="float32").fit(X, y)
    assert forced.network_.dtype == np.float32


def test_sparse_input_trains_as_the_same_dense_input():
    import scipy.sparse

    X, y = _digits_binary()
    dense = MLPClassifier(hidden_layer_sizes=(8,), solver="sgd", max_iter=20, random_state=0, early_stopping=True).fit(
        X, y
    )
    for matrix in (scipy.sparse.csr_matrix, scipy.sparse.csc_matrix):
        sparse = MLPClassifier(hidden_layer_sizes=(8,), solver="sgd", max_iter=20, random_state=0, early_stopping=True)
        sparse.fit(matrix(X), y)
        # Streamed a chunk at a time, the same batches in the same order: the same model.
        np.testing.assert_allclose(
            sparse.network_.flat_parameters, dense.network_.flat_parameters, rtol=1e-12, atol=1e-14
        )
        assert sparse.validation_scores_ == dense.validation_scores_
        np.testing.assert_array_equal(sparse.predict(matrix(X)), dense.predict(X))


def test_diverging_fit_raises_scikit_learns_error_and_changes_nothing():
    rng = np.random.RandomState(0)
    X = np.finfo(np.float64).max * rng.uniform(size=(10, 2))
    y = rng.standard_normal(size=10)
    mlp = MLPRegressor()
    with pytest.raises(ValueError, match="Solver produced non-finite parameter weights"):
        mlp.fit(X, y)
    assert not hasattr(mlp, "network_")
    # With early stopping the diverged epoch's score is NaN and the best weights are kept.
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    mlp = MLPRegressor(
        hidden_layer_sizes=100,
        activation="identity",
        solver="sgd",
        learning_rate_init=1,
        max_iter=20,
        early_stopping=True,
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp.fit(X, y)
    assert math.isnan(mlp.validation_scores_[-1]) and np.isfinite(mlp.network_.flat_parameters).all()


def test_verbose_prints_scikit_learns_lines(capsys):
    X, y = _digits_binary()
    MLPClassifier(
        solver="sgd",
        max_iter=3,
        hidden_layer_sizes=2,
        verbose=True,
        early_stopping=True,
        random_state=0,
        n_iter_no_change=1,
        tol=10,
    ).fit(X, y)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Iteration 1, loss = ") and out[1].startswith("Validation score: ")
    assert out[-1] == "Validation score did not improve more than tol=10.000000 for 1 consecutive epochs. Stopping."


def test_every_private_scikit_learn_name_is_where_the_compatibility_module_looks():
    # fastgd.sklearn._compat holds every private scikit-learn name the estimators use; a release
    # that moves one fails here, naming it.
    from numbers import Integral

    from fastgd.sklearn import _compat

    interval = _compat.Interval(Integral, 1, None, closed="left")
    assert interval.is_satisfied_by(3) and not interval.is_satisfied_by(0)
    assert _compat.StrOptions({"a"}).is_satisfied_by("a") and _compat.Options(float, {np.inf}).is_satisfied_by(np.inf)
    assert _compat.check_sample_weight(None, np.zeros((3, 2))) is None
    np.testing.assert_array_equal(_compat.check_sample_weight([1, 2, 3], np.zeros((3, 2))), [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="sample_weight"):
        _compat.check_sample_weight([1.0, -2.0, 3.0], np.zeros((3, 2)))
    with pytest.raises(ValueError, match="alpha"):
        _compat.validate_parameters(MLPClassifier(alpha=-1.0))
