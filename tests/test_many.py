"""fit_many: each model ends as its own Network.fit on its rows (the oracle: the single fit,
itself checked against the NumPy reference), whatever the grouping and threads; bad input
changes nothing; Ctrl-C leaves every model at a whole epoch."""

import os
import signal
import threading
import warnings

import numpy as np
import pytest

import fastgd
import fastgd.many as many_module
from fastgd.optimizers import OPTIMIZERS_UNDER_TEST
from fastgd.schedules import Cosine, StepDecay
from fastgd.training.callbacks import EarlyStopping

# The same steps as the single fit, whose products sum in another order: float64 agrees to
# rounding accumulated over the epochs (1e-12 at these sizes), float32 to 1e-5.
TOLERANCE = {"float64": 1e-12, "float32": 1e-5}


def _data(rows=60, n_in=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, n_in))
    y = (X[:, 0] * X[:, 1] > 0).astype(float)
    return X, y


def _network(seed, dtype="float64", **options):
    options.setdefault("activation", "tanh")
    options.setdefault("loss", "binary_crossentropy")
    options.setdefault("output_activation", "sigmoid")
    return fastgd.Network([3, 5, 4, 1], dtype=dtype, random_state=seed, **options)


def _state(net):
    live = net.train_state()
    return live.params.copy(), live.opt_state.copy(), int(live.step[0]), list(net.history.loss), net.epochs_trained


def _assert_close(many, single, dtype):
    tolerance = TOLERANCE[dtype]
    np.testing.assert_allclose(many.flat_parameters, single.flat_parameters, rtol=0, atol=tolerance)
    np.testing.assert_allclose(
        many.train_state().opt_state, single.train_state().opt_state, rtol=tolerance, atol=tolerance
    )
    assert many.optimizer_steps == single.optimizer_steps
    assert many.epochs_trained == single.epochs_trained
    # (a loss near 0 is a sum of larger terms: its rounding is absolute, at their scale)
    np.testing.assert_allclose(many.history.loss, single.history.loss, rtol=tolerance, atol=tolerance * 1e-3)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_every_optimizer_matches_its_single_fit(dtype):
    X, y = _data()
    rng = np.random.default_rng(1)
    count = len(OPTIMIZERS_UNDER_TEST)
    rows = [np.sort(rng.choice(60, size=int(rng.integers(30, 60)), replace=False)) for _ in range(count)]
    weights = [rng.uniform(0.5, 2.0, size=r.size) for r in rows]
    batches = [[None, 7, 16][k % 3] for k in range(count)]

    def network(k):  # penalties per sample or per batch, with weights: fit scales them by the weights
        return _network(k, dtype, l2=0.01 * (k % 2), l1=0.001 * (k % 3 == 0), penalty_per_sample=k % 4 < 2)

    many = [network(k) for k in range(count)]
    single = [network(k) for k in range(count)]
    optimizers = [cls(**options) for cls, options in OPTIMIZERS_UNDER_TEST]
    histories = fastgd.fit_many(
        many, X, y, optimizers=optimizers, epochs=6, batch_size=batches, rows=rows, sample_weights=weights
    )
    for k, (cls, options) in enumerate(OPTIMIZERS_UNDER_TEST):
        single[k].fit(
            X[rows[k]], y[rows[k]], optimizer=cls(**options), epochs=6, batch_size=batches[k], sample_weight=weights[k]
        )
        _assert_close(many[k], single[k], dtype)
        assert histories[k].loss == many[k].history.loss


def test_validation_early_stopping_schedules_clipping_dropout_and_penalties_match():
    X, y = _data(80)
    folds = [np.arange(0, 60), np.arange(20, 80), np.r_[0:20, 40:80], np.arange(80)]
    held = [np.arange(60, 80), np.arange(0, 20), np.arange(20, 40), None]
    rules = [
        EarlyStopping(patience=2, min_delta=1e-3),
        EarlyStopping(patience=3, monitor="val_accuracy", restore_best=False),
        EarlyStopping(patience=2, rule="no_improvement", min_delta=1e-4, lr_factor=5.0, min_lr=1e-4),
        EarlyStopping(patience=1),
    ]
    schedules = [StepDecay(3, 0.5), Cosine(40), None, StepDecay(2, 0.9)]
    make = [
        dict(l1=0.001),
        dict(dropout=0.2),
        dict(l2=0.01, penalty_per_sample=True),
        dict(activation="relu", loss="mse", output_activation="identity"),
    ]
    many = [_network(k, **make[k]) for k in range(4)]
    single = [_network(k, **make[k]) for k in range(4)]
    optimizer = fastgd.SGD(lr=0.3, momentum=0.5)
    histories = fastgd.fit_many(
        many,
        X,
        y,
        optimizers=optimizer,
        epochs=40,
        batch_size=16,
        rows=folds,
        validation_rows=held,
        early_stopping=rules,
        lr_schedule=schedules,
        clip_grad_norm=1.0,
        clip_grad_value=0.5,
    )
    for k in range(4):
        fresh = EarlyStopping(**{"patience": rules[k].patience})
        rule = rules[k] if k != 3 else fresh
        validation = None if held[k] is None else (X[held[k]], y[held[k]])
        expected = single[k].fit(
            X[folds[k]],
            y[folds[k]],
            optimizer=fastgd.SGD(lr=0.3, momentum=0.5),
            epochs=40,
            batch_size=16,
            validation_data=validation,
            early_stopping=_copy_rule(rule),
            lr_schedule=schedules[k],
            clip_grad_norm=1.0,
            clip_grad_value=0.5,
        )
        _assert_close(many[k], single[k], "float64")
        np.testing.assert_allclose(histories[k].val_loss, expected.val_loss, rtol=1e-12)
        assert histories[k].val_accuracy == pytest.approx(expected.val_accuracy, abs=1e-12)
        assert histories[k].best_epoch == expected.best_epoch
        assert histories[k].stopped_epoch == expected.stopped_epoch
    # The rules stopped at different epochs: a stopped model trained no further.
    assert len({len(h.loss) for h in histories}) > 1
    assert min(len(h.loss) for h in histories) < 40


def _copy_rule(rule):
    return EarlyStopping(
        patience=rule.patience,
        min_delta=rule.min_delta,
        restore_best=rule.restore_best,
        monitor=rule.monitor,
        rule=rule.rule,
        lr_factor=rule.lr_factor,
        min_lr=rule.min_lr,
    )


def test_results_do_not_depend_on_threads_order_or_grouping():
    X, y = _data()
    shapes = [dict(), dict(activation="sigmoid"), dict(dropout=0.1)]

    def networks():
        return [_network(k, **shapes[k % 3]) for k in range(9)]

    optimizers = [fastgd.Adam(lr=0.01 * (1 + k)) for k in range(9)]
    one = networks()
    fastgd.fit_many(one, X, y, optimizers=optimizers, epochs=5, batch_size=8, n_threads=1)
    two = networks()
    order = [8, 3, 5, 0, 7, 1, 6, 2, 4]
    fastgd.fit_many(
        [two[k] for k in order], X, y, optimizers=[optimizers[k] for k in order], epochs=5, batch_size=8, n_threads=2
    )
    alone = networks()
    fastgd.fit_many([alone[4]], X, y, optimizers=optimizers[4], epochs=5, batch_size=8)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a.flat_parameters, b.flat_parameters)
    np.testing.assert_array_equal(alone[4].flat_parameters, one[4].flat_parameters)


def test_class_labels_and_a_second_call_continue_as_fit_does():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(50, 3))
    labels = rng.integers(0, 3, size=50)

    def network(seed):
        return fastgd.Network([3, 6, 3], activation="relu", loss="crossentropy", random_state=seed)

    many, single = [network(k) for k in range(3)], [network(k) for k in range(3)]
    optimizers = [fastgd.Adam(lr=0.02 * (k + 1)) for k in range(3)]
    for _ in range(2):  # the second call goes on from the first: state, steps, shuffle epochs
        fastgd.fit_many(many, X, labels, optimizers=optimizers, epochs=3, batch_size=10)
    for k, net in enumerate(single):
        optimizer = fastgd.Adam(lr=0.02 * (k + 1))
        net.fit(X, labels, optimizer=optimizer, epochs=3, batch_size=10)
        net.fit(X, labels, optimizer=optimizer, epochs=3, batch_size=10)
    for a, b in zip(many, single):
        _assert_close(a, b, "float64")


def test_large_networks_train_through_fit():
    # A network BLAS would serve trains as fit trains it (the same code: bitwise).
    rng = np.random.default_rng(4)
    X, y = rng.normal(size=(40, 64)), rng.normal(size=40)
    many = fastgd.Network([64, 512, 1], activation="relu", loss="mse", output_activation="identity", random_state=0)
    single = fastgd.Network([64, 512, 1], activation="relu", loss="mse", output_activation="identity", random_state=0)
    assert many.architecture.blas
    fastgd.fit_many([many], X, y, optimizers=fastgd.SGD(lr=0.01), epochs=2, batch_size=8, rows=[np.arange(30)])
    single.fit(X[:30], y[:30], optimizer=fastgd.SGD(lr=0.01), epochs=2, batch_size=8)
    np.testing.assert_array_equal(many.flat_parameters, single.flat_parameters)


@pytest.mark.parametrize(
    "arguments, error, names",
    [
        (dict(optimizers=[fastgd.SGD(lr=0.1)]), ValueError, "optimizers"),
        (dict(batch_size=[4, 8]), ValueError, "batch_size"),
        (dict(rows=[np.arange(10), np.arange(10), np.arange(55, 61)]), ValueError, "rows[2]"),
        (dict(rows=[np.arange(10), np.arange(10), np.array([0.5, 1.5])]), TypeError, "rows[2]"),
        (dict(rows=np.arange(10)), TypeError, "rows"),
        (dict(validation_rows=[None, None, np.array([-1])]), ValueError, "validation_rows[2]"),
        (dict(sample_weights=[np.ones(60), np.ones(60), np.ones(3)]), ValueError, "sample_weights[2]"),
        (dict(sample_weights=np.ones(59)), ValueError, "sample_weight"),
        (dict(early_stopping=EarlyStopping(monitor="val_loss")), ValueError, "val"),
        (dict(epochs=-1), ValueError, "epochs"),
        (dict(clip_grad_norm=-1.0), ValueError, "clip_grad_norm"),
        (dict(on_divergence="ignore"), ValueError, "on_divergence"),
        (dict(validation_data=None), TypeError, "validation_data"),
        (dict(optimizers="nope"), ValueError, "nope"),
    ],
)
def test_bad_input_names_the_argument_and_changes_nothing(arguments, error, names):
    X, y = _data()
    nets = [_network(k) for k in range(3)]
    for net in nets:
        net.fit(X, y, optimizer=fastgd.Adam(lr=0.01), epochs=1)
    before = [_state(net) for net in nets]
    with pytest.raises(error) as raised:
        fastgd.fit_many(nets, X, y, **{"epochs": 2, **arguments})
    assert names in str(raised.value)
    for net, (params, opt_state, step, losses, epochs) in zip(nets, before):
        np.testing.assert_array_equal(net.flat_parameters, params)
        np.testing.assert_array_equal(net.train_state().opt_state, opt_state)
        assert (net.optimizer_steps, net.history.loss, net.epochs_trained) == (step, losses, epochs)


def test_bad_networks_are_refused():
    X, y = _data()
    net = _network(0)
    with pytest.raises(ValueError, match="distinct"):
        fastgd.fit_many([net, net], X, y)
    with pytest.raises(ValueError, match="dtype"):
        fastgd.fit_many([_network(0), _network(1, "float32")], X, y)
    with pytest.raises(TypeError, match="networks"):
        fastgd.fit_many(net, X, y)
    with pytest.raises(ValueError, match="at least one"):
        fastgd.fit_many([], X, y)
    with pytest.raises(ValueError, match="columns"):
        fastgd.fit_many([fastgd.Network([4, 2, 1], random_state=0)], X, y)


def test_divergence_puts_a_model_back_and_the_others_train_on():
    X, y = _data()
    X = X * 1e3
    options = dict(loss="mse", output_activation="identity", activation="relu")
    nets = [_network(k, **options) for k in range(2)]
    single = [_network(k, **options) for k in range(2)]
    rates = [1e3, 1e-9]  # the first grows 1e6-fold an epoch until it overflows
    with pytest.warns(fastgd.DivergenceWarning, match=r"networks\[0\]"):
        histories = fastgd.fit_many(
            nets, X, y, optimizers=[fastgd.SGD(lr=rate) for rate in rates], epochs=80, on_divergence="warn"
        )
    for k, rate in enumerate(rates):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fastgd.DivergenceWarning)
            expected = single[k].fit(X, y, optimizer=fastgd.SGD(lr=rate), epochs=80, on_divergence="warn")
        # (the diverging model's parameters reach 1e50: compared relatively)
        np.testing.assert_allclose(nets[k].flat_parameters, single[k].flat_parameters, rtol=1e-12)
        assert nets[k].epochs_trained == single[k].epochs_trained
        assert histories[k].stopped_epoch == expected.stopped_epoch
    assert np.isfinite(nets[0].flat_parameters).all() and nets[0].epochs_trained < 80
    with pytest.raises(fastgd.DivergenceError, match=r"networks\[0\]"):
        fastgd.fit_many([_network(5, **options)], X, y, optimizers=fastgd.SGD(lr=1e3), epochs=80)


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="SIGINT needs the main thread")
def test_ctrl_c_leaves_every_model_at_a_whole_epoch():
    X, y = _data(64)
    count, epochs = 6, 1_000_000  # 8 steps an epoch: about 4 s a model, where the Ctrl-C comes after 1 s

    def networks():
        return [_network(k) for k in range(count)]

    nets = networks()
    fastgd.fit_many(networks()[:1], X, y, epochs=1)  # compiled before the timer starts
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            fastgd.fit_many(nets, X, y, optimizers=fastgd.SGD(lr=0.1), epochs=epochs, batch_size=8, n_threads=2)
    finally:
        timer.cancel()
    trained = [net.epochs_trained for net in nets]
    assert max(trained) < epochs
    fresh = networks()
    for net, again, done in zip(nets, fresh, trained):
        assert len(net.history.loss) == done
        if done:
            again.fit(X, y, optimizer=fastgd.SGD(lr=0.1), epochs=done, batch_size=8)
        _assert_close(net, again, "float64") if done else np.testing.assert_array_equal(
            net.flat_parameters, again.flat_parameters
        )


def test_calls_of_a_few_epochs_each_give_the_same_models(monkeypatch):
    # Long fits run in calls of MAX_CHUNK_EPOCHS epochs: the rules, shuffles and records carry
    # over from one call to the next (here 3 epochs a call).
    X, y = _data(60)
    held = [np.arange(40, 60), None, np.arange(0, 20)]
    rules = [
        EarlyStopping(patience=2, min_delta=0.01),
        EarlyStopping(patience=100),
        EarlyStopping(patience=3, monitor="val_accuracy"),
    ]

    def run(chunk):
        monkeypatch.setattr(many_module, "MAX_CHUNK_EPOCHS", chunk)
        nets = [_network(k) for k in range(3)]
        histories = fastgd.fit_many(
            nets,
            X,
            y,
            optimizers=fastgd.Adam(lr=0.05),
            epochs=20,
            batch_size=8,
            validation_rows=held,
            early_stopping=[_copy_rule(rule) for rule in rules],
        )
        return nets, histories

    whole, whole_histories = run(1 << 16)
    pieces, piece_histories = run(3)
    for a, b, h, g in zip(whole, pieces, whole_histories, piece_histories):
        np.testing.assert_array_equal(a.flat_parameters, b.flat_parameters)
        assert (h.loss, h.val_loss, h.best_epoch, h.stopped_epoch) == (
            g.loss,
            g.val_loss,
            g.best_epoch,
            g.stopped_epoch,
        )
    assert any(h.stopped_epoch for h in whole_histories) and max(h.best_epoch for h in whole_histories) > 3
