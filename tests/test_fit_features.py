"""fit's per-epoch features: validation, early stopping, callbacks, progress bar."""

import numpy as np
import pytest
from _helpers import regression_data

import fastgd


def data(n=40, seed=0):
    return regression_data(n=n, n_in=3, n_out=2, seed=seed)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_validation_loss_is_the_loss_after_each_epoch(backend):
    X, y = data()
    X_val, y_val = data(n=15, seed=1)
    net = fastgd.Network([3, 5, 2], random_state=0, backend=backend)
    probe = net.copy()
    history = net.fit(X, y, optimizer=fastgd.SGD(lr=0.3), epochs=4, validation_data=(X_val, y_val), shuffle=False)
    sgd = fastgd.SGD(lr=0.3)
    expected = []
    for _ in range(4):
        probe.fit(X, y, optimizer=sgd, epochs=1, shuffle=False)
        expected.append(probe.loss(X_val, y_val))
    np.testing.assert_allclose(history.val_loss, expected, rtol=1e-12)
    np.testing.assert_array_equal(net.flat_parameters, probe.flat_parameters)  # chunking changes nothing
    assert history.val_accuracy == []  # not a classifier


def test_validation_split_holds_out_the_last_rows_and_reports_accuracy():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 4))
    labels = (X[:, 0] > 0).astype(int)
    net = fastgd.Network([4, 6, 2], loss="crossentropy", random_state=0)
    reference = net.copy()
    history = net.fit(X, labels, optimizer=fastgd.Adam(0.05), epochs=3, validation_split=0.2, batch_size=8)
    reference.fit(X[:40], labels[:40], optimizer=fastgd.Adam(0.05), epochs=3, batch_size=8)
    np.testing.assert_array_equal(net.flat_parameters, reference.flat_parameters)
    assert history.val_loss[-1] == pytest.approx(reference.loss(X[40:], labels[40:]), rel=1e-12)
    assert history.val_accuracy[-1] == np.mean(reference.predict(X[40:]).argmax(axis=1) == labels[40:])


def test_early_stopping_stops_and_restores_the_best_weights():
    X, y = data()
    # Validation targets that oppose the training targets: the validation loss falls while the
    # fit starts, then rises, so early stopping must fire.
    X_val, y_val = X.copy(), 1 - y
    net = fastgd.Network([3, 8, 2], random_state=0)
    start = net.copy()
    history = net.fit(
        X,
        y,
        optimizer=fastgd.Adam(0.05),
        epochs=200,
        validation_data=(X_val, y_val),
        early_stopping=True,
        patience=3,
        shuffle=False,
    )
    best = int(np.argmin(history.val_loss)) + 1
    assert history.best_epoch == best
    assert history.stopped_epoch == best + 3 == len(history.loss) < 200
    # The restored weights are those after epoch `best`: retrain a copy for that many epochs.
    start.fit(X, y, optimizer=fastgd.Adam(0.05), epochs=best, shuffle=False)
    np.testing.assert_array_equal(net.flat_parameters, start.flat_parameters)


def test_early_stopping_without_validation_monitors_the_training_loss():
    X, y = data()
    net = fastgd.Network([3, 4, 2], random_state=0)
    # A learning rate so large the training loss stops improving quickly.
    history = net.fit(X, y, optimizer=fastgd.SGD(lr=50.0), epochs=100, early_stopping=True, patience=2)
    assert history.stopped_epoch is not None and len(history.loss) < 100
    assert history.best_epoch == int(np.argmin(history.loss)) + 1


@pytest.mark.parametrize("how", ["return", "raise"])
def test_a_callback_stops_training_at_the_right_epoch(how):
    X, y = data()
    seen = []

    def callback(epoch, history, network):
        seen.append((epoch, len(history.loss), network.epochs_trained))
        if epoch == 6:
            if how == "raise":
                raise fastgd.StopTraining
            return False
        return None

    callback.every = 2
    net = fastgd.Network([3, 4, 2], random_state=0)
    history = net.fit(X, y, optimizer=fastgd.SGD(lr=0.1), epochs=50, callbacks=[callback])
    assert seen == [(2, 2, 2), (4, 4, 4), (6, 6, 6)]
    assert len(history.loss) == 6 and history.stopped_epoch == 6 and net.epochs_trained == 6


def test_progress_bar_appears_only_with_verbose(capsys):
    X, y = data()
    net = fastgd.Network([3, 4, 2], random_state=0)
    net.fit(X, y, epochs=5, verbose=0)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""
    net.fit(X, y, epochs=5, verbose=1, validation_split=0.25)
    err = capsys.readouterr().err
    assert "5/5" in err and "val_loss" in err and "samples/s" in err


def test_progress_bar_does_not_change_the_result():
    X, y = data()
    quiet, loud = fastgd.Network([3, 4, 2], random_state=0), fastgd.Network([3, 4, 2], random_state=0)
    h1 = quiet.fit(X, y, optimizer=fastgd.Adam(0.01), epochs=30, batch_size=8)
    h2 = loud.fit(X, y, optimizer=fastgd.Adam(0.01), epochs=30, batch_size=8, verbose=1)
    np.testing.assert_array_equal(quiet.flat_parameters, loud.flat_parameters)
    assert h1.loss == h2.loss


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        (dict(validation_split=1.5), ValueError, "validation_split must be in"),
        (dict(validation_split=0.2, validation_data=(np.zeros((2, 3)), np.zeros((2, 2)))), ValueError, "not both"),
        (dict(validation_data=np.zeros((2, 3))), TypeError, "validation_data must be a pair"),
        (dict(validation_data=(np.zeros((2, 4)), np.zeros((2, 2)))), ValueError, "validation_data X has 4 columns"),
        (dict(callbacks=[42]), TypeError, "callbacks must be callables"),
        (dict(patience=-1), ValueError, "patience must be >= 0"),
        (dict(min_delta=-0.1), ValueError, "min_delta must be >= 0"),
        (dict(verbose=2), ValueError, "verbose must be 0 or 1"),
        (dict(early_stopping="yes"), TypeError, "early_stopping must be a bool"),
    ],
)
def test_bad_fit_options_leave_the_network_unchanged(kwargs, error, words):
    X, y = data()
    net = fastgd.Network([3, 4, 2], random_state=0)
    net.fit(X, y, optimizer=fastgd.Adam(0.01), epochs=2)
    before = (net.flat_parameters.copy(), net.optimizer_state["exp_avg"].copy(), net.epochs_trained)
    with pytest.raises(error, match=words):
        net.fit(X, y, optimizer=fastgd.Adam(0.01), epochs=2, **kwargs)
    np.testing.assert_array_equal(net.flat_parameters, before[0])
    np.testing.assert_array_equal(net.optimizer_state["exp_avg"], before[1])
    assert net.epochs_trained == before[2]


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_a_schedule_gives_the_hand_computed_learning_rates(backend):
    X, y = data()
    net = fastgd.Network([3, 4, 2], random_state=0, backend=backend)
    manual = net.copy()
    lrs = [0.4, 0.4, 0.4, 0.2, 0.2, 0.2, 0.1]  # StepDecay(step_size=3, gamma=0.5) from lr 0.4
    for lr in lrs:
        grads = manual.gradients(X, y)
        for W, g in zip(manual.weights, grads.weights):
            W -= lr * g
        for b, g in zip(manual.biases, grads.biases):
            b -= lr * g
    net.fit(X, y, optimizer=fastgd.SGD(lr=0.4), epochs=7, lr_schedule=fastgd.schedules.StepDecay(3, gamma=0.5))
    np.testing.assert_allclose(net.flat_parameters, manual.flat_parameters, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    "schedule",
    [
        fastgd.schedules.Cosine(total_steps=10, eta_min=0.001),
        fastgd.schedules.Exponential(0.95),
        fastgd.schedules.InverseScaling(0.5),
    ],
    ids=repr,
)
def test_schedules_and_penalties_are_identical_in_both_backends(dtype, schedule):
    X, y = data(n=50)
    fast = fastgd.Network([3, 6, 2], dtype=dtype, random_state=2, l1=0.001, l2=0.01)
    ref = fast.copy(backend="numpy")
    h_fast = fast.fit(X, y, optimizer=fastgd.Adam(0.05), epochs=3, batch_size=16, lr_schedule=schedule)
    h_ref = ref.fit(X, y, optimizer=fastgd.Adam(0.05), epochs=3, batch_size=16, lr_schedule=schedule)
    rtol = 1e-12 if dtype == "float64" else 1e-5
    np.testing.assert_allclose(fast.flat_parameters, ref.flat_parameters, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(h_fast.loss, h_ref.loss, rtol=rtol)


def test_weight_penalties_are_part_of_the_loss_and_its_gradient():
    X, y = data()
    plain = fastgd.Network([3, 5, 2], random_state=3)
    penalised = fastgd.Network([3, 5, 2], random_state=3, l1=0.01, l2=0.1)
    weights = np.concatenate([W.ravel() for W in plain.weights])
    assert np.abs(weights).min() > 0.01  # no weight within a finite-difference step of the L1 kink
    expected = plain.loss(X, y) + 0.01 * np.abs(weights).sum() + 0.05 * (weights**2).sum()
    assert penalised.loss(X, y) == pytest.approx(expected, rel=1e-12)
    g_plain, g_pen = plain.gradients(X, y), penalised.gradients(X, y)
    np.testing.assert_allclose(
        g_pen.weights[0], g_plain.weights[0] + 0.01 * np.sign(plain.weights[0]) + 0.1 * plain.weights[0]
    )
    np.testing.assert_array_equal(g_pen.biases[0], g_plain.biases[0])  # biases are not penalised
    assert fastgd.gradient_check(penalised, X, y).max_relative_error < 1e-7


def test_bad_schedules_and_penalties_are_rejected():
    with pytest.raises(ValueError, match="l2 must be >= 0"):
        fastgd.Network([2, 1], l2=-1)
    with pytest.raises(ValueError, match="step_size must be >= 1"):
        fastgd.schedules.StepDecay(0)
    with pytest.raises(TypeError, match="lr_schedule must be"):
        fastgd.Network([2, 1]).fit(np.zeros((2, 2)), np.zeros((2, 1)), lr_schedule="cosine")
