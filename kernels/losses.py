# stamp: 00ad2935247e4e786e65c3c04439242c
"""Losses of the output layer: the one table of them (``SPECS``), each with its compiled row
value and output local gradient and its NumPy twins; and the piece of each over a block of rows
(``loss_piece``).

Per-row losses (n the batch's rows, or the sum of their sample weights; ``row_scale`` carries
1/n for mean losses, 1 for sse, times the sample weights):

* sse, mse: ½‖a − y‖²
* binary_crossentropy: Σ_j softplus(z) − z·y, the stable form of −y log a − (1 − y) log(1 − a)
* crossentropy: Σ_j y_j (logsumexp(z) − z_j)
* poisson (exp outputs a = e^z, targets y ≥ 0): Σ_j a_j − y_j z_j + y_j log y_j − y_j, half the
  Poisson deviance, as scikit-learn's ``loss="poisson"`` (0 at a = y)

Sums are float64 (a reported number); exponentials are taken in the arrays' dtype (float32
ones vectorise, see ``mathfn``). A loss's delta is ``dC/da·scale``; for the two cross-entropies
it is *fused* with their output activation into ``dC/dz`` (δ = (a − y)·scale, exact and unable
to overflow; the same for poisson with its exp outputs), for the others the output activation's
derivative is applied after it (``activations.activation_backward``).

Adding a loss: one ``SPECS`` entry here (its row value and delta, ``@helper`` functions, and
their NumPy twins); ``fastgd.registry.LOSSES``, the piece and the tests are derived from
``SPECS``. A loss that restricts its targets (as ``poisson`` does) also needs that check.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
from numba import types
from numba.extending import overload

from .jit import helper
from .lowlevel import view, view2
from .mathfn import fast_exp

# Loss codes.
SSE = 0  # ½ Σ_rows ‖a − y‖²
MSE = 1  # 1/(2n) Σ_rows ‖a − y‖²
BINARY_CROSSENTROPY = 2  # sigmoid outputs, mean over rows, summed over outputs
CROSSENTROPY = 3  # softmax outputs, mean over rows
POISSON = 4  # exp outputs, mean over rows, summed over outputs


# --------------------------------------------------------------------------- compiled rows
# row_value(z, a, y, r, n) -> float64 and row_delta(a, y, scale, delta, r, n): row r of n
# outputs of (rows, n) arrays.


@helper
def squared_error(z, a, y, r, n):
    total = 0.0
    for j in range(n):
        diff = np.float64(a[r, j]) - np.float64(y[r, j])
        total += 0.5 * diff * diff
    return total


@helper
def difference(a, y, scale, delta, r, n):
    for j in range(n):
        delta[r, j] = (a[r, j] - y[r, j]) * scale


@helper
def binary_crossentropy(z, a, y, r, n):
    total = 0.0
    for j in range(n):
        zj = z[r, j]
        z64 = np.float64(zj)
        softplus_tail = np.log1p(np.float64(fast_exp(zj if zj < 0 else -zj)))
        total += (z64 if z64 > 0.0 else 0.0) - z64 * np.float64(y[r, j]) + softplus_tail
    return total


@helper
def crossentropy(z, a, y, r, n):
    row_max = z[r, 0]
    for j in range(1, n):
        value = z[r, j]
        row_max = value if value > row_max else row_max
    sum_exp = 0.0
    for j in range(n):
        sum_exp += np.float64(fast_exp(z[r, j] - row_max))
    log_sum_exp = np.float64(row_max) + np.log(sum_exp)
    total = 0.0
    for j in range(n):
        total += np.float64(y[r, j]) * (log_sum_exp - np.float64(z[r, j]))
    return total


@helper
def poisson(z, a, y, r, n):
    total = 0.0
    for j in range(n):
        y64 = np.float64(y[r, j])
        # y log y − y: the constant that makes a perfect prediction's loss 0 (0 log 0 = 0).
        constant = y64 * np.log(y64) - y64 if y64 > 0.0 else 0.0
        total += np.float64(a[r, j]) - y64 * np.float64(z[r, j]) + constant
    return total


@helper
def crossentropy_delta(a, y, scale, delta, r, n):
    # The gradient of Σ_j y_j (logsumexp(z) − z_j) for any non-negative targets: one-hot and
    # probability rows have Σ_j y_j = 1; PyTorch's soft targets behave the same.
    mass = delta.dtype.type(0.0)
    for j in range(n):
        mass += y[r, j]
    for j in range(n):
        delta[r, j] = (a[r, j] * mass - y[r, j]) * scale


# --------------------------------------------------------------------------- NumPy twins


def _np_squared_error(z, a, y):
    return 0.5 * ((a - y) ** 2).sum(axis=1)


def _np_binary_crossentropy(z, a, y):
    # softplus(z) - z*y == -y log(sigmoid z) - (1-y) log(1 - sigmoid z), without overflow.
    return (np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))).sum(axis=1)


def _np_crossentropy(z, a, y):
    z_max = z.max(axis=1, keepdims=True)
    log_sum_exp = z_max + np.log(np.exp(z - z_max).sum(axis=1, keepdims=True))
    return (y * (log_sum_exp - z)).sum(axis=1)


def _np_poisson(z, a, y):
    y64 = y.astype(np.float64)
    constant = np.where(y64 > 0, y64 * np.log(np.where(y64 > 0, y64, 1.0)) - y64, 0.0)
    return (a.astype(np.float64) - y64 * z.astype(np.float64) + constant).sum(axis=1)


def _np_difference(a, y, scale):
    return (a - y) * scale[:, None]


def _np_crossentropy_delta(a, y, scale):
    return (a * y.sum(axis=1, keepdims=True) - y) * scale[:, None]


# --------------------------------------------------------------------------- the table


class LossSpec(NamedTuple):
    """One loss. ``row_value``/``row_delta``: the compiled row forms; ``numpy_row_value(z, a, y)``
    (rows,) and ``numpy_delta(a, y, row_scale)`` their twins (float64 and the arrays' dtype);
    ``fused``: the delta is already dC/dz (no output derivative applied after it); ``mean``:
    averaged over rows (else summed); ``required_output``: the output activation the loss is
    defined for, if any; ``default_output``: the one a network gets when it names none;
    ``formula``: its definition, as the user guide states it (docs/user_guide/networks.rst)."""

    name: str
    code: int
    row_value: object
    row_delta: object
    numpy_row_value: Callable
    numpy_delta: Callable
    fused: bool
    mean: bool
    required_output: str | None
    default_output: str | None
    formula: str


SPECS = {
    spec.code: spec
    for spec in (
        LossSpec("sse", SSE, squared_error, difference, _np_squared_error, _np_difference, False, False, None, None,
                 "½ Σ_rows ‖a − y‖²"),
        LossSpec("mse", MSE, squared_error, difference, _np_squared_error, _np_difference, False, True, None, None,
                 "(1/2n) Σ_rows ‖a − y‖²"),
        LossSpec("binary_crossentropy", BINARY_CROSSENTROPY, binary_crossentropy, difference, _np_binary_crossentropy,
                 _np_difference, True, True, "sigmoid", "sigmoid", "−(1/n) Σ_rows Σ_j [y log a + (1 − y) log(1 − a)]"),
        LossSpec("crossentropy", CROSSENTROPY, crossentropy, crossentropy_delta, _np_crossentropy, _np_crossentropy_delta,
                 True, True, "softmax", "softmax", "−(1/n) Σ_rows Σ_j y_j log a_j"),
        LossSpec("poisson", POISSON, poisson, difference, _np_poisson, _np_difference, True, True, "exp", "exp",
                 "(1/n) Σ_rows Σ_j [a − y log a + y log y − y]"),
    )
}  # fmt: skip


# --------------------------------------------------------------------------- the pieces
# One piece per loss: ``loss_piece(code)`` (compiled per dtype by ``kernels.pieces``).

def loss_rows(code, z, a, y, scale, delta, rows, width):
    """``Σ_r scale[r] · loss(row r)`` (float64) of loss ``code`` (a constant in compiled code)
    over ``rows`` rows of ``width`` outputs, each row's local gradient written into ``delta``."""
    spec = SPECS[code]
    total = 0.0
    for r in range(rows):
        total += np.float64(scale[r]) * spec.row_value(z, a, y, r, width)
        spec.row_delta(a, y, scale[r], delta, r, width)
    return total


@overload(loss_rows, prefer_literal=True)
def _loss_rows(code, z, a, y, scale, delta, rows, width):
    if isinstance(code, types.IntegerLiteral):
        row_value, row_delta = SPECS[code.literal_value].row_value, SPECS[code.literal_value].row_delta

        def impl(code, z, a, y, scale, delta, rows, width):
            total = 0.0
            for r in range(rows):
                total += np.float64(scale[r]) * row_value(z, a, y, r, width)
                row_delta(a, y, scale[r], delta, r, width)
            return total

        return impl


def loss_piece(code):
    """The piece of loss ``code``: ``piece(rows, width, z, a, y, scales, delta)``, the loss of
    a block of ``rows`` rows of ``width`` outputs: returns ``Σ_r scales[r] · loss(row r)`` in
    float64, and writes each row's local gradient into ``delta`` (``dC/da · scale``, or for a
    fused loss ``dC/dz · scale``). ``z``, ``a``, ``y`` and ``delta`` point at rows × width
    values (the output layer's z, a = f(z), the targets, and the written gradients);
    ``scales`` at each row's weight (``row_scale``). ``code`` is a constant of each piece (a
    closure variable), so a piece holds its own loss only.
    """

    def piece(rows, width, source, target, targets, scales, delta):
        z, a, y = view2(source, rows, width), view2(target, rows, width), view2(targets, rows, width)
        return loss_rows(code, z, a, y, view(scales, rows), view2(delta, rows, width), rows, width)

    piece.__qualname__ = piece.__name__ = f"{SPECS[code].name}_piece"
    return piece
