"""Training: both backends take the same trajectory, and fit does what its documentation says."""

import numpy as np
import pytest
from _helpers import DTYPES, RTOL, assert_close, regression_data

import fastgd
from fastgd.optimizers import OPTIMIZERS_UNDER_TEST
from fastgd.registry import ACTIVATIONS, LOSSES


def twin_networks(sizes, dtype, **options):
    fast = fastgd.Network(sizes, dtype=dtype, random_state=7, backend="numba", **options)
    ref = fastgd.Network(sizes, dtype=dtype, random_state=7, backend="numpy", **options)
    np.testing.assert_array_equal(fast.flat_parameters, ref.flat_parameters)
    return fast, ref


def assert_same_training_state(fast, ref, dtype, rtol=None):
    assert fast.flat_parameters.dtype == np.dtype(dtype)
    assert_close(fast.flat_parameters, ref.flat_parameters, dtype=dtype, rtol=rtol)
    assert fast.optimizer_state.keys() == ref.optimizer_state.keys()
    for name in fast.optimizer_state:
        assert fast.optimizer_state[name].dtype == np.dtype(dtype)
        assert_close(fast.optimizer_state[name], ref.optimizer_state[name], dtype=dtype, rtol=rtol)
    assert fast.optimizer_steps == ref.optimizer_steps


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls, options", [pytest.param(c, o, id=f"{c.__name__}-{o}") for c, o in OPTIMIZERS_UNDER_TEST])
def test_optimizers_give_the_same_trajectory_in_both_backends(dtype, cls, options):
    X, y = regression_data(n=50)
    fast, ref = twin_networks([3, 8, 5, 2], dtype, activation="tanh", output_activation="sigmoid")
    h_fast = fast.fit(X, y, optimizer=cls(**options), epochs=4, batch_size=16)
    h_ref = ref.fit(X, y, optimizer=cls(**options), epochs=4, batch_size=16)
    assert fast.optimizer_steps == 16  # 4 batches (16, 16, 16, 2) per epoch
    assert_same_training_state(fast, ref, dtype)
    np.testing.assert_allclose(h_fast.loss, h_ref.loss, rtol=RTOL[np.dtype(dtype)])
    assert h_fast.loss[-1] < h_fast.loss[0]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("optimizer", [fastgd.Adam(lr=1e-3), fastgd.SGD(lr=0.05, momentum=0.9)], ids=["adam", "sgd"])
def test_large_layers_train_identically(dtype, optimizer):
    # Sizes that take the parallel blocked matrix products (>= PARALLEL_MIN_MACS).
    rng = np.random.default_rng(5)
    X = rng.normal(size=(700, 300))
    y = rng.integers(0, 10, size=700)
    fast, ref = twin_networks([300, 400, 10], dtype, activation="tanh", loss="crossentropy")
    h_fast = fast.fit(X, y, optimizer=optimizer, epochs=2, batch_size=300)
    h_ref = ref.fit(X, y, optimizer=type(optimizer)(**optimizer.get_config()), epochs=2, batch_size=300)
    if dtype is np.float32 and isinstance(optimizer, fastgd.Adam):
        # A float32 gradient summed over 300 rows in another order differs by rounding; where
        # the sum nearly cancels, that is a large *relative* difference, and Adam's update
        # m/sqrt(v) does not shrink with the gradient: such a parameter can move by a slightly
        # different fraction of lr. Allow 5% of the total movement (6 steps of lr) there.
        np.testing.assert_allclose(fast.flat_parameters, ref.flat_parameters, rtol=1e-5, atol=0.05 * 6 * optimizer.lr)
    else:
        assert_same_training_state(fast, ref, dtype)
    np.testing.assert_allclose(h_fast.loss, h_ref.loss, rtol=RTOL[np.dtype(dtype)])


def output_pairs():
    for loss in LOSSES.values():
        for output in [loss.required_output] if loss.required_output else list(ACTIVATIONS):
            yield pytest.param(output, loss.name, id=f"{output}-{loss.name}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden", [n for n, a in ACTIVATIONS.items() if not a.output_only])
@pytest.mark.parametrize("output, loss", list(output_pairs()))
def test_activations_and_losses_train_identically(dtype, hidden, output, loss):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(40, 4))
    y = rng.integers(0, 3, size=40) if loss == "crossentropy" else rng.uniform(size=(40, 3))
    fast, ref = twin_networks([4, 7, 3], dtype, activation=hidden, output_activation=output, loss=loss)
    h_fast = fast.fit(X, y, optimizer=fastgd.Adam(lr=0.01), epochs=3, batch_size=7)
    h_ref = ref.fit(X, y, optimizer=fastgd.Adam(lr=0.01), epochs=3, batch_size=7)
    assert_same_training_state(fast, ref, dtype)
    np.testing.assert_allclose(h_fast.loss, h_ref.loss, rtol=RTOL[np.dtype(dtype)])


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_full_batch_step_is_parameters_minus_lr_times_gradient(backend):
    X, y = regression_data()
    net = fastgd.Network([3, 5, 2], random_state=1, backend=backend)
    expected = [W - 0.3 * g for W, g in zip(net.weights, net.gradients(X, y).weights)]
    loss_before = net.loss(X, y)
    history = net.fit(X, y, optimizer=fastgd.SGD(lr=0.3), epochs=1)
    for W, e in zip(net.weights, expected):
        assert_close(W, e, dtype=np.float64)
    assert history.loss == [pytest.approx(loss_before, rel=1e-12)]


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_full_batch_history_is_the_loss_before_each_epoch(backend):
    X, y = regression_data()
    net = fastgd.Network([3, 5, 2], random_state=1, backend=backend)
    expected = []
    probe = net.copy()
    for _ in range(3):
        expected.append(probe.loss(X, y))
        probe.fit(X, y, optimizer=probe.optimizer or fastgd.SGD(lr=0.3), epochs=1)
    history = net.fit(X, y, optimizer=fastgd.SGD(lr=0.3), epochs=3)
    np.testing.assert_allclose(history.loss, expected, rtol=1e-12)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_unshuffled_mini_batches_are_consecutive_rows_with_the_remainder_last(backend):
    X, y = regression_data(n=10)
    net = fastgd.Network([3, 4, 2], random_state=2, backend=backend)
    manual = net.copy()
    for start in (0, 4, 8):  # batches of 4, 4 and the remaining 2
        grads = manual.gradients(X[start : start + 4], y[start : start + 4])
        for W, g in zip(manual.weights, grads.weights):
            W -= 0.2 * g
        for b, g in zip(manual.biases, grads.biases):
            b -= 0.2 * g
    net.fit(X, y, optimizer=fastgd.SGD(lr=0.2), epochs=1, batch_size=4, shuffle=False)
    assert net.optimizer_steps == 3
    assert_close(net.flat_parameters, manual.flat_parameters, dtype=np.float64)


def test_stochastic_gradient_descent_takes_one_step_per_row():
    X, y = regression_data(n=12)
    net = fastgd.Network([3, 4, 2], random_state=2)
    net.fit(X, y, optimizer=fastgd.SGD(lr=0.1), epochs=2, batch_size=1)
    assert net.optimizer_steps == 24


def test_shuffling_changes_the_order_and_is_seeded():
    X, y = regression_data(n=30)
    runs = []
    for shuffle, seed in [(True, 5), (True, 5), (True, 6), (False, 5)]:
        net = fastgd.Network([3, 4, 2], random_state=seed)
        net.weights[0][...] = 0.1  # same start for every run; only the order may differ
        net.weights[1][...] = -0.1
        net.fit(X, y, optimizer=fastgd.SGD(lr=0.1), epochs=2, batch_size=4, shuffle=shuffle)
        runs.append(net.flat_parameters.copy())
    np.testing.assert_array_equal(runs[0], runs[1])  # same random_state, same result
    assert not np.array_equal(runs[0], runs[2])
    assert not np.array_equal(runs[0], runs[3])


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_continuing_with_the_same_optimizer_equals_one_long_fit(backend):
    X, y = regression_data(n=30)
    once = fastgd.Network([3, 6, 2], random_state=4, backend=backend)
    twice = once.copy()
    once.fit(X, y, optimizer=fastgd.Adam(lr=0.01), epochs=6, batch_size=8)
    adam = fastgd.Adam(lr=0.01)
    twice.fit(X, y, optimizer=adam, epochs=2, batch_size=8)
    twice.fit(X, y, optimizer=adam, epochs=3, batch_size=8)
    twice.fit(X, y, epochs=1, batch_size=8)  # None continues with net.optimizer
    np.testing.assert_array_equal(once.flat_parameters, twice.flat_parameters)
    np.testing.assert_array_equal(once.optimizer_state["exp_avg"], twice.optimizer_state["exp_avg"])
    assert twice.epochs_trained == 6


def test_a_new_optimizer_starts_fresh_state():
    X, y = regression_data(n=20)
    net = fastgd.Network([3, 4, 2], random_state=4)
    net.fit(X, y, optimizer=fastgd.Adam(lr=0.01), epochs=2)
    assert net.optimizer_steps == 2
    net.fit(X, y, optimizer=fastgd.Adam(lr=0.01), epochs=1)
    assert net.optimizer_steps == 1


def test_sample_weights_equal_duplicated_rows():
    X, y = regression_data(n=9)
    counts = np.array([1, 2, 1, 3, 1, 1, 2, 1, 1])
    weighted = fastgd.Network([3, 4, 2], random_state=8)
    duplicated = weighted.copy()
    h_w = weighted.fit(X, y, optimizer=fastgd.SGD(lr=0.5), epochs=5, sample_weight=counts)
    h_d = duplicated.fit(
        np.repeat(X, counts, axis=0), np.repeat(y, counts, axis=0), optimizer=fastgd.SGD(lr=0.5), epochs=5
    )
    assert_close(weighted.flat_parameters, duplicated.flat_parameters, dtype=np.float64)
    np.testing.assert_allclose(h_w.loss, h_d.loss, rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_float32_stays_float32(dtype, backend):
    X, y = regression_data()
    net = fastgd.Network([3, 5, 2], dtype=dtype, random_state=0, backend=backend)
    net.fit(X, y, optimizer=fastgd.Adam(), epochs=2, batch_size=10)
    assert net.predict(X).dtype == dtype
    assert all(W.dtype == dtype for W in net.weights) and all(b.dtype == dtype for b in net.biases)
    assert all(g.dtype == dtype for g in net.gradients(X, y).weights)
    assert all(s.dtype == dtype for s in net.optimizer_state.values())


def test_weights_and_biases_are_views_into_the_network():
    net = fastgd.Network([2, 3, 1], random_state=0)
    X = np.array([[1.0, 2.0]])
    net.weights[0][...] = 0.0
    net.biases[0][...] = 0.0
    net.weights[1] = np.ones((3, 1))  # assignment by index writes through too
    net.biases[1][0] = 0.25
    # hidden sigmoid(0) = 0.5 each; output sigmoid(3 * 0.5 + 0.25)
    assert net.predict(X)[0, 0] == pytest.approx(1 / (1 + np.exp(-1.75)), rel=1e-15)
    assert net.flat_parameters[-1] == 0.25
    with pytest.raises(ValueError, match="shape"):
        net.weights[1] = np.ones((1, 3))


@pytest.mark.parametrize("init", ["uniform", "xavier_uniform", "xavier_normal", "he_uniform", "he_normal"])
def test_initializers_have_the_documented_scale(init):
    net = fastgd.Network([400, 300, 1], init=init, random_state=0)
    W = net.weights[0]
    expected_std = {
        "uniform": 1 / np.sqrt(3),
        "xavier_uniform": np.sqrt(2 / 700),
        "xavier_normal": np.sqrt(2 / 700),
        "he_uniform": np.sqrt(2 / 400),
        "he_normal": np.sqrt(2 / 400),
    }[init]
    assert W.std() == pytest.approx(expected_std, rel=0.02)
    assert abs(W.mean()) < 0.01
    assert not net.biases[0].any()
    if init == "uniform":
        assert W.min() >= -1 and W.max() < 1


def test_legacy_random_state_reproduces_numpys_global_generator():
    np.random.seed(42)
    W1 = np.random.uniform(-1, 1, (2, 4))
    W2 = np.random.uniform(-1, 1, (4, 1))
    net = fastgd.Network([2, 4, 1], init="uniform", random_state=np.random.RandomState(42))
    np.testing.assert_array_equal(net.weights[0], W1)
    np.testing.assert_array_equal(net.weights[1], W2)


def test_predict_walks_large_inputs_in_blocks():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20000, 3))
    net = fastgd.Network([3, 4, 2], random_state=0)
    expected = np.concatenate([net.predict(X[i : i + 1000]) for i in range(0, 20000, 1000)])
    np.testing.assert_array_equal(net.predict(X), expected)


def test_crossentropy_accepts_labels_or_one_hot():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 3))
    labels = rng.integers(0, 4, size=12)
    net = fastgd.Network([3, 5, 4], loss="crossentropy", random_state=0)
    assert net.output_activation == "softmax"
    assert net.loss(X, labels) == pytest.approx(net.loss(X, np.eye(4)[labels]), rel=1e-15)
    probabilities = net.predict(X)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-12)
    expected = -np.mean(np.log(probabilities[np.arange(12), labels]))
    assert net.loss(X, labels) == pytest.approx(expected, rel=1e-12)


def test_loss_definitions():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(6, 3))
    y = rng.uniform(size=(6, 2))
    for loss, formula in [
        ("sse", lambda a: 0.5 * ((a - y) ** 2).sum()),
        ("mse", lambda a: ((a - y) ** 2).sum() / (2 * len(y))),
        ("binary_crossentropy", lambda a: -(y * np.log(a) + (1 - y) * np.log(1 - a)).sum(axis=1).mean()),
    ]:
        net = fastgd.Network([3, 4, 2], loss=loss, random_state=0)
        assert net.loss(X, y) == pytest.approx(formula(net.predict(X)), rel=1e-12), loss


def test_zero_epochs_trains_nothing():
    X, y = regression_data()
    net = fastgd.Network([3, 4, 2], random_state=0)
    before = net.flat_parameters.copy()
    assert net.fit(X, y, epochs=0).loss == []
    np.testing.assert_array_equal(net.flat_parameters, before)


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-12), ("float32", 1e-4)])
def test_grad_shards_change_only_the_rounding(dtype, rtol):
    # What data-parallel training on P ranks computes (bitwise, see test_distributed.py) is each
    # batch's gradient as a sum of P shard gradients: the same mathematics as one shard, summed
    # in another order. After 3 epochs of Adam (48 steps) the parameters agree to rounding
    # (float32: Adam's division by sqrt(v) amplifies last-bit differences of small gradients).
    rng = np.random.default_rng(11)
    X = rng.normal(size=(160, 5))
    y = np.tanh(X @ rng.normal(size=(5, 2)))
    trained = {}
    for shards in (1, 2, 3, 4):
        net = fastgd.Network([5, 7, 2], activation="tanh", loss="mse", dtype=dtype, random_state=1, l2=1e-3)
        net.fit(X, y, optimizer=fastgd.Adam(lr=0.01), epochs=3, batch_size=10, grad_shards=shards)
        trained[shards] = net.flat_parameters.copy()
    for shards in (2, 3, 4):
        np.testing.assert_allclose(trained[shards], trained[1], rtol=rtol, atol=rtol * 1e-2)
    assert not all(np.array_equal(trained[shards], trained[1]) for shards in (2, 3, 4)), (
        "the shards were not summed apart"
    )
