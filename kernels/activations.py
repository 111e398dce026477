# stamp: 3a1ee6db4acc34969eb2e3bf63f08d61
"""The activation functions: the one table of them (``SPECS``), each with its compiled scalar
forms, its NumPy twins and its names in the tools fastgd converts to; and ``apply``, which runs
one of them over a block of rows.

Derivatives take both the pre-activation z and the output a = f(z): sigmoid a(1 − a), tanh
1 − a², relu 1[a > 0] read the output, while gelu, gelu_tanh and silu need z (``needs_z``).
``apply`` computes them where z is at hand, in the forward pass, into the layer's slopes, so no
layer keeps its z for the backward pass.

Adding an activation is one ``SPECS`` entry and its two scalar functions: ``value(z, t)`` and
``derivative(z, a, t)`` (``@helper`` functions of straight-line code, ``lowlevel.select`` for a
choice; constants in the argument's dtype, ``t(0.5)``, never a bare Python float, which would
promote float32 to float64), plus its NumPy twins and
its names for scikit-learn, PyTorch and ONNX. Its branch of ``apply`` is written out from the
table; the tests, conversions and docs walk the table.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np
from numba.extending import overload

from .config import EXACT_OPTIONS
from .jit import generated, helper, subroutine
from .lowlevel import select
from .mathfn import fast_erf, fast_exp, fast_log1p, fast_tanh

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
    return select(z <= t(0.0), t(0.0), z)


@helper
def relu_derivative(z, a, t):
    return select(a > t(0.0), t(1.0), t(0.0))


@helper
def leaky_relu_value(z, t):
    return select(z <= t(0.0), z * t(LEAKY_SLOPE), z)


@helper
def leaky_relu_derivative(z, a, t):
    return select(a > t(0.0), t(1.0), t(LEAKY_SLOPE))


@helper
def softplus_value(z, t):
    # log(1 + e^z) = max(z, 0) + log1p(e^-|z|): no overflow for large |z|.
    return select(z > t(0.0), z, t(0.0)) + fast_log1p(fast_exp(-abs(z)))


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
    return t(0.5 * np.float64(z) * (1.0 + fast_erf(np.float64(z) * SQRT_HALF)))


@helper
def gelu_derivative(z, a, t):
    # Φ(z) + z·φ(z), in PyTorch's form: cdf + z·pdf.
    x = np.float64(z)
    cdf = 0.5 * (1.0 + fast_erf(x * SQRT_HALF))
    pdf = fast_exp(-0.5 * x * x) * GELU_PDF
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
    return t(0.5) * (t(1) + tanh_inner) + t(0.5) * z * (t(1) - tanh_inner * tanh_inner) * beta * (
        t(1) + t(3) * kappa * z * z
    )


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
_ONNX_SOFTPLUS = (
    ("Relu", ("z",), "pos"),
    ("Abs", ("z",), "abs"),
    ("Neg", ("abs",), "neg"),
    ("Exp", ("neg",), "exp"),
    ("Add", ("exp", 1.0), "onep"),
    ("Log", ("onep",), "log"),
    ("Add", ("pos", "log"), "out"),
)
_ONNX_GELU = (
    ("Mul", ("z", SQRT_HALF), "scaled"),
    ("Erf", ("scaled",), "erf"),
    ("Add", ("erf", 1.0), "onep"),
    ("Mul", ("z", "onep"), "zp"),
    ("Mul", ("zp", 0.5), "out"),
)
_ONNX_GELU_TANH = (
    ("Mul", ("z", "z"), "square"),
    ("Mul", ("square", "z"), "cube"),
    ("Mul", ("cube", GELU_TANH_KAPPA), "kc"),
    ("Add", ("z", "kc"), "sum"),
    ("Mul", ("sum", GELU_TANH_BETA), "inner"),
    ("Tanh", ("inner",), "tanh"),
    ("Add", ("tanh", 1.0), "onep"),
    ("Mul", ("z", "onep"), "zp"),
    ("Mul", ("zp", 0.5), "out"),
)
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
    only the output layer may use it; ``needs_z``: its derivative reads the pre-activation z,
    not only the output; ``exportable``: False when no other tool has it.
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
        ActivationSpec(
            name="identity",
            code=IDENTITY,
            value=identity_value,
            derivative=one,
            numpy_value=lambda z: z.copy(),
            numpy_derivative=lambda z, a: np.ones_like(a),
            sklearn="identity",
            torch=None,
            onnx=None,
        ),
        ActivationSpec(
            name="sigmoid",
            code=SIGMOID,
            value=sigmoid_value,
            derivative=sigmoid_derivative,
            numpy_value=_np_sigmoid,
            numpy_derivative=lambda z, a: a * (a.dtype.type(1) - a),
            sklearn="logistic",
            torch=("Sigmoid", {}),
            onnx=("Sigmoid", {}),
            saturates=True,
        ),
        ActivationSpec(
            name="tanh",
            code=TANH,
            value=tanh_value,
            derivative=tanh_derivative,
            numpy_value=np.tanh,
            numpy_derivative=lambda z, a: a.dtype.type(1) - a * a,
            sklearn="tanh",
            torch=("Tanh", {}),
            onnx=("Tanh", {}),
            saturates=True,
        ),
        ActivationSpec(
            name="relu",
            code=RELU,
            value=relu_value,
            derivative=relu_derivative,
            numpy_value=_np_relu,
            numpy_derivative=lambda z, a: (a > 0).astype(a.dtype),
            sklearn="relu",
            torch=("ReLU", {}),
            onnx=("Relu", {}),
        ),
        ActivationSpec(
            name="leaky_relu",
            code=LEAKY_RELU,
            value=leaky_relu_value,
            derivative=leaky_relu_derivative,
            numpy_value=lambda z: np.where(z <= 0, z * z.dtype.type(LEAKY_SLOPE), z),
            numpy_derivative=lambda z, a: np.where(a > 0, a.dtype.type(1), a.dtype.type(LEAKY_SLOPE)),
            sklearn=None,
            torch=("LeakyReLU", {"negative_slope": LEAKY_SLOPE}),
            onnx=_ONNX_LEAKY,
        ),
        ActivationSpec(
            name="softmax",
            code=SOFTMAX,
            value=None,
            derivative=None,
            numpy_value=_np_softmax,
            numpy_derivative=None,
            sklearn="softmax",
            torch=("Softmax", {"dim": -1}),
            onnx=("Softmax", {"axis": -1}),
            output_only=True,
        ),
        ActivationSpec(
            name="softplus",
            code=SOFTPLUS,
            value=softplus_value,
            derivative=softplus_derivative,
            numpy_value=_np_softplus,
            numpy_derivative=lambda z, a: a.dtype.type(1) - np.exp(-a),
            sklearn=None,
            torch=("Softplus", {}),
            onnx=_ONNX_SOFTPLUS,
        ),
        ActivationSpec(
            name="exp",
            code=EXP,
            value=exp_value,
            derivative=exp_derivative,
            numpy_value=np.exp,
            numpy_derivative=lambda z, a: a.copy(),
            sklearn="exp",
            torch=None,
            onnx=("Exp", {}),
            output_only=True,
            exportable=False,
        ),
        ActivationSpec(
            name="gelu",
            code=GELU,
            value=gelu_value,
            derivative=gelu_derivative,
            numpy_value=_np_gelu,
            numpy_derivative=_np_gelu_derivative,
            sklearn=None,
            torch=("GELU", {"approximate": "none"}),
            onnx=_ONNX_GELU,
            needs_z=True,
        ),
        ActivationSpec(
            name="gelu_tanh",
            code=GELU_TANH,
            value=gelu_tanh_value,
            derivative=gelu_tanh_derivative,
            numpy_value=_np_gelu_tanh,
            numpy_derivative=_np_gelu_tanh_derivative,
            sklearn=None,
            torch=("GELU", {"approximate": "tanh"}),
            onnx=_ONNX_GELU_TANH,
            needs_z=True,
        ),
        ActivationSpec(
            name="silu",
            code=SILU,
            value=silu_value,
            derivative=silu_derivative,
            numpy_value=_np_silu,
            numpy_derivative=_np_silu_derivative,
            sklearn=None,
            torch=("SiLU", {}),
            onnx=_ONNX_SILU,
            needs_z=True,
        ),
    )
}

# --------------------------------------------------------------------------- over a block
# ``apply`` runs one activation over a block of rows, in place. Compiled code gets a dispatch
# written out from the table when it is compiled (``jit.generated``): one branch per entry of
# ``SPECS``, each a plain loop over its scalar functions, which LLVM vectorises.


def apply(code, a, d, rows, width, slopes):
    """Activation ``code`` over a block of ``rows × width`` values (flat, row-major), in place.

    ``a`` holds the pre-activations z (bias added) and receives a = f(z); with ``slopes`` the
    derivatives f'(z) go to ``d`` (same shape), which the backward pass multiplies the local
    gradients by (so it needs neither z nor an activation of its own). Softmax (output layers
    only) normalises each row, its maximum subtracted first; it writes no slopes (its Jacobian
    couples a row: ``softmax_backward``).

    This is the plain-Python form (``NUMBA_DISABLE_JIT``); compiled code runs the same branches,
    written out from ``SPECS`` (``_apply``).
    """
    if code == SOFTMAX:
        _softmax(a, rows, width)
        return
    spec, t = SPECS[code], a.dtype.type
    for i in range(rows * width):
        z = a[i]
        value = spec.value(z, t)
        if slopes:
            d[i] = spec.derivative(z, value, t)
        a[i] = value


_BRANCH = """
    elif code == {code}:
        if slopes:
            for i in range(n):
                z = a[i]
                value = value_{code}(z, t)
                d[i] = derivative_{code}(z, value, t)
                a[i] = value
        else:
            for i in range(n):
                a[i] = value_{code}(a[i], t)
"""


@overload(apply, jit_options=EXACT_OPTIONS)
def _apply(code, a, d, rows, width, slopes):
    elementwise = sorted(code for code, spec in SPECS.items() if spec.value is not None)
    source = (
        "def apply(code, a, d, rows, width, slopes):\n"
        "    t = a.dtype.type\n"
        "    n = rows * width\n"
        "    if code == SOFTMAX:\n"
        "        _softmax(a, rows, width)\n" + "".join(_BRANCH.format(code=code) for code in elementwise)
    )
    namespace = dict(SOFTMAX=SOFTMAX, _softmax=_softmax)
    for code in elementwise:
        namespace[f"value_{code}"], namespace[f"derivative_{code}"] = SPECS[code].value, SPECS[code].derivative
    return generated("apply", source, namespace)


@subroutine
def _softmax(a, rows, width):
    t = a.dtype.type
    for r in range(rows):
        row = r * width
        row_max = a[row]
        for j in range(1, width):
            value = a[row + j]
            row_max = value if value > row_max else row_max
        total = t(0.0)
        for j in range(width):
            e = fast_exp(a[row + j] - row_max)
            a[row + j] = e
            total += e
        inv = t(1.0) / total
        for j in range(width):
            a[row + j] *= inv


@subroutine
def softmax_backward(delta, a, rows, width):
    """Each row g of ``delta`` becomes softmax's Jacobian product ``a ⊙ (g − Σ_j g_j a_j)``."""
    t = delta.dtype.type
    for r in range(rows):
        row = r * width
        dot = t(0.0)
        for j in range(width):
            dot += delta[row + j] * a[row + j]
        for j in range(width):
            delta[row + j] = a[row + j] * (delta[row + j] - dot)
