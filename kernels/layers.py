"""Layer kernels on whole arrays: the building blocks of a pass, one public function each, with
NumPy twins of the same name and signature in :mod:`fastgd.reference` (the equivalence tests
call both). They run the pieces the training loop runs (``kernels.pieces``: the activations,
losses and product paths) over every row, on one thread.

Conventions: a batch is a C-contiguous ``(rows, features)`` array; weights are ``(n_in, n_out)``;
outputs are written into arrays the caller owns; scalars are converted to the arrays' dtype, so a
float32 network computes in float32 throughout.
"""

import numpy as np

from . import activations as codes
from . import losses
from .activations import SOFTMAX
from .compat import kernel
from .config import BLAS_MIN_MACS, JIT_OPTIONS
from .layout import DERIVATIVE, FORWARD, META_N_IN, META_N_OUT, META_W_OFFSET, make_control
from .passes import penalise


def _flat(array):
    return array.reshape(array.size)


def _piece(name, dtype):
    # Piece ``name`` for ``dtype`` as a Python callable (kernels.pieces.run).
    from .pieces import run

    return lambda *args: run(name, dtype, *args)


def _activation(code, dtype):
    return _piece(f"activation_{codes.SPECS[int(code)].name}", dtype)


def _product(shape, m, n, k, a, lda, b, ldb, c, ldc):
    # C = op(A) @ op(B) on whole flat arrays, by the path the passes would take for it.
    dtype = c.dtype
    if m * n * k >= BLAS_MIN_MACS or shape == "nt":
        path = "blas"
    else:
        path = "tiles" if n >= 32 // dtype.itemsize else "loops"
    zero = np.int64(0)
    _piece(f"product_{path}_{shape}", dtype)(make_control(), m, n, k, a, zero, lda, b, zero, ldb, c, zero, ldc)


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
    a_out[...] = z
    flat = _flat(a_out)
    width = a_out.shape[1] if a_out.ndim == 2 else flat.size
    _activation(activation, flat.dtype)(FORWARD, flat, 0, flat.size, max(width, 1), flat, -1)


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
    if int(activation) == SOFTMAX:
        raise ValueError("softmax has no elementwise derivative (its Jacobian couples a row)")
    out[...] = 1
    flat = _flat(out)
    _activation(activation, flat.dtype)(DERIVATIVE, flat, 0, flat.size, max(out.shape[-1], 1), _flat(a), 0)


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
    out = _flat(a_out)
    _product("nn", rows, n_out, n_in, _flat(a_in), n_in, _flat(W), n_out, out, n_out)
    _activation(activation, out.dtype)(FORWARD, out, 0, out.size, n_out, np.ascontiguousarray(b), 0)


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
    piece = _piece(f"loss_{losses.SPECS[int(loss)].name}", a.dtype)
    return float(piece(_flat(z), 0, _flat(a), 0, _flat(y), 0, row_scale, 0, scratch, 0, rows, n))


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
    spec = losses.SPECS[int(loss)]
    flat = _flat(delta)
    # The piece also returns the rows' loss, from z; a stands in for z here (the value is unused).
    _piece(f"loss_{spec.name}", a.dtype)(_flat(a), 0, _flat(a), 0, _flat(y), 0, row_scale, 0, flat, 0, rows, n)
    if not spec.fused and int(activation) != codes.IDENTITY:
        _activation(activation, a.dtype)(DERIVATIVE, flat, 0, flat.size, n, _flat(a), 0)


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
    if rows * n * n_next >= BLAS_MIN_MACS:
        _product("nt", rows, n, n_next, _flat(delta_next), n_next, _flat(W_next), n_next, out, n)
    else:
        _product("nn", rows, n, n_next, _flat(delta_next), n_next, _flat(np.ascontiguousarray(W_next.T)), n, out, n)
    _activation(activation, out.dtype)(DERIVATIVE, out, 0, out.size, n, _flat(a), 0)


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
    _product("tn", n_in, n_out, rows, _flat(a_in), n_in, _flat(delta), n_out, _flat(grad_W), n_out)
    np.sum(delta, axis=0, out=grad_b)


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
    return float(_weight_penalty(params, grads, meta, float(l1), float(l2)))


@kernel(**JIT_OPTIONS)
def _weight_penalty(params, grads, meta, l1, l2):
    total = 0.0
    for layer in range(meta.shape[0]):
        start = meta[layer, META_W_OFFSET]
        total += penalise(params, grads, start, start + meta[layer, META_N_IN] * meta[layer, META_N_OUT], l1, l2)
    return total
