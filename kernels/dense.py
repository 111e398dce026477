"""Dense-layer kernels: forward pass, activation derivative, loss, output and hidden deltas, gradients.

Every function here has a NumPy twin of the same name and signature in :mod:`fastgd.reference`.
Conventions: a batch is a C-contiguous ``(rows, features)`` array; weights are ``(n_in, n_out)``;
outputs are written into arrays the caller owns (nothing is allocated per call); scalars are
converted to the arrays' dtype first, so a float32 network computes in float32 throughout.

Matrix products go through BLAS (``np.dot``) when they are large enough to amortise its call
overhead (about 5 µs) and through plain loops otherwise: see ``BLAS_MIN_MACS``.
"""

import numpy as np
from numba import njit

from .._config import BLAS_MIN_MACS, JIT_OPTIONS
from .codes import (
    BINARY_CROSSENTROPY,
    CROSSENTROPY,
    IDENTITY,
    LEAKY_RELU,
    LEAKY_SLOPE,
    RELU,
    SIGMOID,
    SOFTMAX,
    TANH,
)


@njit(inline="always", **JIT_OPTIONS)
def _use_blas(rows, inner, cols):
    return rows * inner * cols >= BLAS_MIN_MACS


@njit(inline="always", **JIT_OPTIONS)
def _activate_value(z, activation, zero, one, slope):
    if activation == SIGMOID:
        return one / (one + np.exp(-z))
    if activation == TANH:
        return np.tanh(z)
    if activation == RELU:
        # `z <= 0` is False for NaN, so NaN propagates instead of being clipped to 0.
        return zero if z <= zero else z
    if activation == LEAKY_RELU:
        return z * slope if z <= zero else z
    return z


@njit(inline="always", **JIT_OPTIONS)
def _derivative_value(a, activation, zero, one, slope):
    # Written through the layer output a = f(z), so z never needs to be stored.
    if activation == SIGMOID:
        return a * (one - a)
    if activation == TANH:
        return one - a * a
    if activation == RELU:
        return one if a > zero else zero
    if activation == LEAKY_RELU:
        return one if a > zero else slope
    return one


@njit(**JIT_OPTIONS)
def activate(z, a_out, activation):
    """Apply an activation row by row: ``a_out = f(z)``; ``a_out`` may be ``z`` itself.

    Parameters
    ----------
    z : ndarray, shape (rows, n)
        Pre-activations.
    a_out : ndarray, shape (rows, n)
        Written with the activations.
    activation : int
        Activation code from :mod:`fastgd.kernels.codes`; ``SOFTMAX`` normalises each row.
    """
    t = z.dtype.type
    zero, one, slope = t(0.0), t(1.0), t(LEAKY_SLOPE)
    rows, n = z.shape
    if activation == SOFTMAX:
        for i in range(rows):
            row_max = z[i, 0]
            for j in range(1, n):
                if z[i, j] > row_max:
                    row_max = z[i, j]
            total = zero
            for j in range(n):
                e = np.exp(z[i, j] - row_max)
                a_out[i, j] = e
                total += e
            inv = one / total
            for j in range(n):
                a_out[i, j] *= inv
        return
    for i in range(rows):
        for j in range(n):
            a_out[i, j] = _activate_value(z[i, j], activation, zero, one, slope)


@njit(**JIT_OPTIONS)
def dense_linear(a_in, W, b, z_out):
    """Affine part of a dense layer: ``z_out = a_in @ W + b``.

    Parameters
    ----------
    a_in : ndarray, shape (rows, n_in)
    W : ndarray, shape (n_in, n_out)
    b : ndarray, shape (n_out,)
    z_out : ndarray, shape (rows, n_out)
        Written with the result.
    """
    rows, n_in = a_in.shape
    n_out = W.shape[1]
    if _use_blas(rows, n_in, n_out):
        np.dot(a_in, W, z_out)
        for i in range(rows):
            for j in range(n_out):
                z_out[i, j] += b[j]
        return
    for i in range(rows):
        for j in range(n_out):
            z_out[i, j] = b[j]
        for k in range(n_in):
            x = a_in[i, k]
            for j in range(n_out):
                z_out[i, j] += x * W[k, j]


@njit(**JIT_OPTIONS)
def dense_forward(a_in, W, b, a_out, activation):
    """One dense layer, bias and activation fused: ``a_out = f(a_in @ W + b)``.

    Parameters
    ----------
    a_in : ndarray, shape (rows, n_in)
    W : ndarray, shape (n_in, n_out)
    b : ndarray, shape (n_out,)
    a_out : ndarray, shape (rows, n_out)
        Written with the activations.
    activation : int
        Activation code.
    """
    dense_linear(a_in, W, b, a_out)
    if activation != IDENTITY:
        activate(a_out, a_out, activation)


@njit(**JIT_OPTIONS)
def activation_derivative(a, out, activation):
    """Derivative of an elementwise activation, written through its output: ``out = f'(z)``.

    sigmoid: a(1 - a); tanh: 1 - a²; relu: 1[a > 0]; leaky_relu: 1 or the slope; identity: 1.

    Parameters
    ----------
    a : ndarray, shape (rows, n)
        Layer output f(z).
    out : ndarray, shape (rows, n)
        Written with f'(z).
    activation : int
        Activation code (not ``SOFTMAX``, whose Jacobian is not elementwise).
    """
    t = a.dtype.type
    zero, one, slope = t(0.0), t(1.0), t(LEAKY_SLOPE)
    rows, n = a.shape
    for i in range(rows):
        for j in range(n):
            out[i, j] = _derivative_value(a[i, j], activation, zero, one, slope)


@njit(**JIT_OPTIONS)
def loss_value(z, a, y, row_scale, loss):
    """Loss of a batch: ``sum_i row_scale[i] * loss_i``, accumulated in float64.

    Per-row losses: sse and mse ½‖a − y‖²; binary_crossentropy Σ_j softplus(z) − z·y (the stable
    form of −y log a − (1 − y) log(1 − a)); crossentropy Σ_j y_j (logsumexp(z) − z_j).
    ``row_scale`` carries the mean (1/n) or sample weights.

    Parameters
    ----------
    z : ndarray, shape (rows, n_out)
        Output pre-activations (used by the cross-entropies).
    a : ndarray, shape (rows, n_out)
        Output activations.
    y : ndarray, shape (rows, n_out)
        Targets (one-hot or probabilities for crossentropy).
    row_scale : ndarray, shape (rows,)
    loss : int
        Loss code.

    Returns
    -------
    float
    """
    rows, n = a.shape
    total = 0.0
    for i in range(rows):
        row = 0.0
        if loss == BINARY_CROSSENTROPY:
            for j in range(n):
                zij = np.float64(z[i, j])
                row += max(zij, 0.0) - zij * np.float64(y[i, j]) + np.log1p(np.exp(-abs(zij)))
        elif loss == CROSSENTROPY:
            row_max = np.float64(z[i, 0])
            for j in range(1, n):
                row_max = max(row_max, np.float64(z[i, j]))
            sum_exp = 0.0
            for j in range(n):
                sum_exp += np.exp(np.float64(z[i, j]) - row_max)
            log_sum_exp = row_max + np.log(sum_exp)
            for j in range(n):
                row += np.float64(y[i, j]) * (log_sum_exp - np.float64(z[i, j]))
        else:
            for j in range(n):
                diff = np.float64(a[i, j]) - np.float64(y[i, j])
                row += 0.5 * diff * diff
        total += np.float64(row_scale[i]) * row
    return total


@njit(**JIT_OPTIONS)
def output_delta(a, y, row_scale, delta, activation, loss):
    """Local gradient of the output layer, ``delta = dC/da ⊙ f'(z)``, fused per loss.

    sigmoid + binary_crossentropy and softmax + crossentropy simplify to ``(a − y)·scale``, which
    is exact and cannot overflow. sse/mse give ``(a − y)·scale ⊙ f'(a)``; with a softmax output
    the Jacobian product ``a ⊙ (g − Σ_j g_j a_j)`` is used instead.

    Parameters
    ----------
    a : ndarray, shape (rows, n_out)
        Output activations.
    y : ndarray, shape (rows, n_out)
        Targets.
    row_scale : ndarray, shape (rows,)
        1/n for mean losses, 1 for sse (times sample weights where given).
    delta : ndarray, shape (rows, n_out)
        Written with the local gradients.
    activation, loss : int
        Output activation and loss codes.
    """
    t = a.dtype.type
    zero, one, slope = t(0.0), t(1.0), t(LEAKY_SLOPE)
    rows, n = a.shape
    fused = loss == BINARY_CROSSENTROPY or loss == CROSSENTROPY
    for i in range(rows):
        scale = row_scale[i]
        for j in range(n):
            delta[i, j] = (a[i, j] - y[i, j]) * scale
        if fused:
            continue
        if activation == SOFTMAX:
            dot = zero
            for j in range(n):
                dot += delta[i, j] * a[i, j]
            for j in range(n):
                delta[i, j] = a[i, j] * (delta[i, j] - dot)
        elif activation != IDENTITY:
            for j in range(n):
                delta[i, j] *= _derivative_value(a[i, j], activation, zero, one, slope)


@njit(**JIT_OPTIONS)
def hidden_delta(delta_next, W_next, a, delta, activation):
    """Local gradient of a hidden layer: ``delta = (delta_next @ W_next.T) ⊙ f'(a)``.

    Parameters
    ----------
    delta_next : ndarray, shape (rows, n_next)
        Local gradient of the layer above.
    W_next : ndarray, shape (n, n_next)
        Weights of the layer above.
    a : ndarray, shape (rows, n)
        This layer's output.
    delta : ndarray, shape (rows, n)
        Written with this layer's local gradient.
    activation : int
        This layer's activation code.
    """
    t = a.dtype.type
    zero, one, slope = t(0.0), t(1.0), t(LEAKY_SLOPE)
    rows, n_next = delta_next.shape
    n = W_next.shape[0]
    if _use_blas(rows, n_next, n):
        np.dot(delta_next, W_next.T, delta)
    else:
        for i in range(rows):
            for k in range(n):
                acc = zero
                for j in range(n_next):
                    acc += delta_next[i, j] * W_next[k, j]
                delta[i, k] = acc
    if activation != IDENTITY:
        for i in range(rows):
            for k in range(n):
                delta[i, k] *= _derivative_value(a[i, k], activation, zero, one, slope)


@njit(**JIT_OPTIONS)
def dense_gradients(a_in, delta, grad_W, grad_b):
    """Parameter gradients of a dense layer: ``grad_W = a_in.T @ delta``, ``grad_b = Σ_rows delta``.

    Parameters
    ----------
    a_in : ndarray, shape (rows, n_in)
        The layer's input.
    delta : ndarray, shape (rows, n_out)
        The layer's local gradient.
    grad_W : ndarray, shape (n_in, n_out)
        Overwritten.
    grad_b : ndarray, shape (n_out,)
        Overwritten.
    """
    rows, n_in = a_in.shape
    n_out = delta.shape[1]
    t = delta.dtype.type
    zero = t(0.0)
    for j in range(n_out):
        grad_b[j] = zero
    for i in range(rows):
        for j in range(n_out):
            grad_b[j] += delta[i, j]
    if _use_blas(rows, n_in, n_out):
        np.dot(a_in.T, delta, grad_W)
        return
    for k in range(n_in):
        for j in range(n_out):
            grad_W[k, j] = zero
    for i in range(rows):
        for k in range(n_in):
            x = a_in[i, k]
            for j in range(n_out):
                grad_W[k, j] += x * delta[i, j]
