"""Losses of the output layer, one row at a time: the loss value and the output local gradient.

Per-row losses (n the batch's rows, or the sum of their sample weights; ``row_scale`` carries
1/n for mean losses, 1 for sse, times the sample weights):

* sse, mse: ½‖a − y‖²
* binary_crossentropy: Σ_j softplus(z) − z·y, the stable form of −y log a − (1 − y) log(1 − a)
* crossentropy: Σ_j y_j (logsumexp(z) − z_j)

Sums are float64 (a reported number); exponentials are taken in the arrays' dtype (float32
ones vectorise, see ``mathfn``). The output delta is fused for the two cross-entropies,
δ = (a − y)·scale, which is exact and cannot overflow. The NumPy twins are
``fastgd.reference.ROW_LOSSES`` and ``output_delta``.
"""

import numpy as np
from numba import njit

from .activations import SOFTMAX, derivative_value, LEAKY_SLOPE
from .compat import unsigned
from .config import JIT_OPTIONS
from .mathfn import fast_exp

# Loss codes.
SSE = 0  # ½ Σ_rows ‖a − y‖²
MSE = 1  # 1/(2n) Σ_rows ‖a − y‖²
BINARY_CROSSENTROPY = 2  # sigmoid outputs, mean over rows, summed over outputs
CROSSENTROPY = 3  # softmax outputs, mean over rows

_INLINE = dict(JIT_OPTIONS, inline="always")


@njit(**_INLINE)
def is_mean(loss):
    """Averaged over rows (True) or summed (sse)."""
    return loss != SSE


@njit(**_INLINE)
def row_loss(z, z_start, a, a_start, y, y_start, n, loss):
    """The loss of one row of ``n`` outputs, in float64."""
    z_start, a_start, y_start, n = unsigned(z_start), unsigned(a_start), unsigned(y_start), unsigned(n)
    total = 0.0
    if loss == BINARY_CROSSENTROPY:
        for j in range(n):
            zj = z[z_start + j]
            z64 = np.float64(zj)
            softplus_tail = np.log1p(np.float64(fast_exp(zj if zj < 0 else -zj)))
            total += (z64 if z64 > 0.0 else 0.0) - z64 * np.float64(y[y_start + j]) + softplus_tail
    elif loss == CROSSENTROPY:
        row_max = z[z_start]
        for j in range(1, n):
            value = z[z_start + j]
            row_max = value if value > row_max else row_max
        sum_exp = 0.0
        for j in range(n):
            sum_exp += np.float64(fast_exp(z[z_start + j] - row_max))
        log_sum_exp = np.float64(row_max) + np.log(sum_exp)
        for j in range(n):
            total += np.float64(y[y_start + j]) * (log_sum_exp - np.float64(z[z_start + j]))
    else:
        for j in range(n):
            diff = np.float64(a[a_start + j]) - np.float64(y[y_start + j])
            total += 0.5 * diff * diff
    return total


@njit(**_INLINE)
def row_delta(a, a_start, y, y_start, scale, delta, delta_start, n, activation, loss):
    """Output local gradient of one row, ``δ = dC/dz``: ``(a − y)·scale`` for sigmoid +
    binary_crossentropy; ``(a·Σ_j y_j − y)·scale`` for softmax + crossentropy, the gradient of
    Σ_j y_j (logsumexp(z) − z_j) for any non-negative targets (one-hot rows and probability rows
    have Σ_j y_j = 1; PyTorch's soft targets behave the same); for sse/mse ``(a − y)·scale``
    times f'(a), or for a softmax output the Jacobian product ``a ⊙ (g − Σ_j g_j a_j)``."""
    t = a.dtype.type
    a_start, y_start, delta_start, n = unsigned(a_start), unsigned(y_start), unsigned(delta_start), unsigned(n)
    if loss == CROSSENTROPY:
        mass = t(0.0)
        for j in range(n):
            mass += y[y_start + j]
        for j in range(n):
            delta[delta_start + j] = (a[a_start + j] * mass - y[y_start + j]) * scale
        return
    for j in range(n):
        delta[delta_start + j] = (a[a_start + j] - y[y_start + j]) * scale
    if loss == BINARY_CROSSENTROPY:
        return
    if activation == SOFTMAX:
        dot = t(0.0)
        for j in range(n):
            dot += delta[delta_start + j] * a[a_start + j]
        for j in range(n):
            delta[delta_start + j] = a[a_start + j] * (delta[delta_start + j] - dot)
    else:
        one, slope = t(1.0), t(LEAKY_SLOPE)
        for j in range(n):
            delta[delta_start + j] *= derivative_value(a[a_start + j], activation, one, slope)
