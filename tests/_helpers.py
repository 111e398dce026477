"""Shared helpers for the test suite: tolerances per dtype, comparisons, data."""

import numpy as np

from fastgd import History

# Relative tolerances for Numba-vs-NumPy comparisons. The kernels are built with reassociation
# and FMA contraction allowed (see kernels/config.py, FASTMATH_FLAGS), so sums may be added in another
# order than NumPy's: a few ulps per operation, which is ~1e-15 in float64 and ~1e-7 in float32;
# the tolerances leave room for that to accumulate over a handful of dependent steps.
RTOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5}

DTYPES = [np.float32, np.float64]


def assert_close(actual, expected, dtype=None, rtol=None, scale=None):
    """Elementwise relative comparison; values near zero are compared against ``scale``
    (default: the largest magnitude in ``expected``, at least 1)."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    dtype = np.dtype(dtype or expected.dtype)
    rtol = RTOL[dtype] if rtol is None else rtol
    if scale is None:
        scale = max(1.0, float(np.max(np.abs(expected))) if expected.size else 1.0)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


def regression_data(n=50, n_in=3, n_out=2, seed=0):
    """A small smooth regression problem with targets in (0, 1)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_in))
    y = 1 / (1 + np.exp(-X @ rng.normal(size=(n_in, n_out))))
    return X, y


def train_parallel_sized(seed, backend):
    """Train a float32 network big enough for the parallel matrix-product kernels, with
    validation so that fit makes one compiled call per epoch; returns the parameters.

    Module-level, so that multiprocessing can run it in a spawned child.
    """
    import fastgd

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(512, 128)).astype(np.float32)
    Y = rng.uniform(size=(512, 64)).astype(np.float32)
    net = fastgd.Network([128, 256, 64], dtype="float32", random_state=seed, backend=backend)
    net.fit(X, Y, optimizer=fastgd.Adam(lr=1e-3), epochs=4, batch_size=256, validation_data=(X[:64], Y[:64]))
    return net.flat_parameters.copy()


def paths(architecture, dtype, rows):
    """The matrix-product paths ("loops", "tiles", "blas") the passes of ``architecture`` take
    for a batch of ``rows`` rows (``kernels.products.path``, as ``kernels.passes`` asks it):
    each layer's forward product, weight gradient and local gradient below it."""
    from fastgd.kernels import products

    names = {products.LOOPS: "loops", products.TILES: "tiles", products.BLAS: "blas"}
    lanes = 32 // np.dtype(dtype).itemsize
    found = set()
    for layer, record in enumerate(architecture.layers):
        n_in, n_out = int(record["n_in"]), int(record["n_out"])
        found.add(names[products.path(architecture.blas, products.NN, rows, n_out, n_in, lanes)])
        found.add(names[products.path(architecture.blas, products.TN, n_in, n_out, rows, lanes)])
        if layer > 0:
            found.add(names[products.path(architecture.blas, products.NN, rows, n_in, n_out, lanes)])
    return found


def state_of(net):
    """Everything training changes, as plain copies."""
    return (
        net.flat_parameters.copy(),
        {k: v.copy() for k, v in net.optimizer_state.items()},
        net.optimizer_steps,
        net.epochs_trained,
        net.optimizer,
        {field: list(getattr(net.history, field)) for field in History.FIELDS},
    )


def assert_same_state(net, before):
    params, opt_state, steps, epochs, optimizer, history = before
    np.testing.assert_array_equal(net.flat_parameters, params)
    assert net.optimizer_state.keys() == opt_state.keys()
    for key in opt_state:
        np.testing.assert_array_equal(net.optimizer_state[key], opt_state[key])
    assert (net.optimizer_steps, net.epochs_trained, net.optimizer) == (steps, epochs, optimizer)
    assert {field: list(getattr(net.history, field)) for field in History.FIELDS} == history


def flat_gradient(net, gradients):
    """``net.gradients(...)`` laid out as the flat parameter buffer (a copy)."""
    holder = net.copy(backend="numpy")
    for k, (W, b) in enumerate(zip(gradients.weights, gradients.biases)):
        holder.weights[k][...] = W
        holder.biases[k][...] = b
    return holder.flat_parameters.copy()


def junk(*more):
    """A hypothesis strategy for values no argument should take (None, bools, huge ints, any
    float, short text, lists, a NumPy scalar, an object), plus ``more`` strategies."""
    from hypothesis import strategies as st

    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=3),
        st.lists(st.integers(0, 3), max_size=3),
        st.just(np.float32(0.5)),
        st.just(object()),
        *more,
    )
