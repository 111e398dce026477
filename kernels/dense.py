"""Dense-layer kernels: forward pass, activation derivative, loss, output and hidden deltas, gradients.

Every function here has a NumPy twin of the same name and signature in :mod:`fastgd.reference`.
Conventions: a batch is a C-contiguous ``(rows, features)`` array; weights are ``(n_in, n_out)``;
outputs are written into arrays the caller owns (nothing is allocated per call); scalars are
converted to the arrays' dtype first, so a float32 network computes in float32 throughout.

Matrix products come in three sizes (thresholds in :mod:`fastgd._config`): below
``BLAS_MIN_MACS`` multiply-adds, plain compiled loops (a BLAS call costs microseconds); below
``PARALLEL_MIN_MACS``, one single-threaded BLAS call; above, fixed blocks of output rows
computed in parallel by Numba's threads (``blas.parallel_gemm``), each by one single-threaded
BLAS call with the whole inner dimension. Block boundaries depend on the sizes only, never on the thread count, so
results are bitwise the same with any number of threads. BLAS itself is kept to one thread
during training (one pool of threads: Numba's).
"""

import numpy as np
from numba import njit

from .._config import BLAS_MIN_MACS, JIT_OPTIONS, PARALLEL_MIN_MACS
from .blas import (
    EPILOGUE_BIAS_ACTIVATION,
    EPILOGUE_DERIVATIVE,
    EPILOGUE_NONE,
    gemm,
    parallel_gemm,
)
from .codes import (
    BINARY_CROSSENTROPY,
    CROSSENTROPY,
    IDENTITY,
    SOFTMAX,
)
from .elementwise import activate_in_place, multiply_by_derivative
from .mathfn import fast_exp


@njit(inline="always", **JIT_OPTIONS)
def _use_blas(rows, inner, cols):
    return rows * inner * cols >= BLAS_MIN_MACS


@njit(inline="always", **JIT_OPTIONS)
def _code(constant):
    # A code constant as a plain int64: passed as is, Numba types it as a literal and compiles
    # the callee (and everything it calls) once more for every distinct constant.
    return np.int64(constant)


@njit(inline="always", **JIT_OPTIONS)
def _flat(array):
    # A C-contiguous 2-D array as a 1-D view: one long loop vectorises better than two nested.
    return array.reshape(array.size)


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
    if activation != SOFTMAX:
        flat = _flat(a_out)
        if z.ctypes.data != a_out.ctypes.data:
            source = _flat(z)
            for i in range(flat.size):
                flat[i] = source[i]
        activate_in_place(flat, activation)
        return
    t = z.dtype.type
    zero, one = t(0.0), t(1.0)
    rows, n = z.shape
    for i in range(rows):
        row_max = z[i, 0]
        for j in range(1, n):
            row_max = max(row_max, z[i, j])
        total = zero
        for j in range(n):
            e = fast_exp(z[i, j] - row_max)
            a_out[i, j] = e
            total += e
        inv = one / total
        for j in range(n):
            a_out[i, j] *= inv


# parallel_gemm's transpose flags are passed as run-time comparisons (`rows < 0` is always False):
# literal True/False arguments would make Numba compile a separate copy of it per combination.


@njit(**JIT_OPTIONS)
def _affine(a_in, W, b, out, activation):
    # out = f(a_in @ W + b) by the path that suits the size (see the module docstring); softmax
    # (whole rows) and IDENTITY leave out = a_in @ W + b.
    rows, n_in = a_in.shape
    n_out = W.shape[1]
    macs = rows * n_in * n_out
    elementwise = IDENTITY if activation == SOFTMAX else activation
    if macs < BLAS_MIN_MACS:
        for i in range(rows):
            for j in range(n_out):
                out[i, j] = b[j]
            for k in range(n_in):
                x = a_in[i, k]
                for j in range(n_out):
                    out[i, j] += x * W[k, j]
    elif macs < PARALLEL_MIN_MACS:
        gemm(False, False, rows, n_out, n_in, a_in[0], n_in, W[0], n_out, False, out[0], n_out)
        for i in range(rows):
            for j in range(n_out):
                out[i, j] += b[j]
    else:
        # Bias and activation run per block on the thread that computed it, in parallel.
        flat = _flat(out)
        parallel_gemm(rows < 0, rows < 0, rows, n_out, n_in, _flat(a_in), 0, n_in, _flat(W), 0, n_out, flat, 0, n_out,
                      _code(EPILOGUE_BIAS_ACTIVATION), b, elementwise)  # fmt: skip
        return
    if elementwise != IDENTITY:
        activate_in_place(_flat(out), elementwise)


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
    _affine(a_in, W, b, a_out, activation)
    if activation == SOFTMAX:
        activate(a_out, a_out, activation)


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
    _affine(a_in, W, b, z_out, _code(IDENTITY))


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
    flat = _flat(out)
    one = a.dtype.type(1.0)
    for i in range(flat.size):
        flat[i] = one
    multiply_by_derivative(_flat(a), flat, activation)


@njit(**JIT_OPTIONS)
def loss_value(z, a, y, row_scale, loss):
    """Loss of a batch: ``sum_i row_scale[i] * loss_i``, accumulated in float64.

    Per-row losses: sse and mse ½‖a − y‖²; binary_crossentropy Σ_j softplus(z) − z·y (the stable
    form of −y log a − (1 − y) log(1 − a)); crossentropy Σ_j y_j (logsumexp(z) − z_j).
    ``row_scale`` carries the mean (1/n) or sample weights. Sums are float64; the exponentials
    are taken in the arrays' dtype (float32 ones vectorise, see ``mathfn``).

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
                softplus_tail = np.log1p(np.float64(fast_exp(-abs(z[i, j]))))
                row += max(zij, 0.0) - zij * np.float64(y[i, j]) + softplus_tail
        elif loss == CROSSENTROPY:
            row_max = z[i, 0]
            for j in range(1, n):
                row_max = max(row_max, z[i, j])
            sum_exp = 0.0
            for j in range(n):
                sum_exp += np.float64(fast_exp(z[i, j] - row_max))
            log_sum_exp = np.float64(row_max) + np.log(sum_exp)
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
    rows, n = a.shape
    for i in range(rows):
        scale = row_scale[i]
        for j in range(n):
            delta[i, j] = (a[i, j] - y[i, j]) * scale
    if loss == BINARY_CROSSENTROPY or loss == CROSSENTROPY:
        return
    if activation == SOFTMAX:
        zero = a.dtype.type(0.0)
        for i in range(rows):
            dot = zero
            for j in range(n):
                dot += delta[i, j] * a[i, j]
            for j in range(n):
                delta[i, j] = a[i, j] * (delta[i, j] - dot)
    else:
        multiply_by_derivative(_flat(a), _flat(delta), activation)


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
    rows, n_next = delta_next.shape
    n = W_next.shape[0]
    macs = rows * n_next * n
    if macs < BLAS_MIN_MACS:
        zero = a.dtype.type(0.0)
        for i in range(rows):
            for k in range(n):
                acc = zero
                for j in range(n_next):
                    acc += delta_next[i, j] * W_next[k, j]
                delta[i, k] = acc
        multiply_by_derivative(_flat(a), _flat(delta), activation)
    else:
        if macs < PARALLEL_MIN_MACS:
            gemm(False, True, rows, n, n_next, delta_next[0], n_next, W_next[0], n_next, False, delta[0], n)
            multiply_by_derivative(_flat(a), _flat(delta), activation)
        else:
            # The derivative runs per block on the thread that computed it, in parallel.
            parallel_gemm(rows < 0, rows >= 0, rows, n, n_next, _flat(delta_next), 0, n_next, _flat(W_next), 0, n_next, _flat(delta), 0, n,
                          _code(EPILOGUE_DERIVATIVE), _flat(a), activation)  # fmt: skip


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
    zero = delta.dtype.type(0.0)
    for j in range(n_out):
        grad_b[j] = zero
    for i in range(rows):
        for j in range(n_out):
            grad_b[j] += delta[i, j]
    macs = rows * n_in * n_out
    if macs < BLAS_MIN_MACS:
        for k in range(n_in):
            for j in range(n_out):
                grad_W[k, j] = zero
        for i in range(rows):
            for k in range(n_in):
                x = a_in[i, k]
                for j in range(n_out):
                    grad_W[k, j] += x * delta[i, j]
    elif macs < PARALLEL_MIN_MACS:
        gemm(True, False, n_in, n_out, rows, a_in[0], n_in, delta[0], n_out, False, grad_W[0], n_out)
    else:
        parallel_gemm(rows >= 0, rows < 0, n_in, n_out, rows, _flat(a_in), 0, n_in, _flat(delta), 0, n_out, _flat(grad_W), 0, n_out,
                      _code(EPILOGUE_NONE), grad_b, _code(IDENTITY))  # fmt: skip
