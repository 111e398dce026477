"""Gradient health (``fit(..., track_gradients=True)``): what the compiled loop records per epoch
and layer, against the same quantities computed here from the definitions; the warnings; the
plot."""

import warnings

import numpy as np
import pytest
from _helpers import flat_gradient

import fastgd
from fastgd.training.health import HEALTH_FIELDS

BATCH, EPOCHS = 16, 3


def problem(
    activation="sigmoid",
    output_activation="sigmoid",
    hidden=(9, 7),
    dtype="float64",
    init="uniform",
    l2=1e-3,
    **options,
):
    rng = np.random.default_rng(8)
    X = 2.5 * rng.normal(size=(96, 5))
    y = 1 / (1 + np.exp(-X[:, :2] @ rng.normal(size=(2, 2))))
    net = fastgd.Network(
        [5, *hidden, 2],
        activation=activation,
        output_activation=output_activation,
        init=init,
        dtype=dtype,
        random_state=2,
        l2=l2,
        **options,
    )
    return X, y, net


def expected_health(net, X, y, optimizer, clip_grad_norm=None):
    """Per epoch and layer, from the definitions: the optimizer trajectory step by step with
    gradients(), forward activations written out here."""
    ref = net.copy(backend="numpy")
    ref.set_optimizer(optimizer)
    state = ref.train_state()
    act = {"sigmoid": lambda z: 1 / (1 + np.exp(-z)), "tanh": np.tanh}
    derivative = {"sigmoid": lambda a: a * (1 - a), "tanh": lambda a: 1 - a * a}
    config = net.get_config()
    names = [config["activation"]] * (len(net.weights) - 1) + [config["output_activation"]]
    rows = []
    step = 0
    for _ in range(EPOCHS):
        start_weights = [W.copy() for W in ref.weights]
        grad_sum = np.zeros(len(names))
        saturated = np.zeros(len(names))
        for start in range(0, X.shape[0], BATCH):
            xb, yb = X[start : start + BATCH], y[start : start + BATCH]
            a = xb
            for k, name in enumerate(names):  # the activations this step's forward pass sees
                a = act[name](a @ ref.weights[k] + ref.biases[k]) if name in act else None
                if a is None:
                    break
                saturated[k] += np.count_nonzero(derivative[name](a) < 1e-3)
            g = ref.gradients(xb, yb)
            grad_sum += [np.linalg.norm(W) for W in g.weights]
            step += 1
            gradient = flat_gradient(ref, g)
            if clip_grad_norm is not None:
                gradient *= min(1.0, clip_grad_norm / (np.linalg.norm(gradient) + 1e-6))
            fastgd.reference.optimizer_step(
                optimizer.code, state.params, gradient, state.opt_state, step, optimizer.lr, optimizer.hyper_vector()
            )
        steps = X.shape[0] // BATCH
        row = np.full((len(names), 4), np.nan)
        for k, name in enumerate(names):
            row[k, 0] = grad_sum[k] / steps
            row[k, 1] = np.linalg.norm(ref.weights[k])
            row[k, 2] = np.linalg.norm(ref.weights[k] - start_weights[k]) / np.linalg.norm(start_weights[k])
            if name in act:
                row[k, 3] = saturated[k] / (X.shape[0] * ref.weights[k].shape[1])
        rows.append(row)
    return np.array(rows)


def recorded(history):
    return np.stack([np.array(getattr(history, field)) for field in HEALTH_FIELDS], axis=-1)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize(
    "activation, output_activation", [("sigmoid", "sigmoid"), ("tanh", "identity"), ("relu", "softmax")]
)
def test_health_is_what_its_definitions_say(backend, activation, output_activation):
    X, y, net = problem(activation, output_activation, backend=backend)
    if output_activation == "softmax":
        net = fastgd.Network(
            [5, 9, 7, 2],
            activation=activation,
            output_activation="softmax",
            loss="crossentropy",
            init="uniform",
            random_state=2,
            l2=1e-3,
            backend=backend,
        )
        y = np.eye(2)[(X[:, 0] > 0).astype(int)]
    expected = expected_health(net, X, y, fastgd.Adam(lr=0.05), clip_grad_norm=0.5)
    history = net.fit(
        X,
        y,
        optimizer=fastgd.Adam(lr=0.05),
        epochs=EPOCHS,
        batch_size=BATCH,
        shuffle=False,
        track_gradients=True,
        clip_grad_norm=0.5,
    )
    got = recorded(history)
    assert got.shape == (EPOCHS, 3, 4)
    assert history.health_epochs == [1, 2, 3] and net.history.health_epochs == [1, 2, 3]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))  # saturation: sigmoid and tanh layers only
    finite = ~np.isnan(expected)
    # The loop sums in other orders than NumPy (chunks, fast-math): equal to rounding.
    np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-10, atol=1e-14)
    if activation == "sigmoid":
        assert (got[:, :, 3] > 0).any(), "nothing saturated: the saturation count was not exercised"


def test_health_depends_on_no_thread_count_and_changes_no_training():
    X, y, net = problem()
    results = []
    for threads, track in ((1, True), (2, True), (2, False)):
        trained = net.copy()
        trained.n_threads = threads
        history = trained.fit(
            X, y, optimizer="adam", epochs=EPOCHS, batch_size=BATCH, track_gradients=track, grad_shards=2
        )
        results.append((trained.flat_parameters.copy(), recorded(history) if track else None))
    assert np.array_equal(results[0][0], results[1][0]) and np.array_equal(results[0][0], results[2][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])


def test_vanishing_gradients_warn_once_per_layer_naming_it_and_the_epoch():
    # Ten sigmoid hidden layers: the gradient shrinks ~4x per layer on the way back (at most
    # 1/4 from each sigmoid's derivative); the first four end below 1e-4 of the output layer's.
    # (No weight penalty: its gradient l2·W would not vanish.)
    X, y, net = problem(hidden=(16,) * 10, init="xavier_uniform", l2=0.0)
    with pytest.warns(fastgd.GradientWarning) as caught:
        history = net.fit(X, y, optimizer="sgd", epochs=2, batch_size=BATCH, track_gradients=True)
    messages = [str(w.message) for w in caught if issubclass(w.category, fastgd.GradientWarning)]
    ratios = np.array(history.grad_norm[0][:-1]) / history.grad_norm[0][-1]
    vanishing = [layer for layer, ratio in enumerate(ratios) if ratio < 1e-4]
    assert vanishing == [0, 1, 2, 3], ratios
    assert len(messages) == len(vanishing)  # once per layer, not again at epoch 2
    for layer, message in zip(vanishing, messages):
        assert message.startswith(f"layer {layer} (of 11, input layer 0): gradient vanishing at epoch 1")
    # Thresholds are the user's; warn=False records without warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error", fastgd.GradientWarning)
        net.copy().fit(
            X, y, optimizer="sgd", epochs=1, batch_size=BATCH, track_gradients=fastgd.GradientTracking(vanishing=1e-12)
        )
        quiet = net.copy().fit(
            X, y, optimizer="sgd", epochs=1, batch_size=BATCH, track_gradients=fastgd.GradientTracking(warn=False)
        )
    assert len(quiet.grad_norm) == 1


def test_exploding_gradients_warn():
    X, y, net = problem(activation="identity", output_activation="identity", hidden=(9, 7), l2=0.0)
    # Tiny first-layer weights make tiny activations above it, so a tiny output-layer gradient
    # (its inputs times δ), while the first layer's gradient (x times δ carried back) is not.
    net.weights[0][...] *= 1e-4
    with pytest.warns(fastgd.GradientWarning, match="layer 0 .* gradient exploding at epoch 1"):
        net.fit(
            X,
            y,
            optimizer=fastgd.SGD(lr=1e-6),
            epochs=1,
            batch_size=BATCH,
            track_gradients=fastgd.GradientTracking(vanishing=1e-9, exploding=10.0),
        )


def test_bad_tracking_arguments_change_nothing(tmp_path):
    X, y, net = problem()
    before = net.flat_parameters.copy()
    with pytest.raises(TypeError, match="track_gradients must be a bool or a fastgd.GradientTracking"):
        net.fit(X, y, track_gradients="yes")
    with pytest.raises(TypeError, match="track_gradients must be"):
        net.fit(X, y, track_gradients=np.ones(2))
    for options, words in (
        (dict(vanishing=-1.0), "vanishing must be a finite number > 0"),
        (dict(exploding=float("inf")), "exploding must be a finite number > 0"),
        (dict(vanishing=10.0, exploding=1.0), "must be below exploding"),
    ):
        with pytest.raises(ValueError, match=words):
            fastgd.GradientTracking(**options)
    path = tmp_path / "X.npy"
    np.save(path, X)
    with pytest.raises(ValueError, match="track_gradients is not available with streamed data"):
        net.fit(np.load(path, mmap_mode="r"), y, track_gradients=True)
    assert np.array_equal(net.flat_parameters, before) and net.epochs_trained == 0


def test_plot_history_draws_the_gradient_norms_per_layer(tmp_path):
    pytest.importorskip("matplotlib")
    X, y, net = problem()
    net.fit(X, y, epochs=1, batch_size=BATCH)  # an epoch without tracking first
    net.fit(X, y, epochs=2, batch_size=BATCH, track_gradients=True)
    assert net.history.health_epochs == [2, 3]
    figure = fastgd.plot_history(net.history, path=tmp_path / "h.png")
    axes = figure.axes[-1]
    assert axes.get_yscale() == "log" and len(axes.lines) == 3
    assert list(axes.lines[0].get_xdata()) == [2, 3]
    assert (tmp_path / "h.png").stat().st_size > 0
