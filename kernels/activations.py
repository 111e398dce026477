"""The compiled activation functions, their derivatives and the row softmax: the one place their
mathematics is written for the kernels (the NumPy twins are ``fastgd.reference.ACTIVATIONS`` and
``DERIVATIVES``; ``fastgd.registry.ACTIVATIONS`` names them).

Derivatives are written through the output a = f(z), so z never needs to be stored:
sigmoid a(1 − a), tanh 1 − a², relu 1[a > 0], leaky_relu 1 or the slope, identity 1.

The loops over a range test the activation code once, outside the loop: a branch inside would
stop LLVM from vectorising it. Adding an activation: a code, a scalar function and its
derivative here, a branch in ``activate_range`` and ``derivative_range``, its twin in
``fastgd.reference`` and a row in ``fastgd.registry.ACTIVATIONS``.
"""

from numba import njit

from .compat import kernel, unsigned
from .config import JIT_OPTIONS
from .mathfn import fast_exp, fast_tanh

# Activation codes (per layer, in meta).
IDENTITY = 0
SIGMOID = 1
TANH = 2
RELU = 3
LEAKY_RELU = 4
SOFTMAX = 5  # output layer only: normalises each row

# Negative-side slope of leaky_relu (PyTorch's default).
LEAKY_SLOPE = 0.01

_INLINE = dict(JIT_OPTIONS, inline="always")


@njit(**_INLINE)
def relu(z, zero):
    # `z <= 0` is False for NaN, so NaN propagates instead of being clipped to 0.
    return zero if z <= zero else z  # noqa: FURB136 (max() would clip NaN)


@njit(**_INLINE)
def leaky_relu(z, slope):
    return z * slope if z <= 0 else z


@njit(**_INLINE)
def activation_value(z, activation, one, slope):
    """f(z) of one element for an elementwise activation code (identity for SOFTMAX: rows are
    normalised by ``softmax_row``)."""
    if activation == SIGMOID:
        return one / (one + fast_exp(-z))
    if activation == TANH:
        return fast_tanh(z)
    if activation == RELU:
        return relu(z, one - one)
    if activation == LEAKY_RELU:
        return leaky_relu(z, slope)
    return z


@njit(**_INLINE)
def derivative_value(a, activation, one, slope):
    """f'(z) of one element, written through a = f(z)."""
    if activation == SIGMOID:
        return a * (one - a)
    if activation == TANH:
        return one - a * a
    if activation == RELU:
        return one if a > 0 else one - one
    if activation == LEAKY_RELU:
        return one if a > 0 else slope
    return one


@njit(**_INLINE)
def activate_range(values, start, stop, bias, bias_start, n, activation):
    """``values[i] = f(values[i] + bias[bias_start + (i − start) % n])`` for i in [start, stop),
    in place: rows of ``n`` columns get the bias added (pass ``n = 0`` for none), then the
    elementwise activation (softmax rows are left to ``softmax_row``).

    In place on one array: with separate input and output arrays that are the same memory,
    LLVM's runtime overlap check fails and it runs the scalar loop instead (7x slower).
    """
    t = values.dtype.type
    zero, one, slope = t(0.0), t(1.0), t(LEAKY_SLOPE)
    start, stop, bias_start, n = unsigned(start), unsigned(stop), unsigned(bias_start), unsigned(n)
    if n > 0:
        for row in range(start, stop, n):
            for j in range(n):
                values[row + j] += bias[bias_start + j]
    if activation == SIGMOID:
        for i in range(start, stop):
            values[i] = one / (one + fast_exp(-values[i]))
    elif activation == TANH:
        for i in range(start, stop):
            values[i] = fast_tanh(values[i])
    elif activation == RELU:
        for i in range(start, stop):
            values[i] = relu(values[i], zero)
    elif activation == LEAKY_RELU:
        for i in range(start, stop):
            values[i] = leaky_relu(values[i], slope)


@njit(**_INLINE)
def derivative_range(a, a_start, delta, delta_start, count, activation):
    """``delta[delta_start + i] *= f'(z)`` for i in [0, count), written through
    ``a[a_start + i] = f(z)``."""
    t = a.dtype.type
    zero, one, slope = t(0.0), t(1.0), t(LEAKY_SLOPE)
    a_start, delta_start, count = unsigned(a_start), unsigned(delta_start), unsigned(count)
    if activation == SIGMOID:
        for i in range(count):
            x = a[a_start + i]
            delta[delta_start + i] *= x * (one - x)
    elif activation == TANH:
        for i in range(count):
            x = a[a_start + i]
            delta[delta_start + i] *= one - x * x
    elif activation == RELU:
        for i in range(count):
            delta[delta_start + i] *= one if a[a_start + i] > zero else zero
    elif activation == LEAKY_RELU:
        for i in range(count):
            delta[delta_start + i] *= one if a[a_start + i] > zero else slope


@njit(**_INLINE)
def softmax_row(z, z_start, a, a_start, n):
    """``a[a_start : a_start + n] = softmax(z[z_start : z_start + n])`` (max subtracted first,
    so it cannot overflow); ``a`` may be ``z``."""
    t = a.dtype.type
    z_start, a_start, n = unsigned(z_start), unsigned(a_start), unsigned(n)
    row_max = z[z_start]
    for j in range(1, n):
        value = z[z_start + j]
        row_max = value if value > row_max else row_max
    total = t(0.0)
    for j in range(n):
        e = fast_exp(z[z_start + j] - row_max)
        a[a_start + j] = e
        total += e
    inv = t(1.0) / total
    for j in range(n):
        a[a_start + j] *= inv
