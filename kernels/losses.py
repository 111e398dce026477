"""Losses of the output layer: the one table of them (``SPECS``), each with its compiled row
value and output local gradient, its NumPy twins, and the compiled piece of each (``PIECES``).

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
to overflow; the same for poisson with its exp outputs), for the others the output activation's derivative is applied after it (by its
piece, ``kernels.activations``).

Adding a loss: one ``SPECS`` entry here (its row value and delta, ``@njit(inline="always")``,
and their NumPy twins); ``fastgd.registry.LOSSES``, the pieces and the tests are derived from
``SPECS``. A loss that restricts its targets (as ``poisson`` does) also needs that check.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
from numba import njit

from .compat import make_piece, unsigned
from .config import JIT_OPTIONS
from .mathfn import fast_exp

# Loss codes.
SSE = 0  # ½ Σ_rows ‖a − y‖²
MSE = 1  # 1/(2n) Σ_rows ‖a − y‖²
BINARY_CROSSENTROPY = 2  # sigmoid outputs, mean over rows, summed over outputs
CROSSENTROPY = 3  # softmax outputs, mean over rows
POISSON = 4  # exp outputs, mean over rows, summed over outputs

_INLINE = dict(JIT_OPTIONS, inline="always")


# --------------------------------------------------------------------------- compiled rows
# row_value(z, z_start, a, a_start, y, y_start, n) -> float64 and
# row_delta(a, a_start, y, y_start, scale, delta, delta_start, n): one row of n outputs.


@njit(**_INLINE)
def _squared_error(z, z_start, a, a_start, y, y_start, n):
    total = 0.0
    for j in range(n):
        diff = np.float64(a[a_start + j]) - np.float64(y[y_start + j])
        total += 0.5 * diff * diff
    return total


@njit(**_INLINE)
def _difference(a, a_start, y, y_start, scale, delta, delta_start, n):
    for j in range(n):
        delta[delta_start + j] = (a[a_start + j] - y[y_start + j]) * scale


@njit(**_INLINE)
def _binary_crossentropy(z, z_start, a, a_start, y, y_start, n):
    total = 0.0
    for j in range(n):
        zj = z[z_start + j]
        z64 = np.float64(zj)
        softplus_tail = np.log1p(np.float64(fast_exp(zj if zj < 0 else -zj)))
        total += (z64 if z64 > 0.0 else 0.0) - z64 * np.float64(y[y_start + j]) + softplus_tail
    return total


@njit(**_INLINE)
def _crossentropy(z, z_start, a, a_start, y, y_start, n):
    row_max = z[z_start]
    for j in range(1, n):
        value = z[z_start + j]
        row_max = value if value > row_max else row_max
    sum_exp = 0.0
    for j in range(n):
        sum_exp += np.float64(fast_exp(z[z_start + j] - row_max))
    log_sum_exp = np.float64(row_max) + np.log(sum_exp)
    total = 0.0
    for j in range(n):
        total += np.float64(y[y_start + j]) * (log_sum_exp - np.float64(z[z_start + j]))
    return total


@njit(**_INLINE)
def _poisson(z, z_start, a, a_start, y, y_start, n):
    total = 0.0
    for j in range(n):
        y64 = np.float64(y[y_start + j])
        # y log y − y: the constant that makes a perfect prediction's loss 0 (0 log 0 = 0).
        constant = y64 * np.log(y64) - y64 if y64 > 0.0 else 0.0
        total += np.float64(a[a_start + j]) - y64 * np.float64(z[z_start + j]) + constant
    return total


@njit(**_INLINE)
def _crossentropy_delta(a, a_start, y, y_start, scale, delta, delta_start, n):
    # The gradient of Σ_j y_j (logsumexp(z) − z_j) for any non-negative targets: one-hot and
    # probability rows have Σ_j y_j = 1; PyTorch's soft targets behave the same.
    mass = delta.dtype.type(0.0)
    for j in range(n):
        mass += y[y_start + j]
    for j in range(n):
        delta[delta_start + j] = (a[a_start + j] * mass - y[y_start + j]) * scale


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
    ``formula``: its definition, as the README states it."""

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
        LossSpec("sse", SSE, _squared_error, _difference, _np_squared_error, _np_difference, False, False, None, None,
                 "½ Σ_rows ‖a − y‖²"),
        LossSpec("mse", MSE, _squared_error, _difference, _np_squared_error, _np_difference, False, True, None, None,
                 "(1/2n) Σ_rows ‖a − y‖²"),
        LossSpec("binary_crossentropy", BINARY_CROSSENTROPY, _binary_crossentropy, _difference, _np_binary_crossentropy,
                 _np_difference, True, True, "sigmoid", "sigmoid", "−(1/n) Σ_rows Σ_j [y log a + (1 − y) log(1 − a)]"),
        LossSpec("crossentropy", CROSSENTROPY, _crossentropy, _crossentropy_delta, _np_crossentropy, _np_crossentropy_delta,
                 True, True, "softmax", "softmax", "−(1/n) Σ_rows Σ_j y_j log a_j"),
        LossSpec("poisson", POISSON, _poisson, _difference, _np_poisson, _np_difference, True, True, "exp", "exp",
                 "(1/n) Σ_rows Σ_j [a − y log a + y log y − y]"),
    )
}  # fmt: skip


# --------------------------------------------------------------------------- the pieces


def _loss(z, z_start, a, a_start, y, y_start, row_scale, scale_start, delta, delta_start, rows, n):
    """A loss's piece over ``rows`` rows of ``n`` outputs (``ROW_VALUE``/``ROW_DELTA`` bound
    per loss): returns ``Σ_r row_scale[scale_start + r] · loss(row r)`` in float64, and writes
    each row's delta (``dC/da · scale``, or for a fused loss ``dC/dz · scale``).

    Row r of ``z`` starts at ``z_start + r·n``, likewise ``a``, ``y`` and ``delta``.

    Returns
    -------
    float64
    """
    total = 0.0
    for r in range(unsigned(rows)):
        row = r * unsigned(n)
        scale = row_scale[unsigned(scale_start) + r]
        total += np.float64(scale) * ROW_VALUE(z, unsigned(z_start) + row, a, unsigned(a_start) + row,  # noqa: F821
                                               y, unsigned(y_start) + row, unsigned(n))  # fmt: skip
        ROW_DELTA(a, unsigned(a_start) + row, y, unsigned(y_start) + row, scale, delta,  # noqa: F821
                  unsigned(delta_start) + row, unsigned(n))  # fmt: skip
    return total


# Loss code -> its piece (kind "loss" in kernels.pieces).
PIECES = {code: make_piece(_loss, f"loss_{spec.name}", ROW_VALUE=spec.row_value, ROW_DELTA=spec.row_delta)
          for code, spec in SPECS.items()}  # fmt: skip
