"""Dropout (``Network(dropout=...)``, the estimators' ``dropout``): inverted dropout on the
hidden layers while training, the compiled loop and the NumPy twin drawing the same masks from
the same counters; deterministic; the same on any number of threads; off in predict, loss,
gradients, validation and the gradient check; saved and loaded; not exported."""

import numpy as np
import pytest
from _helpers import RTOL

import fastgd
from fastgd import reference
from fastgd.gradcheck import gradient_check
from fastgd.kernels import activations, layout, network
from fastgd.kernels.losses import MSE


def data(rows=160, n_in=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, n_in))
    return X, (X[:, 0] * X[:, 1] > 0).astype(int)


def trained(
    backend="numba", dtype="float64", activation="relu", optimizer="adam", dropout=0.3, n_threads=1, epochs=4, **options
):
    X, y = data()
    net = fastgd.Network(
        [6, 16, 12, 2],
        activation=activation,
        loss="crossentropy",
        dtype=dtype,
        random_state=3,
        backend=backend,
        dropout=dropout,
        n_threads=n_threads,
    )
    history = net.fit(X, y, optimizer=optimizer, epochs=epochs, batch_size=32, **options)
    return net, history


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "gelu", "silu"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam", "rmsprop"])
def test_the_compiled_loop_and_the_numpy_twin_take_the_same_steps(dtype, activation, optimizer):
    compiled, compiled_history = trained("numba", dtype, activation, optimizer)
    twin, twin_history = trained("numpy", dtype, activation, optimizer)
    # The twins' tolerance (sums in another order); the masks themselves are the same bits.
    np.testing.assert_allclose(
        compiled.flat_parameters,
        twin.flat_parameters,
        rtol=RTOL[np.dtype(dtype)] * 10,
        atol=1e-12 if dtype == "float64" else 1e-5,
    )
    np.testing.assert_allclose(compiled_history.loss, twin_history.loss, rtol=RTOL[np.dtype(dtype)] * 10)


def test_dropout_changes_training_and_is_deterministic_from_random_state():
    with_dropout, history = trained(dropout=0.3)
    again, history_again = trained(dropout=0.3)
    without, history_without = trained(dropout=0.0)
    assert np.array_equal(with_dropout.flat_parameters, again.flat_parameters) and history.loss == history_again.loss
    assert not np.allclose(with_dropout.flat_parameters, without.flat_parameters)
    # The masks come from random_state: two seeds, the same initial weights, no shuffling:
    # without dropout the same fit, with dropout two others.
    X, y = data()
    fits = {}
    for rate in (0.0, 0.3):
        for seed in (3, 4):
            net = fastgd.Network(
                [6, 16, 12, 2], activation="relu", loss="crossentropy", random_state=seed, dropout=rate
            )
            net.flat_parameters[...] = with_dropout.state_dict()["initial_parameters"]
            net.fit(X, y, optimizer="adam", epochs=3, batch_size=32, shuffle=False)
            fits[rate, seed] = net.flat_parameters.copy()
    assert np.array_equal(fits[0.0, 3], fits[0.0, 4])
    assert not np.allclose(fits[0.3, 3], fits[0.3, 4])


def test_the_same_bits_on_one_and_two_threads():
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(1024, 64)), rng.normal(size=(1024, 8))
    results = []
    for threads in (1, 2):
        net = fastgd.Network(
            [64, 256, 256, 8],
            activation="relu",
            output_activation="identity",
            loss="mse",
            dtype="float32",
            random_state=0,
            n_threads=threads,
            dropout=[0.2, 0.5],
        )
        net.fit(X, y, optimizer="adam", epochs=2, batch_size=512)
        results.append(net.flat_parameters.copy())
    assert np.array_equal(results[0], results[1])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_masks_are_inverted_dropout_and_the_twin_draws_the_same(dtype):
    # The passes keep no masks: a dropped layer's outputs and its slopes f'(z) are multiplied by
    # them. With an identity layer (f' = 1) the slopes a training pass writes are the masks.
    rng = np.random.default_rng(0)
    rate, rows, key = 0.3, 400, 12345
    architecture = layout.make_architecture((20, 50, 3), [activations.IDENTITY, activations.IDENTITY], dropout=[rate])
    params = (0.3 * rng.normal(size=architecture.n_params)).astype(dtype)
    x = rng.normal(size=(rows, 20)).astype(dtype)
    y, row_scale = rng.normal(size=(rows, 3)).astype(dtype), np.full(rows, 1.0 / rows, dtype)
    training, dropped, plain, twin = (layout.make_buffers(architecture, rows, dtype) for _ in range(4))
    network.forward_backward(
        params, np.zeros_like(params), architecture, x, y, row_scale, training, MSE, 0.0, 0.0, key=key, row0=7
    )
    network.forward(params, architecture, x, dropped, MSE, key=key, row0=7)
    network.forward(params, architecture, x, plain, MSE)
    reference.forward(params, architecture, x, twin, MSE, key=key, row0=7)
    masks = layout.block_of(training.slopes, architecture, 0, rows)
    np.testing.assert_array_equal(masks, layout.block_of(twin.slopes, architecture, 0, rows))
    np.testing.assert_array_equal(masks, reference.dropout_masks(key, 0, rate, 7, rows, 50, dtype))
    scale = np.dtype(dtype).type(1.0 / (1.0 - rate))
    assert set(np.unique(masks)) == {0, scale}
    # About a share ``rate`` dropped (20 000 draws: 5 standard deviations is ±1.6 %).
    assert abs(np.mean(masks == 0) - rate) < 5 * np.sqrt(rate * (1 - rate) / masks.size)
    a_dropped = layout.block_of(dropped.acts, architecture, 0, rows)
    a_plain = layout.block_of(plain.acts, architecture, 0, rows)
    np.testing.assert_array_equal(a_dropped, a_plain * masks)  # the kept outputs scaled by 1/(1 - p), exactly
    # The output layer drops nothing: its slopes are f' = 1 everywhere.
    assert np.all(layout.block_of(training.slopes, architecture, 1, rows) == 1)
    # Another row offset (another shard of the batch) and another key draw other masks.
    other = reference.dropout_masks(key, 0, rate, 8, rows, 50, dtype)
    assert not np.array_equal(other, masks) and np.array_equal(other[:-1], masks[1:])
    assert not np.array_equal(reference.dropout_masks(key + 1, 0, rate, 7, rows, 50, dtype), masks)


def test_the_backward_pass_goes_through_the_masks_as_the_twin_does():
    rng = np.random.default_rng(2)
    architecture = layout.make_architecture(
        (5, 9, 7, 2), [activations.SIGMOID, activations.SIGMOID, activations.IDENTITY], dropout=[0.25, 0.5]
    )
    params = rng.normal(size=architecture.n_params)
    x, y = rng.normal(size=(33, 5)), rng.normal(size=(33, 2))
    scale = np.full(33, 1 / 33)
    grads, twin_grads = np.zeros_like(params), np.zeros_like(params)
    value = network.forward_backward(
        params,
        grads,
        architecture,
        x,
        y,
        scale,
        layout.make_buffers(architecture, 33, "float64"),
        MSE,
        0.0,
        0.0,
        key=99,
        row0=3,
    )
    twin = reference.forward_backward(
        params,
        twin_grads,
        architecture,
        x,
        y,
        scale,
        layout.make_buffers(architecture, 33, "float64"),
        MSE,
        0.0,
        0.0,
        key=99,
        row0=3,
    )
    np.testing.assert_allclose(value, twin, rtol=1e-12)
    np.testing.assert_allclose(grads, twin_grads, rtol=1e-12, atol=1e-15)
    # Finite differences of the loss with these masks fixed (the key fixes them) agree with backprop.
    eps, numeric = 1e-6, np.zeros_like(params)
    for i in range(params.size):
        for sign in (1, -1):
            shifted = params.copy()
            shifted[i] += sign * eps
            numeric[i] += (
                sign
                * network.evaluate_loss(
                    shifted,
                    architecture,
                    x,
                    y,
                    scale,
                    layout.make_buffers(architecture, 33, "float64"),
                    MSE,
                    key=99,
                    row0=3,
                )
                / (2 * eps)
            )
    np.testing.assert_allclose(grads, numeric, rtol=1e-5, atol=1e-8)


def test_predict_loss_gradients_validation_and_the_gradient_check_never_drop():
    net, _ = trained(dropout=[0.5, 0.5])
    plain = fastgd.Network([6, 16, 12, 2], activation="relu", loss="crossentropy", random_state=3)
    plain.flat_parameters[...] = net.flat_parameters
    X, y = data(seed=1)
    np.testing.assert_array_equal(net.predict(X), plain.predict(X))
    assert net.loss(X, y) == plain.loss(X, y)
    for ours, theirs in zip(net.gradients(X, y).weights, plain.gradients(X, y).weights):
        np.testing.assert_array_equal(ours, theirs)
    assert gradient_check(net, X[:10], y[:10]).max_relative_error < 1e-6
    # Validation: the loss on the held-out rows after the epoch, without dropout.
    X_val, y_val = data(40, seed=2)
    history = net.fit(X, y, optimizer="adam", epochs=1, batch_size=32, validation_data=(X_val, y_val))
    np.testing.assert_allclose(history.val_loss[-1], net.loss(X_val, y_val), rtol=1e-12)


def test_saved_and_loaded_and_resumed_bitwise(tmp_path):
    X, y = data()
    straight, _ = trained(dropout=[0.2, 0.4], epochs=6)
    half, _ = trained(dropout=[0.2, 0.4], epochs=3)
    half.save(tmp_path / "net.npz")
    loaded = fastgd.load(tmp_path / "net.npz")
    assert loaded.dropout == (0.2, 0.4) and "dropout=[0.2, 0.4]" in repr(loaded)
    loaded.fit(X, y, epochs=3, batch_size=32)
    np.testing.assert_array_equal(loaded.flat_parameters, straight.flat_parameters)
    assert loaded.copy().dropout == (0.2, 0.4)


def test_exported_networks_carry_no_dropout():
    torch = pytest.importorskip("torch")
    net, _ = trained(dropout=0.5)
    module = net.to_torch()
    assert not any(isinstance(layer, torch.nn.Dropout) for layer in module)
    X, _ = data(seed=3)
    np.testing.assert_allclose(module(torch.from_numpy(X)).detach().numpy(), net.predict(X), rtol=1e-12)


@pytest.mark.parametrize(
    ("dropout", "error", "match"),
    [
        (-0.1, ValueError, r"\[0, 1\)"),
        (1.0, ValueError, r"\[0, 1\)"),
        (float("nan"), ValueError, r"\[0, 1\)"),
        ("0.1", TypeError, "dropout"),
        ([0.1], ValueError, "one rate per hidden layer"),
        ([0.1, True], TypeError, "numbers"),
    ],
)
def test_bad_dropout_is_refused_naming_it(dropout, error, match):
    with pytest.raises(error, match=match):
        fastgd.Network([3, 4, 5, 1], dropout=dropout)


def test_the_estimators_take_dropout():
    pytest.importorskip("sklearn")
    from sklearn.utils._param_validation import InvalidParameterError

    from fastgd.sklearn import MLPClassifier, MLPRegressor

    X, y = data()
    classifier = MLPClassifier((8, 8), dropout=[0.1, 0.3], max_iter=5, random_state=0).fit(X, y)
    assert classifier.network_.dropout == (0.1, 0.3)
    again = MLPClassifier((8, 8), dropout=[0.1, 0.3], max_iter=5, random_state=0).fit(X, y)
    np.testing.assert_array_equal(classifier.predict_proba(X), again.predict_proba(X))
    plain = MLPClassifier((8, 8), max_iter=5, random_state=0).fit(X, y)
    assert not np.array_equal(classifier.predict_proba(X), plain.predict_proba(X))
    assert MLPRegressor(hidden_layer_sizes=(8,), dropout=0.2, max_iter=3, random_state=0).fit(
        X, X[:, 0]
    ).network_.dropout == (0.2,)
    with pytest.raises(ValueError, match="lbfgs"):
        MLPClassifier((8,), solver="lbfgs", dropout=0.2).fit(X, y)
    with pytest.raises(InvalidParameterError, match="dropout"):
        MLPClassifier((8,), dropout=1.5).fit(X, y)
    with pytest.raises(ValueError, match="one rate per hidden layer"):
        MLPClassifier((8, 8), dropout=[0.1]).fit(X, y)
