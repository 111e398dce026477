"""What fastgd's scikit-learn estimators add to scikit-learn's (issue 31): ``class_weight``,
``validation_loss_curve_``, ``callbacks``; and the messages for a bad ``validation_fraction`` and
a ``y`` of another shape in ``partial_fit``."""

import math
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")
from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.preprocessing import LabelBinarizer  # noqa: E402
from sklearn.utils.class_weight import compute_class_weight, compute_sample_weight  # noqa: E402

from fastgd.callbacks import Callback  # noqa: E402
from fastgd.sklearn import MLPClassifier, MLPRegressor  # noqa: E402


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def _data(target, n=90, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    y = {
        "binary": (X[:, 0] + 0.3 * rng.normal(size=n) > 0.4).astype(int),
        "multiclass": np.digitize(X[:, 0] + X[:, 1], [-0.7, 0.9]),
        "labels": np.array(["cat", "dog", "emu"])[np.digitize(X[:, 0], [-0.5, 0.8])],
        "multilabel": np.c_[X[:, 0] > 0.6, X[:, 1] > -0.2, X[:, 2] + X[:, 3] > 0.5].astype(int),
        "regression": X @ np.array([1.0, -2.0, 0.5, 0.0]),
    }[target]
    return X, y


def _fitted_state(estimator):
    """Every public fitted attribute, the parameters copied."""
    state = {k: v for k, v in vars(estimator).items() if k.endswith("_") and not k.startswith("_")}
    return {
        k: v.flat_parameters.copy() if hasattr(v, "flat_parameters") else v
        for k, v in state.items()
        if k != "optimizer_"
    }


def _assert_unchanged(before, estimator):
    after = _fitted_state(estimator)
    assert set(before) == set(after)
    for key, value in before.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(value, after[key], err_msg=key)
        else:
            assert value == after[key] or (value != value and after[key] != after[key]), key


# ---------------------------------------------------------------------------------------------
# class_weight


def _equivalent_sample_weight(y, class_weight, sample_weight):
    """Each row's class weight times its sample weight, computed with scikit-learn's own
    functions (compute_class_weight for one output; compute_sample_weight, the trees' product
    over the outputs, for several), not fastgd's."""
    if y.ndim == 2:
        if class_weight == "balanced" and sample_weight is not None:
            # Each column balanced on its own, its counts weighted (LogisticRegression's rule).
            columns = []
            for column in y.T:
                present = np.unique(column)
                weights = compute_class_weight("balanced", classes=present, y=column, sample_weight=sample_weight)
                columns.append(weights[np.searchsorted(present, column)])
            row_weight = np.prod(columns, axis=0, dtype=np.float64)
        else:
            row_weight = compute_sample_weight(class_weight, y)
    else:
        classes = np.unique(y)
        if class_weight == "balanced":
            weights = compute_class_weight("balanced", classes=classes, y=y, sample_weight=sample_weight)
        else:
            weights = np.array([float(class_weight.get(c, 1.0)) for c in classes.tolist()])
        row_weight = np.asarray(weights, dtype=np.float64)[np.searchsorted(classes, y)]
    return row_weight if sample_weight is None else sample_weight * row_weight


CLASS_WEIGHTS = {
    "binary": {0: 3.0, 1: 0.25},
    "multiclass": {0: 2.5, 2: 0.5},  # class 1 left out: weight 1
    "labels": {"dog": 4.0, "emu": 0.125},
    "multilabel": [{0: 1.0, 1: 5.0}, {1: 0.5}, {0: 2.0, 1: 3.0}],
}


@pytest.mark.parametrize("solver", ["lbfgs", "sgd", "adam"])
@pytest.mark.parametrize("target", ["binary", "multiclass", "labels", "multilabel"])
@pytest.mark.parametrize("kind", ["dict", "balanced"])
@pytest.mark.parametrize("weighted", [False, True])
def test_fit_with_class_weight_is_bitwise_the_fit_with_the_equivalent_sample_weight(solver, target, kind, weighted):
    X, y = _data(target)
    class_weight = CLASS_WEIGHTS[target] if kind == "dict" else "balanced"
    sample_weight = np.random.default_rng(1).uniform(0.2, 3.0, len(X)) if weighted else None
    params = dict(
        hidden_layer_sizes=(6,),
        solver=solver,
        max_iter=8,
        batch_size=16,
        random_state=0,
        early_stopping=solver == "adam" and target != "multilabel",
    )
    ours = MLPClassifier(class_weight=class_weight, **params).fit(X, y, sample_weight=sample_weight)
    equivalent = MLPClassifier(**params).fit(
        X, y, sample_weight=_equivalent_sample_weight(y, class_weight, sample_weight)
    )
    np.testing.assert_array_equal(ours.network_.flat_parameters, equivalent.network_.flat_parameters)
    assert ours.n_iter_ == equivalent.n_iter_
    if solver != "lbfgs":
        assert ours.loss_curve_ == equivalent.loss_curve_


@pytest.mark.parametrize("solver", ["sgd", "adam", "rmsprop"])
@pytest.mark.parametrize("target", ["multiclass", "multilabel"])
def test_partial_fit_with_class_weight_is_bitwise_the_partial_fit_with_the_equivalent_sample_weight(solver, target):
    X, y = _data(target)
    class_weight = CLASS_WEIGHTS[target]
    classes = np.arange(3)  # (the classes, or for a multilabel y its columns: required on the first call)
    ours = MLPClassifier(
        hidden_layer_sizes=(5,), solver=solver, random_state=0, batch_size=20, class_weight=class_weight
    )
    theirs = MLPClassifier(hidden_layer_sizes=(5,), solver=solver, random_state=0, batch_size=20)
    for start in (0, 30, 60):  # three calls, on different rows
        rows = slice(start, start + 30)
        ours.partial_fit(X[rows], y[rows], classes=classes)
        theirs.partial_fit(
            X[rows], y[rows], classes=classes, sample_weight=_equivalent_sample_weight(y[rows], class_weight, None)
        )
        np.testing.assert_array_equal(ours.network_.flat_parameters, theirs.network_.flat_parameters)
    assert ours.loss_curve_ == theirs.loss_curve_


def test_balanced_is_n_over_classes_times_count_weighted_by_the_sample_weights():
    # "balanced" from its definition, n / (n_classes · count), counts and n weighted by
    # sample_weight (LogisticRegression's rule), computed here by hand: the fit equals the fit
    # with these sample weights (to rounding: compute_class_weight's order of operations may
    # differ from this one in the last bit of a weight).
    X, y = _data("multiclass")
    sample_weight = np.random.default_rng(2).uniform(0.5, 2.0, len(X))
    counts = np.array([sample_weight[y == k].sum() for k in range(3)])
    by_hand = sample_weight * (sample_weight.sum() / (3 * counts))[y]
    params = dict(hidden_layer_sizes=(6,), solver="lbfgs", max_iter=20, random_state=0)
    ours = MLPClassifier(class_weight="balanced", **params).fit(X, y, sample_weight=sample_weight)
    reference = MLPClassifier(**params).fit(X, y, sample_weight=by_hand)
    np.testing.assert_allclose(ours.network_.flat_parameters, reference.network_.flat_parameters, rtol=1e-9, atol=1e-12)
    # A row of weight 2 counts as two rows: balanced on duplicated rows is balanced on weights 2.
    doubled = MLPClassifier(class_weight="balanced", **params).fit(np.r_[X, X[:10]], np.r_[y, y[:10]])
    weights = np.r_[np.full(10, 2.0), np.ones(len(X) - 10)]
    twice = MLPClassifier(class_weight="balanced", **params).fit(
        np.r_[X[:10], X[10:]], np.r_[y[:10], y[10:]], sample_weight=weights
    )
    np.testing.assert_allclose(twice.predict_proba(X), doubled.predict_proba(X), rtol=1e-6)


def test_class_weight_moves_the_decision_towards_the_heavy_class():
    # Overlapping classes (a third of the rows positive): weighting the positives 20 times
    # moves the boundary into the negatives, most rows are then predicted positive.
    rng = np.random.default_rng(5)
    X = rng.normal(size=(300, 2))
    y = (X[:, 0] + rng.normal(size=300) > 0.6).astype(int)
    params = dict(hidden_layer_sizes=(8,), solver="lbfgs", max_iter=200, random_state=0)
    plain = MLPClassifier(**params).fit(X, y).predict(X)
    heavy = MLPClassifier(class_weight={1: 20.0}, **params).fit(X, y).predict(X)
    assert plain.mean() < 0.4 < 0.6 < heavy.mean()


BAD_CLASS_WEIGHTS = [
    (
        "multiclass",
        {7: 1.0},
        ValueError,
        r"class_weight has weights for \[7\], which are not among the classes \[0, 1, 2\]",
    ),
    ("labels", {"cow": 2.0}, ValueError, r"class_weight has weights for \['cow'\]"),
    ("multiclass", {0: -1.0}, ValueError, r"class_weight\[0\] must be a finite number >= 0, got -1.0"),
    ("multiclass", {1: math.inf}, ValueError, r"class_weight\[1\] must be a finite number >= 0"),
    ("multiclass", {1: math.nan}, ValueError, r"class_weight\[1\] must be a finite number >= 0"),
    ("multiclass", {1: 10**400}, ValueError, r"class_weight\[1\] must be a finite number >= 0"),
    ("multiclass", {1: "2"}, TypeError, r"class_weight\[1\] must be a real number, got str"),
    ("multiclass", {1: True}, TypeError, r"class_weight\[1\] must be a real number, got bool"),
    ("multiclass", {0: 0.0, 1: 0.0, 2: 0.0}, ValueError, r"class_weight .* gives every row a weight of 0"),
    ("multiclass", "heavy", ValueError, r"'class_weight' parameter of MLPClassifier must be"),
    ("multiclass", 3, TypeError, r"'class_weight' parameter of MLPClassifier must be"),
    (
        "multiclass",
        [{0: 1.0}],
        ValueError,
        r"class_weight must be a dict \{class: weight\}, 'balanced' or None for 1-D class labels",
    ),
    ("multilabel", {0: 1.0}, ValueError, r"for a multilabel y, class_weight must be 'balanced' or a list of 3 dicts"),
    (
        "multilabel",
        [{0: 1.0}, {1: 2.0}],
        ValueError,
        r"class_weight must hold one dict per column of y \(3\), got a list of 2",
    ),
    ("multilabel", [{0: 1.0}, {1: 2.0}, 5], TypeError, r"class_weight\[2\] must be a dict"),
    (
        "multilabel",
        [{0: 1.0}, {2: 2.0}, {}],
        ValueError,
        r"class_weight\[1\] has weights for \[2\], which are not among the classes \[0, 1\]",
    ),
    ("multilabel", [{0: 1.0}, {1: -2.0}, {}], ValueError, r"class_weight\[1\]\[1\] must be a finite number >= 0"),
]


@pytest.mark.parametrize("target, class_weight, error, words", BAD_CLASS_WEIGHTS)
@pytest.mark.parametrize("method", ["fit", "partial_fit"])
def test_a_bad_class_weight_is_refused_naming_it_and_changes_nothing(target, class_weight, error, words, method):
    X, y = _data(target)
    clf = MLPClassifier(hidden_layer_sizes=(5,), max_iter=3, random_state=0).fit(X, y)
    before = _fitted_state(clf)
    clf.set_params(class_weight=class_weight)
    with pytest.raises(error, match=words):
        clf.fit(X, y) if method == "fit" else clf.partial_fit(X, y)
    _assert_unchanged(before, clf)


def test_partial_fit_refuses_balanced_as_sgdclassifier_does():
    X, y = _data("multiclass")
    clf = MLPClassifier(hidden_layer_sizes=(5,), class_weight="balanced")
    with pytest.raises(
        ValueError, match=r"class_weight='balanced' is not supported by partial_fit.*compute_class_weight"
    ):
        clf.partial_fit(X, y, classes=[0, 1, 2])
    assert not hasattr(clf, "network_")


def test_class_weight_for_every_class_of_partial_fit_even_absent_from_a_call():
    # partial_fit's classes are the classes: a weight for one absent from this call's rows is fine.
    X, y = _data("multiclass")
    rows = y != 2
    clf = MLPClassifier(hidden_layer_sizes=(5,), random_state=0, class_weight={2: 5.0})
    clf.partial_fit(X[rows], y[rows], classes=[0, 1, 2])
    reference = MLPClassifier(hidden_layer_sizes=(5,), random_state=0).partial_fit(
        X[rows], y[rows], classes=[0, 1, 2], sample_weight=np.ones(rows.sum())
    )
    np.testing.assert_array_equal(clf.network_.flat_parameters, reference.network_.flat_parameters)


# ---------------------------------------------------------------------------------------------
# validation_loss_curve_


def _forward(X, coefs, intercepts, hidden):
    a = X
    for k, (W, b) in enumerate(zip(coefs, intercepts)):
        z = a @ W + b
        a = hidden(z) if k < len(coefs) - 1 else z
    return a


class _Parameters(Callback):
    """Records each epoch's parameters, as the network's layer views give them."""

    def __init__(self):
        self.epochs = []

    def on_epoch_end(self, epoch, history, network):
        self.epochs.append(([w.copy() for w in network.weights], [b.copy() for b in network.biases]))


VALIDATION_CASES = [
    ("multiclass", MLPClassifier, dict(activation="tanh")),
    ("binary", MLPClassifier, dict(activation="relu")),
    ("multilabel", MLPClassifier, dict(activation="logistic")),
    ("regression", MLPRegressor, dict(activation="tanh")),
    ("poisson", MLPRegressor, dict(activation="tanh", loss="poisson")),
]


@pytest.mark.parametrize("target, cls, settings", VALIDATION_CASES)
def test_validation_loss_curve_is_the_loss_on_the_held_out_rows(target, cls, settings):
    X, y = _data("regression" if target == "poisson" else target, n=120)
    if target == "poisson":
        y = np.random.default_rng(3).poisson(np.exp(0.4 * X[:, 0]))
    params = dict(
        hidden_layer_sizes=(7,),
        solver="sgd",
        learning_rate_init=0.05,
        alpha=0.01,
        max_iter=12,
        n_iter_no_change=100,
        early_stopping=True,
        validation_fraction=0.25,
        random_state=4,
        **settings,
    )
    recorder = _Parameters()
    model = cls(callbacks=[recorder], **params).fit(X, y)
    # The held-out rows, drawn here as the estimator (and scikit-learn's) draws them: the initial
    # weights from random_state first (per layer, weights then biases), then train_test_split,
    # stratified on the binarized labels when they are one column (scikit-learn stratifies when
    # its network has one output: binary targets only).
    rng = np.random.RandomState(4)
    for fan_in, fan_out in [(4, 7), (7, model.n_outputs_)]:
        rng.uniform(-1, 1, (fan_in, fan_out)), rng.uniform(-1, 1, fan_out)
    Y = LabelBinarizer().fit_transform(y).astype(bool) if cls is MLPClassifier else y
    stratify = Y if target == "binary" else None
    _, X_val, _, Y_val = train_test_split(X, Y, random_state=rng, test_size=0.25, stratify=stratify)
    hidden = {"tanh": np.tanh, "relu": lambda z: np.maximum(z, 0), "logistic": lambda z: 1 / (1 + np.exp(-z))}[
        settings["activation"]
    ]
    Y_val = np.asarray(Y_val, dtype=float).reshape(len(X_val), -1)
    assert (
        model.n_iter_
        == len(recorder.epochs)
        == len(model.validation_loss_curve_)
        == len(model.validation_scores_)
        == 12
    )
    for epoch, (coefs, intercepts) in enumerate(recorder.epochs):
        z = _forward(X_val, coefs, intercepts, hidden)
        if target == "multiclass":
            log_p = z - z.max(axis=1, keepdims=True)
            log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
            loss, score = -(Y_val * log_p).sum(axis=1).mean(), np.mean(z.argmax(axis=1) == Y_val.argmax(axis=1))
        elif target in ("binary", "multilabel"):
            p = 1 / (1 + np.exp(-z))
            loss = -(Y_val * np.log(p) + (1 - Y_val) * np.log(1 - p)).sum(axis=1).mean()
            score = np.mean(((p > 0.5) == (Y_val > 0.5)).all(axis=1))
        elif target == "regression":
            loss = 0.5 * ((z - Y_val) ** 2).sum(axis=1).mean()
            score = 1 - ((z - Y_val) ** 2).sum() / ((Y_val - Y_val.mean()) ** 2).sum()
        else:  # half the Poisson deviance of exp outputs (y log y - y: 0 where y = 0)
            with np.errstate(divide="ignore", invalid="ignore"):
                constant = np.where(Y_val > 0, Y_val * np.log(Y_val) - Y_val, 0.0)
            loss = (np.exp(z) - Y_val * z + constant).sum(axis=1).mean()
            score = None
        # (float64 sums in another order: agreement to rounding)
        assert model.validation_loss_curve_[epoch] == pytest.approx(loss, rel=1e-12), epoch
        if score is not None:  # the split is the estimator's: its scores are these rows'
            assert model.validation_scores_[epoch] == pytest.approx(score, rel=1e-12), epoch
    # alpha's penalty is left out of it (and in loss_curve_, as scikit-learn's).
    penalty = 0.5 * 0.01 * sum((W**2).sum() for W in recorder.epochs[-1][0]) / len(X_val)
    assert abs(model.validation_loss_curve_[-1] - loss) < 1e-3 * penalty


def test_validation_loss_curve_is_none_without_early_stopping_and_carries_on_across_warm_starts():
    X, y = _data("multiclass")
    assert MLPClassifier(hidden_layer_sizes=(5,), max_iter=3).fit(X, y).validation_loss_curve_ is None
    lbfgs = MLPClassifier(hidden_layer_sizes=(5,), solver="lbfgs", max_iter=3)
    assert not hasattr(lbfgs.fit(X, y), "validation_loss_curve_")  # (as loss_curve_)
    clf = MLPClassifier(
        hidden_layer_sizes=(5,), max_iter=4, n_iter_no_change=100, early_stopping=True, warm_start=True, random_state=0
    ).fit(X, y)
    first = list(clf.validation_loss_curve_)
    clf.fit(X, y)
    assert (
        len(clf.validation_loss_curve_) == len(clf.validation_scores_) == 8 and clf.validation_loss_curve_[:4] == first
    )
    assert all(np.isfinite(clf.validation_loss_curve_))


# ---------------------------------------------------------------------------------------------
# callbacks


@pytest.mark.parametrize("solver", ["sgd", "adam", "adamw"])
@pytest.mark.parametrize("early_stopping", [False, True])
def test_a_callback_sees_every_epoch_of_a_stochastic_fit(solver, early_stopping):
    X, y = _data("multiclass")
    seen = []

    def record(epoch, history, network):
        seen.append((epoch, history.loss[-1], history.val_loss[-1] if early_stopping else None, network.epochs_trained))

    clf = MLPClassifier(
        hidden_layer_sizes=(5,),
        solver=solver,
        max_iter=9,
        n_iter_no_change=100,
        early_stopping=early_stopping,
        random_state=0,
        callbacks=record,
    ).fit(X, y)
    assert [epoch for epoch, *_ in seen] == list(range(1, 10)) == [trained for *_, trained in seen]
    assert [loss for _, loss, _, _ in seen] == clf.loss_curve_
    if early_stopping:
        assert [val for _, _, val, _ in seen] == clf.validation_loss_curve_
    # partial_fit: one epoch a call, each seen.
    calls = []
    clf = MLPClassifier(
        hidden_layer_sizes=(5,),
        solver=solver,
        random_state=0,
        callbacks=[lambda e, h, n: calls.append((e, h.loss[-1]))],
    )
    for _ in range(3):
        clf.partial_fit(X, y, classes=[0, 1, 2])
    assert [epoch for epoch, _ in calls] == [1, 1, 1] and [loss for _, loss in calls] == clf.loss_curve_


class _Log(Callback):
    def __init__(self, stop_after=None):
        self.stop_after, self.events = stop_after, []

    def on_fit_begin(self, fit):
        self.events.append(("begin", fit.epochs, fit.rows))

    def on_epoch_end(self, epoch, history, network):
        self.events.append(("epoch", epoch))
        return False if epoch == self.stop_after else None

    def on_fit_end(self, fit, outcome):
        self.events.append(("end", outcome))


def test_callback_objects_get_every_hook_and_can_stop_the_fit():
    X, y = _data("regression")
    log = _Log(stop_after=4)
    reg = MLPRegressor(hidden_layer_sizes=(5,), max_iter=50, random_state=0, callbacks=[log], verbose=False).fit(X, y)
    assert log.events == [("begin", 50, 90)] + [("epoch", e) for e in range(1, 5)] + [("end", "stopped")]
    assert reg.n_iter_ == 4


def test_verbose_lines_and_callbacks_together(capsys):
    X, y = _data("multiclass")
    seen = []
    MLPClassifier(
        hidden_layer_sizes=(5,), max_iter=2, verbose=True, random_state=0, callbacks=lambda e, h, n: seen.append(e)
    ).fit(X, y)
    assert capsys.readouterr().out.startswith("Iteration 1, loss = ") and seen == [1, 2]


def test_callbacks_are_a_parameter_scikit_learn_clones_gets_and_sets():
    log = _Log()
    clf = MLPClassifier(callbacks=[log], class_weight={0: 2.0})
    assert clf.get_params()["callbacks"] == [log] and clf.get_params()["class_weight"] == {0: 2.0}
    copy = clone(clf)
    assert isinstance(copy.callbacks, list) and len(copy.callbacks) == 1 and isinstance(copy.callbacks[0], _Log)
    assert copy.class_weight == {0: 2.0}
    assert copy.set_params(callbacks=None, class_weight="balanced").get_params()["callbacks"] is None
    assert MLPRegressor(callbacks=print).get_params()["callbacks"] is print


def test_a_tensorboard_callback_works_with_the_drop_in(tmp_path):
    tensorboard = pytest.importorskip("fastgd.callbacks").__dict__.get("TensorBoard")
    if tensorboard is None:
        pytest.skip("fastgd.callbacks.TensorBoard is not there")
    pytest.importorskip("tensorboardX")
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    X, y = _data("multiclass")
    clf = MLPClassifier(
        hidden_layer_sizes=(5,),
        max_iter=6,
        n_iter_no_change=100,
        early_stopping=True,
        random_state=0,
        callbacks=[tensorboard(log_dir=str(tmp_path / "run"))],
    ).fit(X, y)
    events = event_accumulator.EventAccumulator(str(tmp_path / "run"))
    events.Reload()
    assert [event.value for event in events.Scalars("loss/train")] == pytest.approx(clf.loss_curve_, rel=1e-6)
    assert [event.value for event in events.Scalars("loss/validation")] == pytest.approx(
        clf.validation_loss_curve_, rel=1e-6
    )


@pytest.mark.parametrize(
    "callbacks, error, words",
    [
        ([1], TypeError, "callbacks must be callables or Callback objects, got int"),
        ((print, "x"), TypeError, "callbacks must be callables or Callback objects, got str"),
        ("x", TypeError, "'callbacks' parameter of MLPClassifier must be"),
    ],
)
def test_bad_callbacks_are_refused_naming_them_and_change_nothing(callbacks, error, words):
    X, y = _data("multiclass")
    clf = MLPClassifier(hidden_layer_sizes=(5,), max_iter=2, random_state=0).fit(X, y)
    before = _fitted_state(clf)
    with pytest.raises(error, match=words):
        clf.set_params(callbacks=callbacks).fit(X, y)
    _assert_unchanged(before, clf)


def test_lbfgs_refuses_callbacks_it_could_not_run():
    X, y = _data("multiclass")
    with pytest.raises(
        ValueError, match="callbacks run after each epoch of a stochastic solver.*solver='lbfgs' has no epochs"
    ):
        MLPClassifier(solver="lbfgs", callbacks=print).fit(X, y)


# ---------------------------------------------------------------------------------------------
# The messages: validation_fraction, and y of another shape.


@pytest.mark.parametrize("cls, target", [(MLPClassifier, "multiclass"), (MLPRegressor, "regression")])
def test_validation_fraction_zero_with_early_stopping_is_named(cls, target):
    X, y = _data(target)
    with pytest.raises(
        ValueError, match=r"^validation_fraction must be > 0 with early_stopping=True.*got 0\.0"
    ) as caught:
        cls(early_stopping=True, validation_fraction=0.0).fit(X, y)
    assert "test_size" not in str(caught.value)
    with pytest.raises(ValueError, match=r"^validation_fraction=0\.9 holds out all 3 rows"):
        cls(early_stopping=True, validation_fraction=0.9).fit(X[:3], y[:3])


def test_a_split_train_test_split_cannot_make_says_validation_fraction():
    # Stratified on 2 classes, 5 % of 20 rows (1) cannot hold a row of each class.
    X, y = _data("binary", n=20)
    with pytest.raises(
        ValueError, match=r"^early_stopping's validation split \(validation_fraction=0\.05 of 20 rows\)"
    ):
        MLPClassifier(early_stopping=True, validation_fraction=0.05).fit(X, y)


Y_SHAPES = [
    # (estimator, first y, then y, the message's words)
    (
        "classifier",
        "1-D",
        "2 columns",
        r"^y has 2 columns \(a multilabel indicator matrix\), but this estimator was fitted on 1-D class labels",
    ),
    (
        "classifier",
        "2 columns",
        "1-D",
        r"^y is 1-D \(class labels\), but this estimator was fitted on a multilabel indicator y of 2 columns",
    ),
    (
        "classifier",
        "2 columns",
        "3 columns",
        r"^y has 3 columns, but this estimator was fitted on a multilabel indicator y of 2 columns",
    ),
    ("regressor", "1-D", "2 columns", r"^y has 2 columns, but this estimator was fitted on a 1-D y \(one target\)"),
    ("regressor", "2 columns", "1-D", r"^y is 1-D \(one target\), but this estimator was fitted on y with 2 columns"),
    ("regressor", "2 columns", "3 columns", r"^y has 3 columns, but this estimator was fitted on y with 2 columns"),
]


@pytest.mark.parametrize("kind, first, then, words", Y_SHAPES)
@pytest.mark.parametrize("call", ["partial_fit", "warm_start"])
def test_y_of_another_shape_is_said_of_y_and_its_columns(kind, first, then, words, call):
    X, labels = _data("multilabel")
    shapes = {"1-D": labels[:, 0], "2 columns": labels[:, :2], "3 columns": labels}
    cls = MLPClassifier if kind == "classifier" else MLPRegressor
    targets = {k: (v if kind == "classifier" else v.astype(float)) for k, v in shapes.items()}
    model = cls(hidden_layer_sizes=(4,), max_iter=2, random_state=0, warm_start=call == "warm_start").fit(
        X, targets[first]
    )
    before = _fitted_state(model)
    with pytest.raises(ValueError, match=words) as caught:
        model.partial_fit(X, targets[then]) if call == "partial_fit" else model.fit(X, targets[then])
    assert ("partial_fit needs y" if call == "partial_fit" else "fit with warm_start=True needs y") in str(caught.value)
    assert "layers" not in str(caught.value)
    _assert_unchanged(before, model)
