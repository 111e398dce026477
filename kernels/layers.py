# stamp: 50906f77034c923f151f255b63f2604d
"""Layer kernels on whole arrays: the building blocks of a pass, one public function each, with
NumPy twins of the same name and signature in :mod:`fastgd.reference` (the equivalence tests
call both). They run what the training loop runs (the activations, losses and product paths)
over every row, on the calling thread.

Conventions: a batch is a C-contiguous ``(rows, features)`` array; weights are ``(n_in, n_out)``;
outputs are written into arrays the caller owns; scalars are converted to the arrays' dtype, so a
float32 network computes in float32 throughout.
"""

from __future__ import annotations

import numpy as np

from . import activations as codes
from .activations import SOFTMAX, apply
from .config import BLAS_MIN_MACS
from .jit import kernel
from .losses import SPECS as LOSS_SPECS
from .losses import loss_rows
from .passes import _output_derivative, penalise
from .products import BLAS, LOOPS, NN, NT, TILES, TN, gemm_address, product


def _flat(array, dtype=None):
    return np.ascontiguousarray(array, dtype=dtype).reshape(-1)


@kernel
def _product_kernel(chosen, shape, m, n, k, a, lda, b, ldb, c, ldc, gemm):
    product(chosen, shape, m, n, k, (a, 0, lda), (b, 0, ldb), (c, 0, ldc), gemm)


def _product(shape, m, n, k, a, lda, b, ldb, c, ldc):
    # C = op(A) @ op(B) on whole flat arrays, by the path the passes would take for it.
    dtype = c.dtype
    if m * n * k >= BLAS_MIN_MACS or shape == NT:
        chosen, gemm = BLAS, gemm_address(dtype)
    else:
        chosen, gemm = (TILES if 2 * n >= 32 // dtype.itemsize else LOOPS), 0
    _product_kernel(chosen, shape, m, n, k, a, lda, b, ldb, c, ldc, gemm)


@kernel
def _activate_kernel(code, a, slopes, rows, width, with_slopes):
    apply(code, a, slopes, rows, width, with_slopes)


@kernel
def _loss_kernel(code, z, a, y, scale, delta, rows, width, parameter):
    return loss_rows(code, z, a, y, scale, delta, rows, width, parameter)


@kernel
def _output_derivative_kernel(activation, delta, a, slopes, rows, width):
    _output_derivative(activation, delta, a, slopes, rows, width)


@kernel
def _penalty_kernel(params, grads, layers, l1, l2):
    total = 0.0
    for layer in range(layers.size):
        start = layers[layer]["weights"]
        total += penalise(params, grads, start, start + layers[layer]["n_in"] * layers[layer]["n_out"], l1, l2)
    return total


def _shape(array):
    return array.shape if array.ndim == 2 else (1, array.size)


def activate(z, a_out, activation):
    """Apply an activation row by row: ``a_out = f(z)``; ``a_out`` may be ``z`` itself.

    Parameters
    ----------
    z : ndarray, shape (rows, n)
        Pre-activations (not changed).
    a_out : ndarray, shape (rows, n)
        Written with the activations.
    activation : int
        Activation code (``kernels.activations``); ``SOFTMAX`` normalises each row.
    """
    rows, width = _shape(a_out)
    out = np.array(z, dtype=a_out.dtype, order="C").reshape(-1)
    _activate_kernel(int(activation), out, np.empty_like(out), rows, max(width, 1), False)
    a_out[...] = out.reshape(a_out.shape)


def activation_derivative(z, a, out, activation):
    """Derivative of an elementwise activation: ``out = f'(z)``, from the pre-activation ``z``
    (and the output ``a = f(z)``, which the kernels recompute from z).

    Parameters
    ----------
    z, a : ndarray, shape (rows, n)
    out : ndarray, shape (rows, n)
        Written with f'(z).
    activation : int
        Activation code (not ``SOFTMAX``, whose Jacobian is not elementwise).
    """
    if int(activation) == SOFTMAX:
        raise ValueError("softmax has no elementwise derivative (its Jacobian couples a row)")
    rows, width = _shape(out)
    values = _flat(z, out.dtype).copy()
    slopes = np.empty_like(values)
    _activate_kernel(int(activation), values, slopes, rows, max(width, 1), True)
    out[...] = slopes.reshape(out.shape)


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
    dense_forward(a_in, W, b, z_out, codes.IDENTITY)


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
    dtype = a_out.dtype
    z = np.empty(rows * n_out, dtype=dtype)
    _product(NN, rows, n_out, n_in, _flat(a_in, dtype), n_in, _flat(W, dtype), n_out, z, n_out)
    z += np.tile(_flat(b, dtype), rows)
    _activate_kernel(int(activation), z, np.empty_like(z), rows, n_out, False)
    a_out[...] = z.reshape(rows, n_out)


def loss_value(z, a, y, row_scale, loss, parameter=None):
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
    parameter : float, optional
        The loss's own parameter (Huber's δ); default: its declared default.

    Returns
    -------
    float
    """
    rows, n = a.shape
    dtype = a.dtype
    scratch = np.empty(a.size, dtype=dtype)
    return float(
        _loss_kernel(
            int(loss),
            _flat(z, dtype),
            _flat(a, dtype),
            _flat(y, dtype),
            _flat(row_scale, dtype),
            scratch,
            rows,
            n,
            _parameter(loss, parameter),
        )
    )


def _parameter(loss, parameter):
    declared = LOSS_SPECS[int(loss)].parameter
    if parameter is None:
        return float(declared[1]) if declared is not None else 0.0
    return float(parameter)


def output_delta(z, a, y, row_scale, delta, activation, loss, parameter=None):
    """Local gradient of the output layer, ``delta = dC/da ⊙ f'(z)``, fused per loss.

    sigmoid + binary_crossentropy and softmax + crossentropy (and exp + poisson) simplify to
    ``(a − y)·scale``; sse/mse give ``(a − y)·scale ⊙ f'(z)``; with a softmax output the
    Jacobian product ``a ⊙ (g − Σ_j g_j a_j)``.

    Parameters
    ----------
    z, a : ndarray, shape (rows, n_out)
    y : ndarray, shape (rows, n_out)
    row_scale : ndarray, shape (rows,)
    delta : ndarray, shape (rows, n_out)
        Written with the local gradients.
    activation, loss : int
        Output activation and loss codes.
    parameter : float, optional
        The loss's own parameter (Huber's δ).
    """
    rows, n = a.shape
    dtype = delta.dtype
    flat = np.empty(a.size, dtype=dtype)
    z, a = _flat(z, dtype), _flat(a, dtype)
    _loss_kernel(int(loss), z, a, _flat(y, dtype), _flat(row_scale, dtype), flat, rows, n, _parameter(loss, parameter))
    if not LOSS_SPECS[int(loss)].fused:
        slopes = np.empty_like(z)
        if int(activation) != SOFTMAX:
            _activate_kernel(int(activation), z.copy(), slopes, rows, n, True)
        _output_derivative_kernel(int(activation), flat, a, slopes, rows, n)
    delta[...] = flat.reshape(delta.shape)


def hidden_delta(delta_next, W_next, z, a, delta, activation):
    """Local gradient of a hidden layer: ``delta = (delta_next @ W_next.T) ⊙ f'(z)``.

    Parameters
    ----------
    delta_next : ndarray, shape (rows, n_next)
    W_next : ndarray, shape (n, n_next)
    z, a : ndarray, shape (rows, n)
        This layer's pre-activations and outputs.
    delta : ndarray, shape (rows, n)
        Written with this layer's local gradient.
    activation : int
    """
    rows, n_next = delta_next.shape
    n = W_next.shape[0]
    dtype = delta.dtype
    out = np.empty(rows * n, dtype=dtype)
    if rows * n * n_next >= BLAS_MIN_MACS:
        _product(NT, rows, n, n_next, _flat(delta_next, dtype), n_next, _flat(W_next, dtype), n_next, out, n)
    else:
        _product(
            NN,
            rows,
            n,
            n_next,
            _flat(delta_next, dtype),
            n_next,
            _flat(np.ascontiguousarray(W_next.T), dtype),
            n,
            out,
            n,
        )
    slopes = np.empty_like(out)
    _activate_kernel(int(activation), _flat(z, dtype).copy(), slopes, rows, n, True)
    delta[...] = (out * slopes).reshape(rows, n)


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
    dtype = grad_W.dtype
    out = np.empty(n_in * n_out, dtype=dtype)
    _product(TN, n_in, n_out, rows, _flat(a_in, dtype), n_in, _flat(delta, dtype), n_out, out, n_out)
    grad_W[...] = out.reshape(n_in, n_out)
    np.sum(delta, axis=0, out=grad_b)


def weight_penalty(params, grads, architecture, l1, l2):
    """Add the L1/L2 penalty on the weights (not the biases) to ``grads``; return its value.

    Penalty: ``l1·Σ|W| + (l2/2)·ΣW²``; gradient: ``l1·sign(W) + l2·W`` (sign(0) = 0).

    Parameters
    ----------
    params, grads : ndarray, shape (n_params,)
    architecture : layout.Architecture
    l1, l2 : float

    Returns
    -------
    float
        The penalty, in float64.
    """
    if l1 == 0.0 and l2 == 0.0:
        return 0.0
    return float(_penalty_kernel(params, grads, architecture.layers, float(l1), float(l2)))
