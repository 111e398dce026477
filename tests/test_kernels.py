"""Every Numba kernel against its NumPy twin of the same name and signature."""

import inspect
import os

import numpy as np
import pytest
from _helpers import DTYPES, RTOL, assert_close
from numba import njit

import fastgd
from fastgd import kernels, reference
from fastgd.kernels import activations as acts_codes
from fastgd.kernels import layout
from fastgd.kernels import losses as loss_codes
from fastgd.kernels import optim as opt_codes
from fastgd.kernels import optim as sched_codes  # the schedules' codes live beside the optimizers'
from fastgd.kernels.mathfn import fast_exp, fast_log1p, fast_tanh
from fastgd.optimizers import OPTIMIZERS_UNDER_TEST
from fastgd.registry import ACTIVATIONS, LOSSES

ELEMENTWISE = [a for a in ACTIVATIONS.values() if a.value is not None]  # (softmax is a row operation)
# Shapes include a single row, single columns, odd sizes that are not multiples of the thread
# count, and sizes for each matrix-product path (fastgd._config): loops, one BLAS call, and
# parallel blocks (rows * n_in * n_out >= PARALLEL_MIN_MACS), with odd block counts and rows.
# (a table, one entry a line: the formatter would break its entries apart)
# fmt: off
LAYER_SHAPES = [
    (1, 1, 1), (1, 3, 5), (4, 2, 4), (7, 5, 3), (33, 17, 9), (65, 70, 33), (128, 64, 40),
    (301, 131, 67), (515, 390, 7), (130, 257, 129),
]
# fmt: on


def _copy(value):
    # Arrays copied; the kernels' bundles (NamedTuples of arrays and scalars) field by field.
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(_copy(field) for field in value))
    return value


def call_both(name, *args):
    """Call kernels.<name> and reference.<name> on separate copies of ``args``.

    Returns the two argument lists after the call (kernels write their outputs in place) and the
    two return values.
    """
    fast_args = [_copy(a) for a in args]
    ref_args = [_copy(a) for a in args]
    fast_result = getattr(kernels, name)(*fast_args)
    ref_result = getattr(reference, name)(*ref_args)
    return fast_args, ref_args, fast_result, ref_result


def assert_same_arrays(fast_args, ref_args, dtype, rtol=None):
    for index, (fast, ref) in enumerate(zip(fast_args, ref_args)):
        if isinstance(fast, np.ndarray):
            assert fast.dtype == ref.dtype, f"argument {index}: dtype {fast.dtype} vs {ref.dtype}"
            assert_close(fast, ref, dtype=dtype, rtol=rtol)


def test_every_kernel_has_a_twin_with_the_same_signature():
    assert len(kernels.KERNEL_NAMES) == len(set(kernels.KERNEL_NAMES))
    for name in kernels.KERNEL_NAMES:
        fast = getattr(kernels, name)
        twin = getattr(reference, name)
        # optimizer_step and train_epochs are Python functions choosing a compiled specialisation
        assert inspect.signature(getattr(fast, "py_func", fast)) == inspect.signature(twin), name


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", list(ACTIVATIONS.values()), ids=lambda a: a.name)
@pytest.mark.parametrize("shape", [(1, 1), (1, 6), (3, 7), (17, 2), (31, 65)])
def test_activate(rng, dtype, activation, shape):
    if activation.name == "softmax" and shape[1] < 2:
        pytest.skip("softmax needs two columns")
    z = (3 * rng.normal(size=shape)).astype(dtype)
    fast, ref, _, _ = call_both("activate", z, np.empty_like(z), activation.code)
    assert fast[1].dtype == dtype
    assert_same_arrays(fast, ref, dtype)


def test_float32_exp_and_tanh_are_accurate():
    # The vectorisable float32 exp/tanh (kernels/mathfn.py) against NumPy's float64 ones over
    # the whole useful range, including the edges where exp overflows or underflows.
    x = np.concatenate([np.linspace(-110, 95, 400_001), [0.0, -0.0, 1e-30, -1e-30, 0.625, -0.625]]).astype(np.float32)
    exp_out, tanh_out = np.empty_like(x), np.empty_like(x)
    exp_and_tanh(x, exp_out, tanh_out)
    with np.errstate(over="ignore"):
        exp_true = np.exp(x.astype(np.float64)).astype(np.float32)  # correctly rounded to float32
    tanh_true = np.tanh(x.astype(np.float64))
    finite = np.isfinite(exp_true) & (exp_true > np.finfo(np.float32).tiny)
    eps32 = np.finfo(np.float32).eps
    assert np.max(np.abs(exp_out[finite] / exp_true[finite] - 1)) < 4 * eps32
    assert np.array_equal(np.isinf(exp_out), np.isinf(exp_true))
    assert (exp_out[x < -104] == 0).all()
    assert np.max(np.abs(tanh_out - tanh_true) / np.maximum(np.abs(tanh_true), 1e-30)) < 4 * eps32
    special = np.array([np.nan, np.inf, -np.inf], np.float32)
    e, t = np.empty_like(special), np.empty_like(special)
    exp_and_tanh(special, e, t)
    assert np.isnan(e[0]) and np.isnan(t[0])
    assert e[1] == np.inf and e[2] == 0 and t[1] == 1 and t[2] == -1


# (as the kernels are compiled: error_model="numpy", a division by zero gives inf, not an exception)
@njit(error_model="numpy")
def exp_and_tanh(x, exp_out, tanh_out):
    for i in range(x.size):
        exp_out[i] = fast_exp(x[i])
        tanh_out[i] = fast_tanh(x[i])


@njit(error_model="numpy")
def apply_log1p(x, out):
    for i in range(x.size):
        out[i] = fast_log1p(x[i])


def ulps(got, want):
    """|got − want| in units of the last place of ``want`` (float64), where both are finite."""
    both = np.isfinite(got) & np.isfinite(want)
    return np.abs(got[both] - want[both]) / np.spacing(np.maximum(np.abs(want[both]), np.finfo(np.float64).tiny))


def float64_arguments(rng, low, high):
    # Every float64 exponent in [low, high] (magnitudes 2^e for e over the whole range, both
    # signs), a million uniform draws, and the edges.
    magnitudes = np.ldexp(1.0 + rng.uniform(size=2046 * 8), np.repeat(np.arange(-1022, 1024), 8))
    x = np.concatenate([magnitudes, -magnitudes, rng.uniform(low, high, 1_000_000)])
    return x[(x >= low) & (x <= high)]


def test_float64_exp_tanh_and_log1p_are_within_two_ulp_of_libm():
    # The vectorisable float64 versions (kernels/mathfn.py) against NumPy's (libm's), over the
    # whole range: the user guide (docs/user_guide/networks.rst) states these bounds.
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [float64_arguments(rng, -746.0, 710.0), [0.0, -0.0, 709.78, 709.79, -745.13, -745.14, 1e-310, -1e-310]]
    )
    exp_out, tanh_out = np.empty_like(x), np.empty_like(x)
    exp_and_tanh(x, exp_out, tanh_out)
    with np.errstate(over="ignore"):
        exp_true = np.exp(x)
    assert ulps(exp_out, exp_true).max() <= 2 and np.array_equal(np.isinf(exp_out), np.isinf(exp_true))
    assert np.array_equal(exp_out == 0, exp_true == 0)
    assert ulps(tanh_out, np.tanh(x)).max() <= 2 and np.abs(tanh_out).max() <= 1
    u = np.concatenate(
        [
            float64_arguments(rng, -1.0, np.finfo(np.float64).max),
            rng.uniform(0, 1, 1_000_000),
            [0.0, -0.0, -1.0, 5e-324],
        ]
    )
    log_out = np.empty_like(u)
    apply_log1p(u, log_out)
    with np.errstate(divide="ignore"):
        log_true = np.log1p(u)
    assert ulps(log_out, log_true).max() <= 2 and log_out[u == -1.0].tolist() == [-np.inf]
    special = np.array([np.nan, np.inf, -np.inf])
    e, t, lg = np.empty(3), np.empty(3), np.empty(3)
    exp_and_tanh(special, e, t)
    apply_log1p(special, lg)
    assert np.isnan(e[0]) and np.isnan(t[0]) and np.isnan(lg[0]) and np.isnan(lg[2])
    assert e[1] == np.inf and e[2] == 0 and t[1] == 1 and t[2] == -1 and lg[1] == np.inf


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_pass_propagates_nan_through_relu(dtype):
    # The passes have their own relu; a NaN input must reach the loss (divergence has to stay
    # visible), not be clipped to 0 as Numba's max(0, NaN) would.
    net = fastgd.Network(
        [2, 3, 1], activation="relu", output_activation="identity", loss="mse", dtype=dtype, random_state=0
    )
    X = np.array([[np.nan, 1.0], [0.5, -1.0]], dtype=dtype)
    Y = np.zeros((2, 1), dtype=dtype)
    buffers = layout.make_buffers(net.architecture, 2, dtype)
    row_scale = np.full(2, 0.5, dtype=dtype)
    grads = np.zeros_like(net.flat_parameters)
    value = kernels.forward_backward(
        net.flat_parameters, grads, net.architecture, X, Y, row_scale, buffers, net.loss_code, 0.0, 0.0
    )
    hidden = layout.block_of(buffers.acts, net.architecture, 0, 2)
    assert np.isnan(hidden[0]).all()  # row 0 of the hidden layer
    assert np.isfinite(hidden[1]).all()
    assert np.isnan(value)


@pytest.mark.parametrize("dtype", DTYPES)
def test_activate_in_place_and_extremes(dtype):
    # Large |z| must saturate, not overflow into NaN; relu must pass NaN through (divergence
    # has to stay visible).
    z = np.array([[-1e4, -50.0, 0.0, 50.0, 1e4]], dtype=dtype)
    for act in (acts_codes.SIGMOID, acts_codes.TANH, acts_codes.SOFTMAX):
        out = z.copy()
        kernels.activate(out, out, act)
        assert np.isfinite(out).all(), act
    nan = np.array([[np.nan, 1.0]], dtype=dtype)
    out = np.empty_like(nan)
    kernels.activate(nan, out, acts_codes.RELU)
    assert np.isnan(out[0, 0]) and out[0, 1] == 1


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", list(ACTIVATIONS.values()), ids=lambda a: a.name)
@pytest.mark.parametrize("rows, n_in, n_out", LAYER_SHAPES)
def test_dense_forward_and_linear(rng, dtype, activation, rows, n_in, n_out):
    if activation.name == "softmax" and n_out < 2:
        pytest.skip("softmax needs two outputs")
    a_in = rng.normal(size=(rows, n_in)).astype(dtype)
    W = rng.normal(size=(n_in, n_out)).astype(dtype)
    b = rng.normal(size=n_out).astype(dtype)
    out = np.empty((rows, n_out), dtype=dtype)
    fast, ref, _, _ = call_both("dense_forward", a_in, W, b, out, activation.code)
    assert_same_arrays(fast, ref, dtype)
    fast, ref, _, _ = call_both("dense_linear", a_in, W, b, out)
    assert_same_arrays(fast, ref, dtype)
    # Not just twins of each other: the linear part is the matrix product.
    assert_close(fast[3], a_in.astype(np.float64) @ W + b, dtype=dtype, rtol=RTOL[np.dtype(dtype)] * 10)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ELEMENTWISE, ids=lambda a: a.name)
@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (40, 33)])
def test_activation_derivative(rng, dtype, activation, shape):
    z = (2 * rng.normal(size=shape)).astype(dtype)
    a = np.empty_like(z)
    reference.activate(z, a, activation.code)
    fast, ref, _, _ = call_both("activation_derivative", z, a, np.empty_like(a), activation.code)
    assert fast[2].dtype == dtype
    assert_same_arrays(fast, ref, dtype)
    # And it is the derivative: compare with a central difference of f in float64.
    h = 1e-6
    z64 = z.astype(np.float64)
    plus, minus = np.empty_like(z64), np.empty_like(z64)
    reference.activate(z64 + h, plus, activation.code)
    reference.activate(z64 - h, minus, activation.code)
    numeric = (plus - minus) / (2 * h)
    smooth = np.abs(z64) > 1e-3  # away from the relu kink
    np.testing.assert_allclose(fast[2][smooth], numeric[smooth], rtol=1e-3, atol=1e-3)


def output_case(rng, dtype, activation, loss, rows, n_out):
    """z, a = f(z), targets valid for the loss, and row scales for a mean loss."""
    z = (2 * rng.normal(size=(rows, n_out))).astype(dtype)
    a = np.empty_like(z)
    reference.activate(z, a, activation.code)
    if loss.name == "crossentropy":
        y = np.eye(n_out, dtype=dtype)[rng.integers(0, n_out, size=rows)]
    else:
        y = rng.uniform(size=(rows, n_out)).astype(dtype)
    scale = np.full(rows, 1.0 / rows if loss.mean else 1.0, dtype=dtype)
    return z, a, y, scale


def valid_pairs():
    for loss in LOSSES.values():
        for activation in ACTIVATIONS.values():
            if loss.required_output in (None, activation.name):
                yield pytest.param(activation, loss, id=f"{activation.name}-{loss.name}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation, loss", list(valid_pairs()))
@pytest.mark.parametrize("rows, n_out", [(1, 2), (7, 3), (64, 10)])
def test_loss_value_and_output_delta(rng, dtype, activation, loss, rows, n_out):
    z, a, y, scale = output_case(rng, dtype, activation, loss, rows, n_out)
    fast, ref, fast_value, ref_value = call_both("loss_value", z, a, y, scale, loss.code)
    assert isinstance(fast_value, float)
    # Sums are float64 in both, but the kernel takes the exponentials of a float32 network in
    # float32 (vectorised), the reference in float64: float32 rounding, hence the dtype tolerance.
    assert fast_value == pytest.approx(ref_value, rel=RTOL[np.dtype(dtype)])
    fast, ref, _, _ = call_both("output_delta", z, a, y, scale, np.empty_like(a), activation.code, loss.code)
    assert fast[4].dtype == dtype
    assert_same_arrays(fast, ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ELEMENTWISE, ids=lambda a: a.name)
@pytest.mark.parametrize("rows, n, n_next", LAYER_SHAPES)
def test_hidden_delta(rng, dtype, activation, rows, n, n_next):
    z = rng.normal(size=(rows, n)).astype(dtype)
    a = np.empty_like(z)
    reference.activate(z, a, activation.code)
    delta_next = rng.normal(size=(rows, n_next)).astype(dtype)
    W_next = rng.normal(size=(n, n_next)).astype(dtype)
    fast, ref, _, _ = call_both("hidden_delta", delta_next, W_next, z, a, np.empty_like(a), activation.code)
    assert fast[4].dtype == dtype
    assert_same_arrays(fast, ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows, n_in, n_out", LAYER_SHAPES)
def test_dense_gradients(rng, dtype, rows, n_in, n_out):
    a_in = rng.normal(size=(rows, n_in)).astype(dtype)
    delta = rng.normal(size=(rows, n_out)).astype(dtype)
    gW, gb = np.full((n_in, n_out), np.nan, dtype), np.full(n_out, np.nan, dtype)
    fast, ref, _, _ = call_both("dense_gradients", a_in, delta, gW, gb)
    assert fast[2].dtype == dtype and fast[3].dtype == dtype
    assert_same_arrays(fast, ref, dtype)
    assert_close(fast[2], a_in.astype(np.float64).T @ delta, dtype=dtype, rtol=RTOL[np.dtype(dtype)] * 10)


# The individual optimizer kernels, with their arguments in the flat signature order.
def optimizer_cases():
    for cls, options in OPTIMIZERS_UNDER_TEST:
        yield pytest.param(cls, options, id=f"{cls.__name__}-{options}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 7, 1001, 100_003])
@pytest.mark.parametrize("cls, options", list(optimizer_cases()))
def test_optimizer_step_kernels(rng, dtype, n, cls, options):
    opt = cls(**options)
    p = rng.normal(size=n).astype(dtype)
    state = opt.initial_state(n, dtype)
    # Per-optimizer kernel called directly, through the dispatcher's argument mapping.
    fast_p, ref_p = p.copy(), p.copy()
    fast_state, ref_state = state.copy(), state.copy()
    for step in range(1, 6):
        g = rng.normal(size=n).astype(dtype)
        kernels.optimizer_step(opt.code, fast_p, g, fast_state, step, opt.lr, opt.hyper_vector())
        reference.optimizer_step(opt.code, ref_p, g, ref_state, step, opt.lr, opt.hyper_vector())
    assert fast_p.dtype == dtype and fast_state.dtype == dtype
    assert_close(fast_p, ref_p, dtype=dtype)
    assert_close(fast_state, ref_state, dtype=dtype)
    assert not np.array_equal(fast_p, p), "the step must move the parameters"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls, options", list(optimizer_cases()))
def test_optimizer_step_over_shards_equals_one_step_bit_for_bit(rng, dtype, cls, options):
    # Threads and MPI ranks each step a shard of the parameters; the bounds move with their
    # counts, so an element must get the same bits in a vectorised body as in a scalar remainder
    # (with LLVM's ``contract`` flag, float32 AdamW differed by one ulp here).
    n = 1001
    opt = cls(**options)
    p0, state0 = rng.normal(size=n).astype(dtype), opt.initial_state(n, dtype)
    grads = [rng.normal(size=n).astype(dtype) for _ in range(6)]
    results = []
    for bounds in [(0, n), (0, 7, 50, 501, n), (0, 1, 2, 3, 64, 999, n), (0, 333, 666, 999, n)]:
        p, state = p0.copy(), state0.copy()
        for step, g in enumerate(grads, start=1):
            for first, stop in zip(bounds[:-1], bounds[1:]):
                shard_p, shard_state = p[first:stop].copy(), np.ascontiguousarray(state[:, first:stop])
                kernels.optimizer_step(
                    opt.code, shard_p, g[first:stop].copy(), shard_state, step, opt.lr, opt.hyper_vector()
                )
                p[first:stop], state[:, first:stop] = shard_p, shard_state
        results.append((p, state))
    assert not np.array_equal(results[0][0], p0)
    for p, state in results[1:]:
        assert np.array_equal(p, results[0][0]) and np.array_equal(state, results[0][1], equal_nan=True)


@njit
def _update_chunk(code, params, grads, state, first, stop, step, lr, hyper):
    # The compiled update the training loop runs over one chunk of the flat buffers.
    opt_codes.update(code, params, grads, state, first, stop, step, lr, hyper)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls, options", list(optimizer_cases()))
def test_the_compiled_update_of_a_chunk_is_the_declared_rule_on_it(rng, dtype, cls, options):
    # kernels.optim.update (one branch per declaration, element by element) over elements
    # [first, stop) of whole buffers: inside, the declared rule run by the NumPy twin on the
    # slice (optim.step: the same rule on whole arrays); outside, nothing touched. Every state
    # row the declaration names is the twin's too.
    n, first, stop = 37, 5, 30
    opt = cls(**options)
    spec = opt_codes.SPECS[opt.code]
    hyper = np.zeros(opt_codes.HYPER_WIDTH)
    hyper[: len(spec.hyper)] = opt.hyper_vector()
    p, state = rng.normal(size=n).astype(dtype), opt.initial_state(n, dtype)
    assert state.shape == (len(spec.state), n)
    fast_p, fast_state = p.copy(), state.copy()
    twin_p, twin_state = p[first:stop].copy(), np.ascontiguousarray(state[:, first:stop])
    for step in (1, 2, 3):
        g = rng.normal(size=n).astype(dtype)
        _update_chunk(opt.code, fast_p, g, fast_state, first, stop, step, opt.lr, hyper)
        opt_codes.step(opt.code, twin_p, g[first:stop].copy(), twin_state, step, opt.lr, hyper)
    assert_close(fast_p[first:stop], twin_p, dtype=dtype)
    assert_close(fast_state[:, first:stop], twin_state, dtype=dtype)
    assert not np.array_equal(fast_p[first:stop], p[first:stop]), spec.name
    outside = np.r_[0:first, stop:n]
    np.testing.assert_array_equal(fast_p[outside], p[outside])
    np.testing.assert_array_equal(fast_state[:, outside], state[:, outside])


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_step_by_hand(dtype):
    # Hand-computed first Adam step: m = 0.1 g, v = 0.001 g², p -= lr * sign(g) (up to eps).
    p, g = np.ones(3, dtype), np.array([0.5, -2.0, 1e-3], dtype)
    adam = fastgd.Adam(lr=0.1, betas=(0.9, 0.999), eps=1e-8)
    state = adam.initial_state(3, dtype)  # exp_avg, exp_avg_sq, max_exp_avg_sq
    kernels.optimizer_step(adam.code, p, g, state, 1, 0.1, adam.hyper_vector())
    assert p.dtype == dtype and state.dtype == dtype
    np.testing.assert_allclose(p, 1 - 0.1 * np.sign(g), rtol=1e-4)
    np.testing.assert_allclose(state[0], 0.1 * g, rtol=1e-6)
    np.testing.assert_allclose(state[1], 0.001 * g.astype(np.float64) ** 2, rtol=1e-5)


def network_case(rng, dtype, sizes, activation_codes, rows):
    architecture = layout.make_architecture(sizes, activation_codes)
    params = (0.5 * rng.normal(size=architecture.n_params)).astype(dtype)
    capacity = rows + 3  # buffers larger than the batch, as in training
    x = rng.normal(size=(rows, sizes[0])).astype(dtype)
    return architecture, params, capacity, x


# (sizes, rows): tiny products (loops), the micro-kernel, and BLAS-sized ones split in blocks.
NETWORK_SHAPES = [((3, 1, 2), 1), ((5, 7, 3), 9), ((20, 64, 33, 4), 70), ((300, 400, 10), 260)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation, loss", list(valid_pairs()))
@pytest.mark.parametrize("sizes, rows", NETWORK_SHAPES)
def test_forward_backward(rng, dtype, activation, loss, sizes, rows):
    hidden = acts_codes.TANH if activation.output_only else activation.code
    architecture, params, capacity, x = network_case(
        rng, dtype, sizes, [hidden] * (len(sizes) - 2) + [activation.code], rows
    )
    _, a, y, scale = output_case(rng, dtype, activation, loss, rows, sizes[-1])
    buffers = layout.make_buffers(architecture, capacity, dtype)
    for field in buffers:
        field[...] = 0
    grads = np.zeros_like(params)
    for n_threads in (1, 2):
        fast, ref, fast_loss, ref_loss = call_both(
            "forward_backward", params, grads, architecture, x, y, scale, buffers, loss.code, 0.01, 0.02, n_threads
        )
        assert fast_loss == pytest.approx(ref_loss, rel=RTOL[np.dtype(dtype)])
        assert_same_arrays(
            [fast[1], fast[6].acts, fast[6].deltas, fast[6].zs],
            [ref[1], ref[6].acts, ref[6].deltas, ref[6].zs],
            dtype,
        )
        # A slope f'(z) inherits the product's rounding in z (summed in another order than
        # NumPy's): f''(z)·δz, with |f''| <= 1 for every activation and δz up to rtol times the
        # layer's largest |z|, not the slopes' own scale (about 1). Seen: float32 GELU, 300 inputs,
        # AVX2, 3.7e-5 off where z ~ 20. So the slopes' scale is the activations' (~|z|).
        assert_close(fast[6].slopes, ref[6].slopes, dtype=dtype, scale=max(1.0, float(np.max(np.abs(ref[6].acts)))))
        fast, ref, fast_loss, ref_loss = call_both(
            "evaluate_loss", params, architecture, x, y, scale, buffers, loss.code, n_threads
        )
        assert fast_loss == pytest.approx(ref_loss, rel=RTOL[np.dtype(dtype)])
        fast, ref, _, _ = call_both("forward", params, architecture, x, buffers, loss.code, n_threads)
        assert_same_arrays([fast[3].acts, fast[3].zs], [ref[3].acts, ref[3].zs], dtype)


SCHEDULE_CASES = [
    # (code, parameters, hand-computed lr at steps 1..6 for base lr 0.1)
    (sched_codes.SCHEDULE_CONSTANT, [0, 0], [0.1] * 6),
    (sched_codes.SCHEDULE_STEP, [2, 0.5], [0.1, 0.1, 0.05, 0.05, 0.025, 0.025]),
    (sched_codes.SCHEDULE_EXPONENTIAL, [0.9, 0], [0.1 * 0.9**k for k in range(6)]),
    (sched_codes.SCHEDULE_INVERSE_SCALING, [0.5, 0], [0.1 / np.sqrt(t) for t in range(1, 7)]),
    (sched_codes.SCHEDULE_COSINE, [4, 0.02], [0.1, 0.0883, 0.06, 0.0317, 0.02, 0.02]),
]
# The sample inverse scaling (scikit-learn's invscaling) changes once an epoch: (rows, offset,
# power) = (4, 0, 0.5) gives lr / (1 + 4e)^0.5 in epoch e, whatever the step.
EPOCH_CASES = [(0, 0.1), (1, 0.1 / np.sqrt(5)), (2, 0.1 / 3), (7, 0.1 / np.sqrt(29))]


@pytest.mark.parametrize("epoch, expected", EPOCH_CASES)
def test_sample_inverse_scaling_changes_once_an_epoch(epoch, expected):
    parameters = np.zeros(sched_codes.SCHEDULE_WIDTH)
    names = sched_codes.SCHEDULES[sched_codes.SCHEDULE_SAMPLE_INVERSE_SCALING].parameters  # the declared layout
    parameters[names.index("power")], parameters[names.index("rows")], parameters[names.index("offset")] = 0.5, 4, 0
    for step in (1, 3, 50):
        fast = kernels.scheduled_lr(sched_codes.SCHEDULE_SAMPLE_INVERSE_SCALING, 0.1, step, parameters, epoch)
        ref = reference.scheduled_lr(sched_codes.SCHEDULE_SAMPLE_INVERSE_SCALING, 0.1, step, parameters, epoch)
        assert fast == pytest.approx(expected, rel=1e-15) and ref == pytest.approx(expected, rel=1e-15)


@pytest.mark.parametrize("code, parameters, expected", SCHEDULE_CASES)
def test_scheduled_lr_matches_hand_computed_values(code, parameters, expected):
    for step, want in enumerate(expected, start=1):
        fast = kernels.scheduled_lr(code, 0.1, step, np.array(parameters, dtype=float))
        ref = reference.scheduled_lr(code, 0.1, step, np.array(parameters, dtype=float))
        assert fast == pytest.approx(want, abs=5e-5) and fast == pytest.approx(ref, rel=1e-15)


@pytest.mark.parametrize("dtype", DTYPES)
def test_weight_penalty(rng, dtype):
    architecture, params, _, _ = network_case(rng, dtype, (4, 5, 3), [acts_codes.TANH, acts_codes.SIGMOID], 2)
    params[0] = 0  # sign(0) = 0
    grads = rng.normal(size=params.size).astype(dtype)
    fast, ref, fast_value, ref_value = call_both("weight_penalty", params, grads, architecture, 0.01, 0.1)
    assert fast_value == pytest.approx(ref_value, rel=1e-12)
    assert_same_arrays(fast, ref, dtype)
    weights = np.concatenate([params[0:20], params[25:40]]).astype(np.float64)  # not the biases
    assert ref_value == pytest.approx(0.01 * np.abs(weights).sum() + 0.05 * (weights**2).sum(), rel=1e-6)
    np.testing.assert_array_equal(fast[1][20:25], grads[20:25])  # bias gradients untouched


@pytest.mark.parametrize("n", [1, 2, 5, 1000])
@pytest.mark.parametrize("epoch", [0, 1, 77])
def test_shuffle_order(n, epoch):
    fast, ref, _, _ = call_both("shuffle_order", np.zeros(n, np.int64), np.zeros(n, np.uint64), 2**62 + 12345, epoch)
    np.testing.assert_array_equal(fast[0], ref[0])
    np.testing.assert_array_equal(np.sort(fast[0]), np.arange(n))  # a permutation
    if n >= 5:
        other = np.zeros(n, np.int64)
        kernels.shuffle_order(other, np.zeros(n, np.uint64), 2**62 + 12345, epoch + 1)
        assert not np.array_equal(other, fast[0]), "consecutive epochs must differ"


def train_epochs_args(
    rng,
    dtype,
    batch_size,
    shuffle,
    lr=0.05,
    epochs=4,
    optimizer=opt_codes.OPT_ADAM,
    shards=1,
    sizes=(3, 6, 2),
    hidden=acts_codes.TANH,
    output=acts_codes.SIGMOID,
    schedule=sched_codes.SCHEDULE_COSINE,
):
    """The arguments of train_epochs (but the thread count) for a small network and 11 rows."""
    rows = 11
    architecture, params, _, X = network_case(rng, dtype, sizes, [hidden] * (len(sizes) - 2) + [output], rows)
    Y = rng.uniform(size=(rows, sizes[-1])).astype(dtype)
    weight = rng.uniform(0.5, 2.0, size=rows).astype(dtype)
    hyper = (
        np.array([0.05, 0.9, 0.999, 1e-8, 0.0, 0.0])
        if optimizer == opt_codes.OPT_ADAM
        else np.array([lr, 0.9, 0.0, 0.0, 0.0])
    )
    slots = len(opt_codes.SPECS[optimizer].state)
    state = layout.TrainState(params, np.zeros((slots, params.size), dtype), np.zeros(1, np.int64))
    data = layout.Data(X, Y, weight)
    plan_shards, solo = layout.shard_plan(architecture, batch_size, shards)
    work = layout.make_work(architecture, rows, batch_size, slots, epochs, dtype, plan_shards)
    settings = layout.make_settings(
        loss=loss_codes.MSE,
        optimizer=optimizer,
        batch_size=batch_size,
        shuffle=shuffle,
        seed=987654321,
        first_epoch=3,
        epochs=epochs,
        lr=lr,
        hyper=hyper,
        schedule_kind=schedule,
        schedule=np.array([7.0, 0.01]),
        l1=0.001,
        l2=0.01,
        shards=plan_shards,
        solo=solo,
    )
    return architecture, state, data, work, settings, layout.make_control()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "batch_size, shuffle, shards",
    [(1, True, 1), (4, False, 1), (4, True, 1), (11, True, 1), (11, False, 1), (11, True, 3), (4, True, 2)],
)
@pytest.mark.parametrize("n_threads", [1, 2])
def test_train_epochs(rng, dtype, batch_size, shuffle, shards, n_threads):
    args = train_epochs_args(rng, dtype, batch_size, shuffle, shards=shards)
    fast, ref, fast_done, ref_done = call_both("train_epochs", *args, n_threads)
    assert fast_done == ref_done == 4
    (fast_state, _, fast_work, _, fast_control), (ref_state, _, ref_work, _, ref_control) = fast[1:6], ref[1:6]
    assert fast_control[layout.CONTROL.outcome] == ref_control[layout.CONTROL.outcome] == layout.OUTCOME_FINISHED
    steps_per_epoch = -(-11 // batch_size)
    assert fast_state.step[0] == ref_state.step[0] == 4 * steps_per_epoch
    assert_same_arrays(
        [fast_state.params, fast_state.opt_state, fast_work.epoch_losses],
        [ref_state.params, ref_state.opt_state, ref_work.epoch_losses],
        dtype,
    )
    assert fast_state.params.dtype == dtype
    assert not np.array_equal(fast_state.params, args[1].params)


@pytest.mark.parametrize("dtype", DTYPES)
def test_train_epochs_gives_the_same_bits_on_any_number_of_threads(rng, dtype):
    # Block and shard boundaries depend on the sizes only: 1, 2 and 3 threads agree bitwise, in
    # the team mode and with shards taken whole by threads.
    for sizes, shards in (((40, 300, 200, 3), 1), ((6, 9, 2), 3)):
        args = train_epochs_args(np.random.default_rng(1), dtype, 11, True, shards=shards, sizes=sizes)
        results = []
        for n_threads in (1, 2, 3):
            copies = [_copy(a) for a in args]
            kernels.train_epochs(*copies, n_threads)
            results.append(copies[1].params)
        np.testing.assert_array_equal(results[0], results[1])
        np.testing.assert_array_equal(results[0], results[2])


@pytest.mark.parametrize("dtype", DTYPES)
def test_train_epochs_stops_on_request_and_restores_the_start(rng, dtype):
    args = train_epochs_args(rng, dtype, 4, True)
    args[5][layout.CONTROL.stop] = 1
    fast, ref, fast_done, ref_done = call_both("train_epochs", *args, 1)
    assert fast_done == ref_done == 0
    for state, control in ((fast[1], fast[5]), (ref[1], ref[5])):
        assert control[layout.CONTROL.outcome] == layout.OUTCOME_INTERRUPTED
        np.testing.assert_array_equal(state.params, args[1].params)
        np.testing.assert_array_equal(state.opt_state, args[1].opt_state)
        assert state.step[0] == 0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("optimizer", [opt_codes.OPT_SGD, opt_codes.OPT_ADAM])
def test_train_epochs_diverging_keeps_the_last_finite_epoch(rng, dtype, optimizer):
    # An lr this large overflows the squared error within a few epochs; the call must end with
    # the state of the last epoch whose loss and parameters were all finite.
    huge = 1e30 if dtype == np.float32 else 1e200
    # Identity activations: nothing saturates, so the loss can overflow.
    args = train_epochs_args(
        rng,
        dtype,
        4,
        True,
        lr=huge,
        epochs=50,
        optimizer=optimizer,
        hidden=acts_codes.IDENTITY,
        output=acts_codes.IDENTITY,
        schedule=sched_codes.SCHEDULE_CONSTANT,
    )
    fast, ref, fast_done, ref_done = call_both("train_epochs", *args, 1)
    assert fast_done == ref_done < 50
    assert fast[5][layout.CONTROL.outcome] == ref[5][layout.CONTROL.outcome] == layout.OUTCOME_DIVERGED
    for result, done in ((fast, fast_done), (ref, ref_done)):
        assert np.isfinite(result[1].params).all() and np.isfinite(result[1].opt_state).all()
        assert np.isfinite(result[3].epoch_losses[:done]).all()
        assert result[1].step[0] == done * 3
    # Replaying only the completed epochs lands on exactly the restored state.
    replay = [_copy(a) for a in args]
    replay[4] = args[4]._replace(epochs=fast_done)
    kernels.train_epochs(*replay, 1)
    np.testing.assert_array_equal(replay[1].params, fast[1].params)
    np.testing.assert_array_equal(replay[1].opt_state, fast[1].opt_state)


@pytest.mark.skipif(os.environ.get("NUMBA_BOUNDSCHECK") != "1", reason="only under NUMBA_BOUNDSCHECK=1 (a CI step)")
def test_bounds_checking_is_on():
    # The kernels trust their callers (the Python API checks every shape first); under bounds
    # checking a buffer that is too short must raise instead of writing past its end.
    with pytest.raises(IndexError):
        kernels.shuffle_order(np.zeros(10, np.int64), np.zeros(3, np.uint64), 1, 0)
