# stamp: d3de986fe0d149158e07e2191ce6c965
"""The activation functions: the one table of them (``SPECS``), each with its compiled scalar
forms, its NumPy twins and its names in the tools fastgd converts to; and the two pieces that
apply one of them to a block of rows (``activation_piece``).

Derivatives take both the pre-activation z and the output a = f(z): sigmoid a(1 − a), tanh
1 − a², relu 1[a > 0] read the output, while gelu, gelu_tanh and silu need z. A network keeps
z only for layers whose activation says ``needs_z`` (``kernels.layout``), so sigmoid, tanh and
relu networks use no more memory than before.

Adding an activation is one ``SPECS`` entry and its two scalar functions: ``value(z, t)`` and
``derivative(z, a, t)`` (``@helper`` functions; constants in the argument's dtype, ``t(0.5)``,
never a bare Python float, which would promote float32 to float64), plus its NumPy twins and
its names for scikit-learn, PyTorch and ONNX. Its piece is made from the table
(``activation_piece``); the tests, conversions and docs walk the table.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np
from numba import types
from numba.extending import overload

from .jit import helper
from .lowlevel import view, view2
from .mathfn import fast_exp, fast_log1p, fast_tanh

# Activation codes (per layer, in the layer records of kernels.layout).
IDENTITY = 0
SIGMOID = 1
TANH = 2
RELU = 3
LEAKY_RELU = 4
SOFTMAX = 5  # output layer only: normalises each row
SOFTPLUS = 6
EXP = 7  # output layer only: the poisson loss's
GELU = 8
GELU_TANH = 9
SILU = 10

# Negative-side slope of leaky_relu (PyTorch's default).
LEAKY_SLOPE = 0.01
# Constants of GELU's two forms (PyTorch's names: M_SQRT1_2, kBeta, kKappa).
SQRT_HALF = 0.7071067811865476  # 1/√2
GELU_PDF = 0.3989422804014327  # 1/√(2π)
GELU_TANH_BETA = 0.7978845608028654  # √(2/π)
GELU_TANH_KAPPA = 0.044715

# --------------------------------------------------------------------------- scalar forms
# value(z, t) and derivative(z, a, t); t is the dtype's type (np.float32 or np.float64).


@helper
def identity_value(z, t):
    return z


@helper
def one(z, a, t):
    return t(1.0)


@helper
def sigmoid_value(z, t):
    return t(1.0) / (t(1.0) + fast_exp(-z))


@helper
def sigmoid_derivative(z, a, t):
    return a * (t(1.0) - a)


@helper
def tanh_value(z, t):
    return fast_tanh(z)


@helper
def tanh_derivative(z, a, t):
    return t(1.0) - a * a


@helper
def relu_value(z, t):
    # `z <= 0` is False for NaN, so NaN propagates instead of being clipped to 0.
    return t(0.0) if z <= t(0.0) else z  # noqa: FURB136 (max() would clip NaN)


@helper
def relu_derivative(z, a, t):
    return t(1.0) if a > t(0.0) else t(0.0)


@helper
def leaky_relu_value(z, t):
    return z * t(LEAKY_SLOPE) if z <= t(0.0) else z


@helper
def leaky_relu_derivative(z, a, t):
    return t(1.0) if a > t(0.0) else t(LEAKY_SLOPE)


@helper
def softplus_value(z, t):
    # log(1 + e^z) = max(z, 0) + log1p(e^-|z|): no overflow for large |z|.
    positive = z if z > t(0.0) else t(0.0)
    return positive + fast_log1p(fast_exp(-z if z > t(0.0) else z))


@helper
def softplus_derivative(z, a, t):
    # f'(z) = sigmoid(z) = 1 − e^(−a) for a = softplus(z).
    return t(1.0) - fast_exp(-a)


@helper
def exp_value(z, t):
    return fast_exp(z)


@helper
def exp_derivative(z, a, t):
    return a


@helper
def gelu_value(z, t):
    # 0.5·z·(1 + erf(z/√2)), as PyTorch's default (exact) GELU; erf in float64.
    return t(0.5 * np.float64(z) * (1.0 + math.erf(np.float64(z) * SQRT_HALF)))


@helper
def gelu_derivative(z, a, t):
    # Φ(z) + z·φ(z), in PyTorch's form: cdf + z·pdf.
    x = np.float64(z)
    cdf = 0.5 * (1.0 + math.erf(x * SQRT_HALF))
    pdf = math.exp(-0.5 * x * x) * GELU_PDF
    return t(cdf + x * pdf)


@helper
def gelu_tanh_value(z, t):
    # PyTorch's approximate="tanh": 0.5·z·(1 + tanh(√(2/π)(z + 0.044715 z³))).
    inner = t(GELU_TANH_BETA) * (z + t(GELU_TANH_KAPPA) * z * z * z)
    return t(0.5) * z * (t(1.0) + fast_tanh(inner))


@helper
def gelu_tanh_derivative(z, a, t):
    # PyTorch's backward for approximate="tanh", term by term.
    beta, kappa = t(GELU_TANH_BETA), t(GELU_TANH_KAPPA)
    square = z * z
    tanh_inner = fast_tanh(beta * (z + kappa * square * z))
    left_derivative = t(0.5) * (t(1.0) + tanh_inner)
    right_derivative = t(0.5) * z * (t(1.0) - tanh_inner * tanh_inner) * beta * (t(1.0) + t(3.0) * kappa * square)
    return left_derivative + right_derivative


@helper
def silu_value(z, t):
    # z·sigmoid(z), as PyTorch computes it: z / (1 + e^−z).
    return z / (t(1.0) + fast_exp(-z))


@helper
def silu_derivative(z, a, t):
    # sigmoid(z)·(1 + z·(1 − sigmoid(z))), PyTorch's form.
    s = t(1.0) / (t(1.0) + fast_exp(-z))
    return s * (t(1.0) + z * (t(1.0) - s))


# --------------------------------------------------------------------------- NumPy twins
# numpy_value(z) and numpy_derivative(z, a), elementwise, in the arrays' dtype.


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


def _erf(x):
    # math.erf over an array (NumPy has no erf; SciPy's is not a dependency of the twins).
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def _np_gelu(z):
    x = z.astype(np.float64)
    return (0.5 * x * (1.0 + _erf(x * SQRT_HALF))).astype(z.dtype)


def _np_gelu_derivative(z, a):
    x = z.astype(np.float64)
    return (0.5 * (1.0 + _erf(x * SQRT_HALF)) + x * np.exp(-0.5 * x * x) * GELU_PDF).astype(z.dtype)


def _np_gelu_tanh(z):
    t = z.dtype.type
    return t(0.5) * z * (t(1) + np.tanh(t(GELU_TANH_BETA) * (z + t(GELU_TANH_KAPPA) * z * z * z)))


def _np_gelu_tanh_derivative(z, a):
    t = z.dtype.type
    beta, kappa = t(GELU_TANH_BETA), t(GELU_TANH_KAPPA)
    tanh_inner = np.tanh(beta * (z + kappa * z * z * z))
    return t(0.5) * (t(1) + tanh_inner) + t(0.5) * z * (t(1) - tanh_inner * tanh_inner) * beta * (t(1) + t(3) * kappa * z * z)


def _np_silu(z):
    return z / (z.dtype.type(1) + np.exp(-z))


def _np_silu_derivative(z, a):
    t = z.dtype.type
    s = t(1) / (t(1) + np.exp(-z))
    return s * (t(1) + z * (t(1) - s))


# ONNX decompositions (``fastgd.convert.to_onnx``): steps (operator, inputs, output) from the
# pre-activation "z" to "out", numbers being constants of the network's dtype; operators every
# runtime has in both dtypes.
_ONNX_LEAKY = (("Mul", ("z", LEAKY_SLOPE), "leak"), ("Max", ("z", "leak"), "out"))
_ONNX_SOFTPLUS = (("Relu", ("z",), "pos"), ("Abs", ("z",), "abs"), ("Neg", ("abs",), "neg"), ("Exp", ("neg",), "exp"),
                  ("Add", ("exp", 1.0), "onep"), ("Log", ("onep",), "log"), ("Add", ("pos", "log"), "out"))  # fmt: skip
_ONNX_GELU = (("Mul", ("z", SQRT_HALF), "scaled"), ("Erf", ("scaled",), "erf"), ("Add", ("erf", 1.0), "onep"),
              ("Mul", ("z", "onep"), "zp"), ("Mul", ("zp", 0.5), "out"))  # fmt: skip
_ONNX_GELU_TANH = (("Mul", ("z", "z"), "square"), ("Mul", ("square", "z"), "cube"), ("Mul", ("cube", GELU_TANH_KAPPA), "kc"),
                   ("Add", ("z", "kc"), "sum"), ("Mul", ("sum", GELU_TANH_BETA), "inner"), ("Tanh", ("inner",), "tanh"),
                   ("Add", ("tanh", 1.0), "onep"), ("Mul", ("z", "onep"), "zp"), ("Mul", ("zp", 0.5), "out"))  # fmt: skip
_ONNX_SILU = (("Sigmoid", ("z",), "sig"), ("Mul", ("z", "sig"), "out"))


# --------------------------------------------------------------------------- the table


class ActivationSpec(NamedTuple):
    """One activation, everything about it in one place.

    ``value``/``derivative``: the compiled scalar forms (None for softmax, a row operation);
    ``numpy_value(z)``/``numpy_derivative(z, a)``: the twins; ``sklearn``: scikit-learn's name
    (None: not one of scikit-learn's, accepted by fastgd's estimators as an extension);
    ``torch``: the ``torch.nn`` module and its arguments (None: no module, identity);
    ``onnx``: an operator and its attributes, a decomposition (steps, see ``_ONNX_*``), or None
    (no node); ``saturates``: gradient health counts its saturated units; ``output_only``:
    only the output layer may use it; ``needs_z``: its derivative needs the pre-activation z,
    which the layer then keeps; ``exportable``: False when no other tool has it.
    """

    name: str
    code: int
    value: object
    derivative: object
    numpy_value: Callable
    numpy_derivative: Callable | None
    sklearn: str | None
    torch: tuple | None
    onnx: tuple | None
    saturates: bool = False
    output_only: bool = False
    needs_z: bool = False
    exportable: bool = True


SPECS = {
    spec.code: spec
    for spec in (
        ActivationSpec("identity", IDENTITY, identity_value, one, lambda z: z.copy(), lambda z, a: np.ones_like(a),
                       "identity", None, None),
        ActivationSpec("sigmoid", SIGMOID, sigmoid_value, sigmoid_derivative, _np_sigmoid,
                       lambda z, a: a * (a.dtype.type(1) - a), "logistic", ("Sigmoid", {}), ("Sigmoid", {}), saturates=True),
        ActivationSpec("tanh", TANH, tanh_value, tanh_derivative, np.tanh, lambda z, a: a.dtype.type(1) - a * a,
                       "tanh", ("Tanh", {}), ("Tanh", {}), saturates=True),
        ActivationSpec("relu", RELU, relu_value, relu_derivative, _np_relu, lambda z, a: (a > 0).astype(a.dtype),
                       "relu", ("ReLU", {}), ("Relu", {})),
        ActivationSpec("leaky_relu", LEAKY_RELU, leaky_relu_value, leaky_relu_derivative,
                       lambda z: np.where(z <= 0, z * z.dtype.type(LEAKY_SLOPE), z),
                       lambda z, a: np.where(a > 0, a.dtype.type(1), a.dtype.type(LEAKY_SLOPE)),
                       None, ("LeakyReLU", {"negative_slope": LEAKY_SLOPE}), _ONNX_LEAKY),
        ActivationSpec("softmax", SOFTMAX, None, None, _np_softmax, None, "softmax", ("Softmax", {"dim": -1}),
                       ("Softmax", {"axis": -1}), output_only=True),
        ActivationSpec("softplus", SOFTPLUS, softplus_value, softplus_derivative, _np_softplus,
                       lambda z, a: a.dtype.type(1) - np.exp(-a), None, ("Softplus", {}), _ONNX_SOFTPLUS),
        ActivationSpec("exp", EXP, exp_value, exp_derivative, np.exp, lambda z, a: a.copy(), "exp", None, ("Exp", {}),
                       output_only=True, exportable=False),
        ActivationSpec("gelu", GELU, gelu_value, gelu_derivative, _np_gelu, _np_gelu_derivative, None, ("GELU", {"approximate": "none"}), _ONNX_GELU,
                       needs_z=True),
        ActivationSpec("gelu_tanh", GELU_TANH, gelu_tanh_value, gelu_tanh_derivative, _np_gelu_tanh, _np_gelu_tanh_derivative,
                       None, ("GELU", {"approximate": "tanh"}), _ONNX_GELU_TANH, needs_z=True),
        ActivationSpec("silu", SILU, silu_value, silu_derivative, _np_silu, _np_silu_derivative, None, ("SiLU", {}), _ONNX_SILU,
                       needs_z=True),
    )
}  # fmt: skip

# --------------------------------------------------------------------------- the pieces
# One piece per activation: ``activation_piece(code)`` is its function, compiled as a C
# callback for each dtype by ``kernels.pieces``. ``code`` is a constant of each piece (a closure
# variable), and ``apply_value``/``apply_derivative`` take it as a literal: each piece holds its
# own activation only.

FORWARD = 0  # what an activation piece does (its first argument)
BACKWARD = 1
BACKWARD_FROM_Z = 2  # the derivative from z alone (a layer whose kept outputs were dropped out)


@helper
def _add_bias(z, b, rows, width):
    for r in range(rows):
        for j in range(width):
            z[r, j] += b[j]


def apply_value(code, z, a, n):
    """``a[i] = f(z[i])`` for i < n, f activation ``code`` (a constant in compiled code)."""
    value, t = SPECS[code].value, z.dtype.type
    for i in range(n):
        a[i] = value(z[i], t)


def apply_derivative(code, delta, z, a, n):
    """``delta[i] *= f'(z[i], a[i])`` for i < n."""
    derivative, t = SPECS[code].derivative, delta.dtype.type
    for i in range(n):
        delta[i] *= derivative(z[i], a[i], t)


def apply_derivative_from_z(code, delta, z, n):
    """``delta[i] *= f'(z[i], f(z[i]))`` for i < n: the output recomputed from z (a layer with
    dropout keeps its dropped outputs, not f(z))."""
    spec, t = SPECS[code], delta.dtype.type
    for i in range(n):
        delta[i] *= spec.derivative(z[i], spec.value(z[i], t), t)


@overload(apply_value, prefer_literal=True)
def _apply_value(code, z, a, n):
    if isinstance(code, types.IntegerLiteral):
        value = SPECS[code.literal_value].value

        def impl(code, z, a, n):
            t = z.dtype.type
            if z.ctypes.data == a.ctypes.data:
                # In place (the layer keeps no z): one array, so that LLVM vectorises the loop
                # (its runtime overlap check refuses two arrays that are the same one).
                for i in range(n):
                    z[i] = value(z[i], t)
            else:
                for i in range(n):
                    a[i] = value(z[i], t)

        return impl


@overload(apply_derivative, prefer_literal=True)
def _apply_derivative(code, delta, z, a, n):
    if isinstance(code, types.IntegerLiteral):
        derivative = SPECS[code.literal_value].derivative

        def impl(code, delta, z, a, n):
            t = delta.dtype.type
            for i in range(n):
                delta[i] *= derivative(z[i], a[i], t)

        return impl


@overload(apply_derivative_from_z, prefer_literal=True)
def _apply_derivative_from_z(code, delta, z, n):
    if isinstance(code, types.IntegerLiteral):
        value, derivative = SPECS[code.literal_value].value, SPECS[code.literal_value].derivative

        def impl(code, delta, z, n):
            t = delta.dtype.type
            for i in range(n):
                delta[i] *= derivative(z[i], value(z[i], t), t)

        return impl


def activation_piece(code):
    """The piece of activation ``code``: ``piece(mode, rows, width, first, second, third)``.

    FORWARD (``first``: rows × width pre-activations ``a_in @ W``; ``second``: the bias;
    ``third``: the outputs): the bias is added to ``first`` in place (it then holds z, which the
    backward pass reads when the activation ``needs_z``), and ``third`` receives a = f(z)
    (``third`` may be ``first``: then z is not kept). Softmax normalises each row, its maximum
    subtracted first so it cannot overflow.

    BACKWARD (``first``: local gradients; ``second``: z; ``third``: a): ``first *= f'(z, a)``;
    for softmax each row g becomes the Jacobian product ``a ⊙ (g − Σ_j g_j a_j)``.
    BACKWARD_FROM_Z (``first``, ``second`` as for BACKWARD): ``first *= f'(z, f(z))`` (hidden
    layers with dropout, whose kept outputs are the dropped ones).
    """
    if code == SOFTMAX:
        return softmax_piece

    def elementwise_piece(mode, rows, width, first, second, third):
        n = rows * width
        if mode == FORWARD:
            _add_bias(view2(first, rows, width), view(second, width), rows, width)
            apply_value(code, view(first, n), view(third, n), n)
        elif mode == BACKWARD:
            apply_derivative(code, view(first, n), view(second, n), view(third, n), n)
        else:
            apply_derivative_from_z(code, view(first, n), view(second, n), n)

    elementwise_piece.__qualname__ = elementwise_piece.__name__ = f"{SPECS[code].name}_piece"
    return elementwise_piece


def softmax_piece(mode, rows, width, first, second, third):
    """Softmax's piece (see ``activation_piece``)."""
    if mode == FORWARD:
        z = view2(first, rows, width)
        _add_bias(z, view(second, width), rows, width)
        _softmax_rows(z, view2(third, rows, width), rows, width)
    else:
        _softmax_jacobian(view2(first, rows, width), view2(third, rows, width), rows, width)


@helper
def _softmax_rows(z, a, rows, width):
    t = z.dtype.type
    for r in range(rows):
        row_max = z[r, 0]
        for j in range(1, width):
            value = z[r, j]
            row_max = value if value > row_max else row_max
        total = t(0.0)
        for j in range(width):
            e = fast_exp(z[r, j] - row_max)
            a[r, j] = e
            total += e
        inv = t(1.0) / total
        for j in range(width):
            a[r, j] *= inv


@helper
def _softmax_jacobian(delta, a, rows, width):
    t = delta.dtype.type
    for r in range(rows):
        dot = t(0.0)
        for j in range(width):
            dot += delta[r, j] * a[r, j]
        for j in range(width):
            delta[r, j] = a[r, j] * (delta[r, j] - dot)
