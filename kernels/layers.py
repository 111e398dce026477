"""Layer kernels on whole arrays: the building blocks of a pass, one public function each, with
NumPy twins of the same name and signature in :mod:`fastgd.reference` (the equivalence tests
call both). They run the pieces the training loop runs (``kernels.pieces``: the activations,
losses and product paths) over every row, on the calling thread.

Conventions: a batch is a C-contiguous ``(rows, features)`` array; weights are ``(n_in, n_out)``;
outputs are written into arrays the caller owns; scalars are converted to the arrays' dtype, so a
float32 network computes in float32 throughout.
"""

from __future__ import annotations

import numpy as np

from . import activations as codes
from . import losses
from .activations import BACKWARD, FORWARD, SOFTMAX
from .blas import gemm_address
from .config import BLAS_MIN_MACS
from .pieces import call
from .products import NN, NT, TN


def _flat(array):
    return np.ascontiguousarray(array).reshape(-1)


def _product(shape, m, n, k, a, lda, b, ldb, c, ldc):
    # C = op(A) @ op(B) on whole flat arrays, by the path the passes would take for it.
    dtype = c.dtype
    if m * n * k >= BLAS_MIN_MACS or shape == NT:
        path, gemm = "blas", gemm_address(dtype)
    else:
        path, gemm = ("tiles" if n >= 32 // dtype.itemsize else "loops"), 0
    call("product", path, dtype, shape, m, n, k, (a, 0), lda, (b, 0), ldb, (c, 0), ldc, gemm)


def _activation(code, mode, rows, width, first, second, third):
    call("activation", int(code), first.dtype, mode, rows, width, (first, 0), (second, 0), (third, 0))


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
    rows, width = (a_out.shape if a_out.ndim == 2 else (1, a_out.size))
    source = np.array(z, dtype=a_out.dtype, order="C").reshape(-1)
    out = np.empty(a_out.size, dtype=a_out.dtype)
    _activation(activation, FORWARD, rows, max(width, 1), source, np.zeros(max(width, 1), dtype=a_out.dtype), out)
    a_out[...] = out.reshape(a_out.shape)


def activation_derivative(z, a, out, activation):
    """Derivative of an elementwise activation: ``out = f'(z)``, from the pre-activation ``z``
    and the output ``a = f(z)`` (an activation reads the one its formula needs).

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
    values = np.ones(out.size, dtype=out.dtype)
    width = out.shape[-1] if out.ndim else 1
    _activation(activation, BACKWARD, values.size // max(width, 1), max(width, 1), values, _flat(z).astype(out.dtype),
                _flat(a).astype(out.dtype))  # fmt: skip
    out[...] = values.reshape(out.shape)


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
    z = np.empty(rows * n_out, dtype=a_out.dtype)
    _product(NN, rows, n_out, n_in, _flat(a_in), n_in, _flat(W), n_out, z, n_out)
    out = np.empty_like(z)
    _activation(activation, FORWARD, rows, n_out, z, _flat(b), out)
    a_out[...] = out.reshape(rows, n_out)


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
    scratch = np.empty(a.size, dtype=a.dtype)
    return float(call("loss", int(loss), a.dtype, rows, n, (_flat(z), 0), (_flat(a), 0), (_flat(y), 0), (_flat(row_scale), 0),
                      (scratch, 0)))  # fmt: skip


def output_delta(z, a, y, row_scale, delta, activation, loss):
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
    """
    rows, n = a.shape
    spec = losses.SPECS[int(loss)]
    flat = np.empty(a.size, dtype=a.dtype)
    z, a = _flat(z), _flat(a)
    call("loss", int(loss), a.dtype, rows, n, (z, 0), (a, 0), (_flat(y), 0), (_flat(row_scale), 0), (flat, 0))
    if not spec.fused and int(activation) != codes.IDENTITY:
        _activation(activation, BACKWARD, rows, n, flat, z, a)
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
    out = np.empty(rows * n, dtype=delta.dtype)
    if rows * n * n_next >= BLAS_MIN_MACS:
        _product(NT, rows, n, n_next, _flat(delta_next), n_next, _flat(W_next), n_next, out, n)
    else:
        _product(NN, rows, n, n_next, _flat(delta_next), n_next, _flat(np.ascontiguousarray(W_next.T)), n, out, n)
    _activation(activation, BACKWARD, rows, n, out, _flat(z), _flat(a))
    delta[...] = out.reshape(rows, n)


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
    out = np.empty(n_in * n_out, dtype=grad_W.dtype)
    _product(TN, n_in, n_out, rows, _flat(a_in), n_in, _flat(delta), n_out, out, n_out)
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
    from .passes import weight_penalty as compiled

    return float(compiled(params, grads, architecture.layers, float(l1), float(l2)))
