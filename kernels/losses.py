# stamp: b3d150e6b0a0a31ee628ada1ac352e97
"""Losses of the output layer: the one table of them (``SPECS``), each declaring its compiled row
value and output local gradient, its NumPy twins and its properties; and ``loss_rows``, which runs
one of them over a block of rows.

Per-row losses (n the batch's rows, or the sum of their sample weights; ``row_scale`` carries
1/n for mean losses, 1 for sse, times the sample weights):

* sse, mse: ½‖a − y‖²
* binary_crossentropy: Σ_j softplus(z) − z·y, the stable form of −y log a − (1 − y) log(1 − a)
* crossentropy: Σ_j y_j (logsumexp(z) − z_j)
* poisson (exp outputs a = e^z, targets y ≥ 0): Σ_j a_j − y_j z_j + y_j log y_j − y_j, half the
  Poisson deviance, as scikit-learn's ``loss="poisson"`` (0 at a = y)
* huber: (1/m) Σ_j h(a_j − y_j), h(x) = ½x² for |x| < δ, else δ(|x| − ½δ), m the outputs: with
  the mean over rows, PyTorch's ``HuberLoss(delta=δ)`` (the mean over every element)

Sums are float64 (a reported number); exponentials are taken in the arrays' dtype (float32
ones vectorise, see ``mathfn``). A loss's delta is ``dC/da·scale``; for the two cross-entropies
and poisson it is *fused* with their output activation into ``dC/dz`` (δ = (a − y)·scale, exact
and unable to overflow), for the others the output activation's derivative is applied after it.

Adding a loss: one ``SPECS`` entry (its row value and delta, ``@helper`` functions, their NumPy
twins, and its properties); the network's checks, the docs, the registry and the tests read
the properties, and ``loss_rows``'s branch is written out from the table.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
from numba.extending import overload

from .config import EXACT_OPTIONS
from .jit import generated, subroutine
from .lowlevel import select, span
from .mathfn import fast_exp

# Loss codes.
SSE = 0  # ½ Σ_rows ‖a − y‖²
MSE = 1  # 1/(2n) Σ_rows ‖a − y‖²
BINARY_CROSSENTROPY = 2  # sigmoid outputs, mean over rows, summed over outputs
CROSSENTROPY = 3  # softmax outputs, mean over rows
POISSON = 4  # exp outputs, mean over rows, summed over outputs
HUBER = 5  # PyTorch's HuberLoss: mean over every element

# What a loss's targets may be (``LossSpec.targets``), checked before a fit.
ANY_TARGETS = "any"
CLASS_TARGETS = "classes"  # one-hot or probability rows, or integer class labels (n,)
UNIT_TARGETS = "unit interval"  # every target in [0, 1]
COUNT_TARGETS = "non-negative"  # every target >= 0

# --------------------------------------------------------------------------- compiled rows
# row_value(z, a, y, row, n, parameter) -> float64 and row_delta(a, y, scale, delta, row, n,
# parameter): the row of n outputs starting at flat index ``row``; ``parameter`` the loss's own
# (Huber's δ; 0 for the others). They index the flat arrays by ``span`` (``lowlevel.span``).


@subroutine
def squared_error(z, a, y, row, n, parameter):
    total = 0.0
    for j in span(row, n):
        diff = np.float64(a[j]) - np.float64(y[j])
        total += 0.5 * diff * diff
    return total


@subroutine
def difference(a, y, scale, delta, row, n, parameter):
    for j in span(row, n):
        delta[j] = (a[j] - y[j]) * scale


@subroutine
def binary_crossentropy(z, a, y, row, n, parameter):
    total = 0.0
    for j in span(row, n):
        zj = z[j]
        z64 = np.float64(zj)
        softplus_tail = np.log1p(np.float64(fast_exp(-abs(zj))))
        total += select(z64 > 0.0, z64, 0.0) - z64 * np.float64(y[j]) + softplus_tail
    return total


@subroutine
def crossentropy(z, a, y, row, n, parameter):
    row_max = z[row]
    for j in span(row + 1, n - 1):
        value = z[j]
        row_max = select(value > row_max, value, row_max)
    sum_exp = 0.0
    for j in span(row, n):
        sum_exp += np.float64(fast_exp(z[j] - row_max))
    log_sum_exp = np.float64(row_max) + np.log(sum_exp)
    total = 0.0
    for j in span(row, n):
        total += np.float64(y[j]) * (log_sum_exp - np.float64(z[j]))
    return total


@subroutine
def crossentropy_delta(a, y, scale, delta, row, n, parameter):
    # The gradient of Σ_j y_j (logsumexp(z) − z_j) for any non-negative targets: one-hot and
    # probability rows have Σ_j y_j = 1; PyTorch's soft targets behave the same.
    mass = delta.dtype.type(0.0)
    for j in span(row, n):
        mass += y[j]
    for j in span(row, n):
        delta[j] = (a[j] * mass - y[j]) * scale


@subroutine
def poisson(z, a, y, row, n, parameter):
    total = 0.0
    for j in span(row, n):
        y64 = np.float64(y[j])
        # y log y − y: the constant that makes a perfect prediction's loss 0 (0 log 0 = 0).
        constant = select(y64 > 0.0, y64 * np.log(select(y64 > 0.0, y64, 1.0)) - y64, 0.0)
        total += np.float64(a[j]) - y64 * np.float64(z[j]) + constant
    return total


@subroutine
def huber(z, a, y, row, n, parameter):
    total = 0.0
    for j in span(row, n):
        x = abs(np.float64(a[j]) - np.float64(y[j]))
        total += select(x < parameter, 0.5 * x * x, parameter * (x - 0.5 * parameter))
    return total / n


@subroutine
def huber_delta(a, y, scale, delta, row, n, parameter):
    # d/da of h(a − y)/n: (a − y)/n inside δ, ±δ/n outside (PyTorch's clamp of a − y to [−δ, δ]).
    t = delta.dtype.type
    limit, share = t(parameter), scale / t(n)
    for j in span(row, n):
        x = a[j] - y[j]
        clamped = select(x > limit, limit, select(x < -limit, -limit, x))
        delta[j] = clamped * share


# --------------------------------------------------------------------------- NumPy twins
# numpy_row_value(z, a, y, parameter) (rows,) float64 and numpy_delta(a, y, row_scale, parameter).


def _np_squared_error(z, a, y, parameter):
    return 0.5 * ((a.astype(np.float64) - y) ** 2).sum(axis=1)


def _np_difference(a, y, scale, parameter):
    return (a - y) * scale[:, None]


def _np_binary_crossentropy(z, a, y, parameter):
    # softplus(z) - z*y == -y log(sigmoid z) - (1-y) log(1 - sigmoid z), without overflow.
    z = z.astype(np.float64)
    return (np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))).sum(axis=1)


def _np_crossentropy(z, a, y, parameter):
    z = z.astype(np.float64)
    z_max = z.max(axis=1, keepdims=True)
    log_sum_exp = z_max + np.log(np.exp(z - z_max).sum(axis=1, keepdims=True))
    return (y * (log_sum_exp - z)).sum(axis=1)


def _np_crossentropy_delta(a, y, scale, parameter):
    return (a * y.sum(axis=1, keepdims=True) - y) * scale[:, None]


def _np_poisson(z, a, y, parameter):
    y64 = y.astype(np.float64)
    constant = np.where(y64 > 0, y64 * np.log(np.where(y64 > 0, y64, 1.0)) - y64, 0.0)
    return (a.astype(np.float64) - y64 * z.astype(np.float64) + constant).sum(axis=1)


def _np_huber(z, a, y, parameter):
    x = np.abs(a.astype(np.float64) - y)
    return np.where(x < parameter, 0.5 * x * x, parameter * (x - 0.5 * parameter)).mean(axis=1)


def _np_huber_delta(a, y, scale, parameter):
    limit = a.dtype.type(parameter)
    return np.clip(a - y, -limit, limit) * (scale / a.dtype.type(a.shape[1]))[:, None]


# --------------------------------------------------------------------------- the table


class LossSpec(NamedTuple):
    """One loss, everything about it in one place.

    ``row_value``/``row_delta``: the compiled row forms; ``numpy_row_value(z, a, y, parameter)``
    (rows,) and ``numpy_delta(a, y, row_scale, parameter)`` their twins (float64 and the arrays'
    dtype). Properties, read by the network, the fit's checks and the docs instead of the loss's
    name: ``fused``: the delta is already dC/dz (no output derivative applied after it);
    ``mean``: averaged over rows (else summed); ``targets``: what the targets may be (``*_TARGETS``);
    ``score``: the validation score a classifier reports ("argmax" for one class per row,
    "threshold" for independent 0/1 outputs, None); ``required_output``: the output activation
    the loss is defined for, if any; ``default_output``: the one a network gets when it names
    none; ``parameter``: the name and default of the loss's one parameter (Huber's δ), or None;
    ``formula``: its definition, as the user guide states it; ``torch``: PyTorch's loss module
    and how its value relates to this one.
    """

    name: str
    code: int
    row_value: object
    row_delta: object
    numpy_row_value: Callable
    numpy_delta: Callable
    fused: bool
    mean: bool
    targets: str
    score: str | None
    required_output: str | None
    default_output: str | None
    formula: str
    parameter: tuple | None = None

    def parameter_value(self, value=None) -> float:
        """The loss's parameter as the kernels take it: ``value``, or where None the declared
        default (0.0 for a loss without one)."""
        if value is not None:
            return float(value)
        return float(self.parameter[1]) if self.parameter is not None else 0.0


SPECS = {
    spec.code: spec
    for spec in (
        LossSpec(
            name="sse",
            code=SSE,
            row_value=squared_error,
            row_delta=difference,
            numpy_row_value=_np_squared_error,
            numpy_delta=_np_difference,
            fused=False,
            mean=False,
            targets=ANY_TARGETS,
            score=None,
            required_output=None,
            default_output=None,
            formula="½ Σ_rows ‖a − y‖²",
        ),
        LossSpec(
            name="mse",
            code=MSE,
            row_value=squared_error,
            row_delta=difference,
            numpy_row_value=_np_squared_error,
            numpy_delta=_np_difference,
            fused=False,
            mean=True,
            targets=ANY_TARGETS,
            score=None,
            required_output=None,
            default_output=None,
            formula="(1/2n) Σ_rows ‖a − y‖²",
        ),
        LossSpec(
            name="binary_crossentropy",
            code=BINARY_CROSSENTROPY,
            row_value=binary_crossentropy,
            row_delta=difference,
            numpy_row_value=_np_binary_crossentropy,
            numpy_delta=_np_difference,
            fused=True,
            mean=True,
            targets=UNIT_TARGETS,
            score="threshold",
            required_output="sigmoid",
            default_output="sigmoid",
            formula="−(1/n) Σ_rows Σ_j [y log a + (1 − y) log(1 − a)]",
        ),
        LossSpec(
            name="crossentropy",
            code=CROSSENTROPY,
            row_value=crossentropy,
            row_delta=crossentropy_delta,
            numpy_row_value=_np_crossentropy,
            numpy_delta=_np_crossentropy_delta,
            fused=True,
            mean=True,
            targets=CLASS_TARGETS,
            score="argmax",
            required_output="softmax",
            default_output="softmax",
            formula="−(1/n) Σ_rows Σ_j y_j log a_j",
        ),
        LossSpec(
            name="poisson",
            code=POISSON,
            row_value=poisson,
            row_delta=difference,
            numpy_row_value=_np_poisson,
            numpy_delta=_np_difference,
            fused=True,
            mean=True,
            targets=COUNT_TARGETS,
            score=None,
            required_output="exp",
            default_output="exp",
            formula="(1/n) Σ_rows Σ_j [a − y log a + y log y − y]",
        ),
        LossSpec(
            name="huber",
            code=HUBER,
            row_value=huber,
            row_delta=huber_delta,
            numpy_row_value=_np_huber,
            numpy_delta=_np_huber_delta,
            fused=False,
            mean=True,
            targets=ANY_TARGETS,
            score=None,
            required_output=None,
            default_output=None,
            formula="(1/(n·m)) Σ_rows Σ_j h(a_j − y_j), h(x) = ½x² for |x| < δ, else δ(|x| − ½δ)",
            parameter=("delta", 1.0),
        ),
    )
}


# --------------------------------------------------------------------------- over a block


def loss_rows(code, z, a, y, scale, delta, rows, width, parameter):
    """``Σ_r scale[r] · loss(row r)`` (float64) of loss ``code`` over ``rows`` rows of ``width``
    outputs (flat, row-major ``z``, ``a`` = f(z), targets ``y``), each row's local gradient
    written into ``delta`` (``dC/da · scale``, or for a fused loss ``dC/dz · scale``).

    The plain-Python form (``NUMBA_DISABLE_JIT``); compiled code runs the same branches, written
    out from ``SPECS`` (``_loss_rows``).
    """
    spec = SPECS[code]
    total = 0.0
    for r in range(rows):
        total += np.float64(scale[r]) * spec.row_value(z, a, y, r * width, width, parameter)
        spec.row_delta(a, y, scale[r], delta, r * width, width, parameter)
    return total


_BRANCH = """
    elif code == {code}:
        for r in range(rows):
            total += np.float64(scale[r]) * value_{code}(z, a, y, r * width, width, parameter)
            delta_{code}(a, y, scale[r], delta, r * width, width, parameter)
"""


@overload(loss_rows, jit_options=EXACT_OPTIONS)
def _loss_rows(code, z, a, y, scale, delta, rows, width, parameter):
    codes = sorted(SPECS)
    source = (
        "def loss_rows(code, z, a, y, scale, delta, rows, width, parameter):\n"
        "    total = 0.0\n"
        "    if code < 0:\n"
        "        pass\n" + "".join(_BRANCH.format(code=code) for code in codes) + "    return total\n"
    )
    namespace = dict(np=np)
    for code in codes:
        namespace[f"value_{code}"], namespace[f"delta_{code}"] = SPECS[code].row_value, SPECS[code].row_delta
    return generated("loss_rows", source, namespace)
