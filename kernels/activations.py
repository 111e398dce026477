"""The activation functions: the one table of them (``SPECS``), each with its compiled scalar
forms, its NumPy twins and its names in the tools fastgd converts to, and the compiled piece
of each (``PIECES``).

Derivatives are written through the output a = f(z), so z never needs to be stored:
sigmoid a(1 − a), tanh 1 − a², relu 1[a > 0], leaky_relu 1 or the slope, identity 1, exp a.

Each activation is one compiled *piece* (``activation_<name>``), built from the generic loop
below with the activation's scalar ``value``/``derivative`` as constants of the compiled code:
a few small loops that LLVM vectorises, compiled once per dtype and shared by every network
and every other setting (see ``kernels.pieces``). Adding an activation is one ``SPECS`` entry
here: its two scalar functions (``@njit(inline="always")``, constants in the argument's dtype:
``t(0.5)``, never a bare Python float, which would promote float32 to float64), its NumPy
twins, and its names for scikit-learn, PyTorch and ONNX (``None`` where the tool has none).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
from numba import njit

from .compat import make_piece, unsigned
from .config import JIT_OPTIONS
from .layout import DERIVATIVE, FORWARD
from .mathfn import fast_exp, fast_log1p, fast_tanh

# Activation codes (per layer, in meta).
IDENTITY = 0
SIGMOID = 1
TANH = 2
RELU = 3
LEAKY_RELU = 4
SOFTMAX = 5  # output layer only: normalises each row
SOFTPLUS = 6
EXP = 7  # output layer only: the poisson loss's

# Negative-side slope of leaky_relu (PyTorch's default).
LEAKY_SLOPE = 0.01

_INLINE = dict(JIT_OPTIONS, inline="always")


# --------------------------------------------------------------------------- scalar forms
# value(z, t) and derivative(a, t): t is the dtype's type (np.float32 or np.float64).


@njit(**_INLINE)
def _identity(z, t):
    return z


@njit(**_INLINE)
def _one(a, t):
    return t(1.0)


@njit(**_INLINE)
def _sigmoid(z, t):
    return t(1.0) / (t(1.0) + fast_exp(-z))


@njit(**_INLINE)
def _sigmoid_slope(a, t):
    return a * (t(1.0) - a)


@njit(**_INLINE)
def _tanh(z, t):
    return fast_tanh(z)


@njit(**_INLINE)
def _tanh_slope(a, t):
    return t(1.0) - a * a


@njit(**_INLINE)
def _relu(z, t):
    # `z <= 0` is False for NaN, so NaN propagates instead of being clipped to 0.
    return t(0.0) if z <= t(0.0) else z  # noqa: FURB136 (max() would clip NaN)


@njit(**_INLINE)
def _relu_slope(a, t):
    return t(1.0) if a > t(0.0) else t(0.0)


@njit(**_INLINE)
def _leaky_relu(z, t):
    return z * t(LEAKY_SLOPE) if z <= t(0.0) else z


@njit(**_INLINE)
def _leaky_relu_slope(a, t):
    return t(1.0) if a > t(0.0) else t(LEAKY_SLOPE)


@njit(**_INLINE)
def _softplus(z, t):
    # log(1 + e^z) = max(z, 0) + log1p(e^-|z|): no overflow for large |z|.
    positive = z if z > t(0.0) else t(0.0)
    return positive + fast_log1p(fast_exp(-z if z > t(0.0) else z))


@njit(**_INLINE)
def _softplus_slope(a, t):
    # f'(z) = sigmoid(z) = 1 − e^(−a) for a = softplus(z).
    return t(1.0) - fast_exp(-a)


@njit(**_INLINE)
def _exp(z, t):
    return fast_exp(z)


@njit(**_INLINE)
def _exp_slope(a, t):
    return a


# --------------------------------------------------------------------------- NumPy twins


def _np_sigmoid(z):
    return z.dtype.type(1) / (z.dtype.type(1) + np.exp(-z))


def _np_relu(z):
    # np.where keeps NaN (NaN <= 0 is False), like the kernel.
    return np.where(z <= 0, z.dtype.type(0), z)


def _np_softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _np_softplus(z):
    return np.maximum(z, z.dtype.type(0)) + np.log1p(np.exp(-np.abs(z)))


# --------------------------------------------------------------------------- the table


class ActivationSpec(NamedTuple):
    """One activation, everything about it in one place.

    ``value``/``derivative``: the compiled scalar forms (None for softmax, a row operation);
    ``numpy_value``/``numpy_derivative``: the twins (``numpy_derivative`` of a, elementwise);
    ``sklearn``: scikit-learn's name; ``torch``: the ``torch.nn`` module and its arguments
    (None: no module, identity); ``onnx``: the ONNX operator and its attributes, or
    ``"leaky"`` (written as ``Max(z, Mul(z, slope))``, see ``fastgd.convert``), ``"softplus"``
    (``Relu(z) + Log(1 + Exp(−|z|))``), or None (no
    node); ``saturates``: gradient health counts its saturated units (``train``'s condition
    stage); ``output_only``: softmax normalises a row, so only the output layer may use it.
    """

    name: str
    code: int
    value: object
    derivative: object
    numpy_value: Callable
    numpy_derivative: Callable | None
    sklearn: str | None
    torch: tuple | None
    onnx: tuple | str | None
    saturates: bool = False
    output_only: bool = False
    exportable: bool = True  # False: no ONNX/PyTorch equivalent (conversion refuses it by name)


SPECS = {
    spec.code: spec
    for spec in (
        ActivationSpec("identity", IDENTITY, _identity, _one, lambda z: z.copy(), lambda a: np.ones_like(a),
                       "identity", None, None),
        ActivationSpec("sigmoid", SIGMOID, _sigmoid, _sigmoid_slope, _np_sigmoid, lambda a: a * (a.dtype.type(1) - a),
                       "logistic", ("Sigmoid", {}), ("Sigmoid", {}), saturates=True),
        ActivationSpec("tanh", TANH, _tanh, _tanh_slope, np.tanh, lambda a: a.dtype.type(1) - a * a,
                       "tanh", ("Tanh", {}), ("Tanh", {}), saturates=True),
        ActivationSpec("relu", RELU, _relu, _relu_slope, _np_relu, lambda a: (a > 0).astype(a.dtype),
                       "relu", ("ReLU", {}), ("Relu", {})),
        ActivationSpec("leaky_relu", LEAKY_RELU, _leaky_relu, _leaky_relu_slope,
                       lambda z: np.where(z <= 0, z * z.dtype.type(LEAKY_SLOPE), z),
                       lambda a: np.where(a > 0, a.dtype.type(1), a.dtype.type(LEAKY_SLOPE)),
                       None, ("LeakyReLU", {"negative_slope": LEAKY_SLOPE}), "leaky"),
        ActivationSpec("softmax", SOFTMAX, None, None, _np_softmax, None, "softmax", ("Softmax", {"dim": -1}),
                       ("Softmax", {"axis": -1}), output_only=True),
        ActivationSpec("softplus", SOFTPLUS, _softplus, _softplus_slope, _np_softplus,
                       lambda a: a.dtype.type(1) - np.exp(-a), None, ("Softplus", {}), "softplus"),
        ActivationSpec("exp", EXP, _exp, _exp_slope, np.exp, lambda a: a.copy(), "exp", None, ("Exp", {}), output_only=True,
                       exportable=False),
    )
}  # fmt: skip

BY_NAME = {spec.name: spec for spec in SPECS.values()}


# --------------------------------------------------------------------------- the pieces


def _elementwise(mode, target, t_start, count, width, source, s_start):
    """An elementwise activation's piece (``VALUE``/``SLOPE`` are the activation's scalar
    forms, constants of each compiled copy).

    FORWARD: ``target[t_start + i] = f(target[t_start + i] + source[s_start + i % width])`` for
    i < count (rows of ``width``; with ``s_start < 0`` no bias is added). DERIVATIVE:
    ``target[t_start + i] *= f'(source[s_start + i])``, f' written through a = f(z).

    Parameters
    ----------
    mode : int64
        FORWARD or DERIVATIVE.
    target : ndarray, shape (n,)
        Updated in place: pre-activations (FORWARD) or local gradients (DERIVATIVE).
    t_start, count, width : int64
    source : ndarray, shape (m,)
        The bias (FORWARD) or the layer's outputs a (DERIVATIVE).
    s_start : int64

    Returns
    -------
    int64
        0.
    """
    t = target.dtype.type
    start, stop = unsigned(t_start), unsigned(t_start + count)
    if mode == FORWARD:
        if s_start >= 0:
            bias, n = unsigned(s_start), unsigned(width)
            for row in range(start, stop, n):
                for j in range(n):
                    target[row + j] += source[bias + j]
        for i in range(start, stop):
            target[i] = VALUE(target[i], t)  # noqa: F821 (bound by make_piece)
    else:
        offset = unsigned(s_start) - start
        for i in range(start, stop):
            target[i] *= SLOPE(source[offset + i], t)  # noqa: F821 (bound by make_piece)
    return np.int64(0)


def _softmax(mode, target, t_start, count, width, source, s_start):
    """The softmax piece, row by row (rows of ``width``; same arguments as ``_elementwise``).

    FORWARD: each row gets the bias added, then ``softmax`` (its maximum subtracted first, so it
    cannot overflow). DERIVATIVE: each row g of ``target`` becomes the Jacobian product
    ``a ⊙ (g − Σ_j g_j a_j)`` with a the row of ``source``.
    """
    t = target.dtype.type
    start, stop, n = unsigned(t_start), unsigned(t_start + count), unsigned(width)
    if mode == FORWARD:
        for row in range(start, stop, n):
            if s_start >= 0:
                bias = unsigned(s_start)
                for j in range(n):
                    target[row + j] += source[bias + j]
            row_max = target[row]
            for j in range(1, n):
                value = target[row + j]
                row_max = value if value > row_max else row_max
            total = t(0.0)
            for j in range(n):
                e = fast_exp(target[row + j] - row_max)
                target[row + j] = e
                total += e
            inv = t(1.0) / total
            for j in range(n):
                target[row + j] *= inv
    else:
        offset = unsigned(s_start) - start
        for row in range(start, stop, n):
            dot = t(0.0)
            for j in range(n):
                dot += target[row + j] * source[offset + row + j]
            for j in range(n):
                target[row + j] = source[offset + row + j] * (target[row + j] - dot)
    return np.int64(0)


def _make(spec):
    if spec.code == SOFTMAX:
        return make_piece(_softmax, f"activation_{spec.name}")
    return make_piece(_elementwise, f"activation_{spec.name}", VALUE=spec.value, SLOPE=spec.derivative)


# Activation code -> its piece (a compiled kernel; kind "activation" in kernels.pieces).
PIECES = {code: _make(spec) for code, spec in SPECS.items()}
