"""Layer kernels on whole arrays: the building blocks of a pass, one public function each, with
NumPy twins of the same name and signature in :mod:`fastgd.reference` (the equivalence tests
call both). They run the same code as the training loop (``activations``, ``losses``,
``products``) over every row, on one thread.

Conventions: a batch is a C-contiguous ``(rows, features)`` array; weights are ``(n_in, n_out)``;
outputs are written into arrays the caller owns; scalars are converted to the arrays' dtype, so a
float32 network computes in float32 throughout.
"""

import numpy as np
from numba import njit

from .activations import IDENTITY, SOFTMAX, activate_range, derivative_range, softmax_row
from .compat import kernel
from .config import JIT_OPTIONS
from .layout import CONTROL_WIDTH, META_N_IN, META_N_OUT, META_W_OFFSET
from .losses import row_delta, row_loss
from .passes import penalise
from .products import product_nn, product_nt, product_tn, transpose, uses_blas

_INLINE = dict(JIT_OPTIONS, inline="always")


@njit(**_INLINE)
def _no_control():
    # A control array carrying no BLAS address: these kernels call SciPy's BLAS through Numba.
    return np.zeros(CONTROL_WIDTH, dtype=np.int64)


@njit(**_INLINE)
def _flat(array):
    # A C-contiguous array as a 1-D view.
    return array.reshape(array.size)


@kernel(**JIT_OPTIONS)
def activate(z, a_out, activation):
    """Apply an activation row by row: ``a_out = f(z)``; ``a_out`` may be ``z`` itself.

    Parameters
    ----------
    z : ndarray, shape (rows, n)
        Pre-activations.
    a_out : ndarray, shape (rows, n)
        Written with the activations.
    activation : int
        Activation code (``kernels.activations``); ``SOFTMAX`` normalises each row.
    """
    rows, n = z.shape
    source, flat = _flat(z), _flat(a_out)
    if activation == SOFTMAX:
        for row in range(0, rows * n, n):
            softmax_row(source, row, flat, row, n)
        return
    for i in range(flat.size):
        flat[i] = source[i]
    activate_range(flat, np.int64(0), flat.size, flat, np.int64(0), np.int64(0), activation)


@kernel(**JIT_OPTIONS)
def activation_derivative(a, out, activation):
    """Derivative of an elementwise activation, written through its output: ``out = f'(z)``.

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
    derivative_range(_flat(a), np.int64(0), flat, np.int64(0), flat.size, activation)


@kernel(**JIT_OPTIONS)
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
    dense_forward(a_in, W, b, z_out, np.int64(IDENTITY))


@kernel(**JIT_OPTIONS)
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
    rows, n_in = a_in.shape
    n_out = W.shape[1]
    out = _flat(a_out)
    product_nn(_no_control(), True, uses_blas(True, rows, n_out, n_in), rows, n_out, n_in, _flat(a_in), np.int64(0), n_in, _flat(W), np.int64(0), n_out, out, np.int64(0), n_out)
    elementwise = IDENTITY if activation == SOFTMAX else activation
    activate_range(out, np.int64(0), out.size, b, np.int64(0), n_out, elementwise)
    if activation == SOFTMAX:
        for row in range(0, rows * n_out, n_out):
            softmax_row(out, row, out, row, n_out)


@kernel(**JIT_OPTIONS)
def loss_value(z, a, y, row_scale, loss):
    """Loss of a batch: ``Σ_i row_scale[i] · loss_i`` in float64 (see ``kernels.losses``).

    Parameters
    ----------
    z : ndarray, shape (rows, n_out)
        Output pre-activations (used by the cross-entropies).
    a : ndarray, shape (rows, n_out)
        Output activations.
    y : ndarray, shape (rows, n_out)
        Targets (one-hot or probabilities for crossentropy).
    row_scale : ndarray, shape (rows,)
        1/n for mean losses, 1 for sse, times sample weights.
    loss : int
        Loss code.

    Returns
    -------
    float
    """
    rows, n = a.shape
    z_flat, a_flat, y_flat = _flat(z), _flat(a), _flat(y)
    total = 0.0
    for i in range(rows):
        total += np.float64(row_scale[i]) * row_loss(z_flat, i * n, a_flat, i * n, y_flat, i * n, n, loss)
    return total


@kernel(**JIT_OPTIONS)
def output_delta(a, y, row_scale, delta, activation, loss):
    """Local gradient of the output layer, ``delta = dC/da ⊙ f'(z)``, fused per loss.

    sigmoid + binary_crossentropy and softmax + crossentropy simplify to ``(a − y)·scale``;
    sse/mse give ``(a − y)·scale ⊙ f'(a)``; with a softmax output the Jacobian product
    ``a ⊙ (g − Σ_j g_j a_j)``.

    Parameters
    ----------
    a : ndarray, shape (rows, n_out)
    y : ndarray, shape (rows, n_out)
    row_scale : ndarray, shape (rows,)
    delta : ndarray, shape (rows, n_out)
        Written with the local gradients.
    activation, loss : int
        Output activation and loss codes.
    """
    rows, n = a.shape
    a_flat, y_flat, d_flat = _flat(a), _flat(y), _flat(delta)
    for i in range(rows):
        row_delta(a_flat, i * n, y_flat, i * n, row_scale[i], d_flat, i * n, n, activation, loss)


@kernel(**JIT_OPTIONS)
def hidden_delta(delta_next, W_next, a, delta, activation):
    """Local gradient of a hidden layer: ``delta = (delta_next @ W_next.T) ⊙ f'(a)``.

    Parameters
    ----------
    delta_next : ndarray, shape (rows, n_next)
    W_next : ndarray, shape (n, n_next)
    a : ndarray, shape (rows, n)
        This layer's output.
    delta : ndarray, shape (rows, n)
        Written with this layer's local gradient.
    activation : int
    """
    rows, n_next = delta_next.shape
    n = W_next.shape[0]
    out = _flat(delta)
    zero = np.int64(0)
    if uses_blas(True, rows, n, n_next):
        product_nt(_no_control(), rows, n, n_next, _flat(delta_next), zero, n_next, _flat(W_next), zero, n_next, out, zero, n)
    else:
        transposed = np.empty(n * n_next, dtype=W_next.dtype)
        transpose(_flat(W_next), zero, n, n_next, transposed, zero)
        product_nn(_no_control(), True, False, rows, n, n_next, _flat(delta_next), zero, n_next, transposed, zero, n, out, zero, n)
    derivative_range(_flat(a), np.int64(0), out, np.int64(0), out.size, activation)


@kernel(**JIT_OPTIONS)
def dense_gradients(a_in, delta, grad_W, grad_b):
    """Parameter gradients of a dense layer: ``grad_W = a_in.T @ delta``, ``grad_b = Σ_rows delta``.

    Parameters
    ----------
    a_in : ndarray, shape (rows, n_in)
    delta : ndarray, shape (rows, n_out)
    grad_W : ndarray, shape (n_in, n_out)
        Overwritten.
    grad_b : ndarray, shape (n_out,)
        Overwritten.
    """
    rows, n_in = a_in.shape
    n_out = delta.shape[1]
    d_flat = _flat(delta)
    product_tn(_no_control(), True, uses_blas(True, n_in, n_out, rows), n_in, n_out, rows, _flat(a_in), np.int64(0), n_in, d_flat, np.int64(0), n_out, _flat(grad_W), np.int64(0), n_out)
    zero = delta.dtype.type(0.0)
    for j in range(n_out):
        grad_b[j] = zero
    for i in range(rows):
        for j in range(n_out):
            grad_b[j] += d_flat[i * n_out + j]


@kernel(**JIT_OPTIONS)
def weight_penalty(params, grads, meta, l1, l2):
    """Add the L1/L2 penalty on the weights (not the biases) to ``grads``; return its value.

    Penalty: ``l1·Σ|W| + (l2/2)·ΣW²``; gradient: ``l1·sign(W) + l2·W`` (sign(0) = 0).

    Parameters
    ----------
    params, grads : ndarray, shape (n_params,)
    meta : ndarray of int64, shape (n_layers, META_WIDTH)
    l1, l2 : float

    Returns
    -------
    float
        The penalty, in float64.
    """
    if l1 == 0.0 and l2 == 0.0:
        return 0.0
    total = 0.0
    for layer in range(meta.shape[0]):
        start = meta[layer, META_W_OFFSET]
        total += penalise(params, grads, start, start + meta[layer, META_N_IN] * meta[layer, META_N_OUT], l1, l2)
    return total
