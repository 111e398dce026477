"""Per-step extras of the training loop: the learning-rate schedule and the weight penalties."""

import numpy as np
from numba import njit

from .._config import JIT_OPTIONS
from .codes import (
    META_N_IN,
    META_N_OUT,
    META_W_OFFSET,
    SCHEDULE_COSINE,
    SCHEDULE_EXPONENTIAL,
    SCHEDULE_INVERSE_SCALING,
    SCHEDULE_STEP,
)


@njit(inline="always", **JIT_OPTIONS)
def scheduled_lr(kind, base_lr, step, schedule):
    """Learning rate of the ``step``-th optimizer step (1-based).

    constant: lr; step: lr·γ^⌊(t−1)/step_size⌋; exponential: lr·γ^(t−1); inverse scaling:
    lr / t^power; cosine: η_min + (lr − η_min)(1 + cos(π·min(t−1, T)/T))/2.

    Parameters
    ----------
    kind : int
        Schedule code.
    base_lr : float
    step : int
    schedule : ndarray of float64, shape (2,)
        The schedule's parameters: (step_size, γ), (γ, unused), (power, unused), (T, η_min).
    """
    t = step - 1
    if kind == SCHEDULE_STEP:
        return base_lr * schedule[1] ** (t // int(schedule[0]))
    if kind == SCHEDULE_EXPONENTIAL:
        return base_lr * schedule[0] ** t
    if kind == SCHEDULE_INVERSE_SCALING:
        return base_lr / float(step) ** schedule[0]
    if kind == SCHEDULE_COSINE:
        eta_min = schedule[1]
        return eta_min + (base_lr - eta_min) * 0.5 * (1.0 + np.cos(np.pi * min(t, schedule[0]) / schedule[0]))
    return base_lr


@njit(inline="always", **JIT_OPTIONS)
def weight_penalty(params, grads, meta, l1, l2):
    """Add the L1/L2 penalty on the weights (not the biases) to ``grads``; return its value.

    Penalty: ``l1·Σ|W| + (l2/2)·ΣW²``; gradient: ``l1·sign(W) + l2·W`` (sign(0) = 0).

    Parameters
    ----------
    params, grads : ndarray, shape (n_params,)
    meta : ndarray of int64, shape (n_layers, 5)
    l1, l2 : float

    Returns
    -------
    float
        The penalty, in float64.
    """
    if l1 == 0.0 and l2 == 0.0:
        return 0.0
    t = params.dtype.type
    l1_, l2_, zero = t(l1), t(l2), t(0.0)
    total = 0.0
    for layer in range(meta.shape[0]):
        start = meta[layer, META_W_OFFSET]
        for i in range(start, start + meta[layer, META_N_IN] * meta[layer, META_N_OUT]):
            w = params[i]
            total += l1 * abs(np.float64(w)) + 0.5 * l2 * np.float64(w) * np.float64(w)
            sign = t(1.0) if w > zero else (t(-1.0) if w < zero else zero)
            grads[i] += l1_ * sign + l2_ * w
    return total
