"""Optimizer steps, following the update rule of the PyTorch optimizer of the same name
(``torch.optim``), so that the same hyper-parameters give the same trajectory.

Each optimizer is declared once in ``SPECS``: its code, the names of its hyper-parameters (the
order of the float64 vector the kernels read, lr first) and of its state buffers (rows of the
network's ``(n_slots, n_params)`` state). The update kernels read hyper-parameters by name
(``hyper[ADAM.beta1]``), through an index built from the declaration, so a kernel cannot read
a name its declaration lacks; ``fastgd.optimizers`` builds its classes' layouts from the same
declarations, and ``tests/test_optimizers.py`` checks that the classes and the kernels agree.

Two forms of each rule, one body: ``<name>_step`` (whole arrays, named scalar arguments, the
form the tests and the NumPy twins share) and ``<name>_update`` (a range ``[start, stop)`` of
the flat buffers, hyper-parameters from the vector: what the training loop calls, one chunk per
task). Scalar coefficients are computed in float64, as PyTorch does with Python-float
hyper-parameters, then converted to the buffers' dtype, so float32 buffers are updated in
float32 arithmetic.

Adding an optimizer: a ``SPECS`` row and its step and update here, its twins in
``fastgd.reference``, a class in ``fastgd.optimizers`` and a row in ``OPTIMIZERS_UNDER_TEST``.
"""

from __future__ import annotations

from collections import namedtuple
from typing import NamedTuple

import numpy as np
from numba import njit

from .compat import kernel, unsigned
from .config import JIT_OPTIONS

_INLINE = dict(JIT_OPTIONS, inline="always")

# Optimizer codes.
OPT_SGD = 0
OPT_MOMENTUM = 1
OPT_ADAGRAD = 2
OPT_RMSPROP = 3
OPT_ADAM = 4
OPT_ADAMW = 5


class OptimizerSpec(NamedTuple):
    """An optimizer as the kernels see it."""

    name: str
    code: int
    hyper: tuple  # hyper-parameter names: the layout of the float64 vector, lr first
    state: tuple  # state buffer names: the rows of the state array

    @property
    def index(self):
        """name -> position in the hyper-parameter vector, as attributes (``index.beta1``)."""
        return namedtuple(f"{self.name.capitalize()}Hyper", self.hyper)(*range(len(self.hyper)))


SPECS = {
    spec.code: spec
    for spec in (
        OptimizerSpec("sgd", OPT_SGD, ("lr", "momentum", "dampening", "nesterov", "weight_decay"), ("momentum_buffer",)),
        OptimizerSpec("momentum", OPT_MOMENTUM, ("lr", "beta"), ("velocity",)),
        OptimizerSpec("adagrad", OPT_ADAGRAD, ("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps"), ("sum",)),
        OptimizerSpec("rmsprop", OPT_RMSPROP, ("lr", "alpha", "eps", "weight_decay", "momentum", "centered"),
                      ("square_avg", "grad_avg", "momentum_buffer")),
        OptimizerSpec("adam", OPT_ADAM, ("lr", "beta1", "beta2", "eps", "weight_decay", "amsgrad"),
                      ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")),
        OptimizerSpec("adamw", OPT_ADAMW, ("lr", "beta1", "beta2", "eps", "weight_decay", "amsgrad"),
                      ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")),
    )
}  # fmt: skip

SGD = SPECS[OPT_SGD].index
MOMENTUM = SPECS[OPT_MOMENTUM].index
ADAGRAD = SPECS[OPT_ADAGRAD].index
RMSPROP = SPECS[OPT_RMSPROP].index
ADAM = SPECS[OPT_ADAM].index
ADAMW = SPECS[OPT_ADAMW].index


# ----------------------------------------------------------------------------- rules, on a range


@njit(**_INLINE)
def _sgd(p, g, momentum_buffer, start, stop, step, lr, momentum, dampening, nesterov, weight_decay):
    start, stop = unsigned(start), unsigned(stop)
    t = p.dtype.type
    lr_, mu, damp, wd = t(lr), t(momentum), t(1.0 - dampening), t(weight_decay)
    first = step == 1
    if momentum == 0.0:
        for i in range(start, stop):
            p[i] -= lr_ * (g[i] + wd * p[i])
        return
    for i in range(start, stop):
        grad = g[i] + wd * p[i]
        buf = grad if first else mu * momentum_buffer[i] + damp * grad
        momentum_buffer[i] = buf
        p[i] -= lr_ * (grad + mu * buf if nesterov else buf)


@njit(**_INLINE)
def _momentum(p, g, velocity, start, stop, lr, beta):
    start, stop = unsigned(start), unsigned(stop)
    t = p.dtype.type
    lr_, b, one_minus_b = t(lr), t(beta), t(1.0 - beta)
    for i in range(start, stop):
        v = b * velocity[i] + one_minus_b * g[i]
        velocity[i] = v
        p[i] -= lr_ * v


@njit(**_INLINE)
def _adagrad(p, g, state_sum, start, stop, step, lr, lr_decay, weight_decay, eps):
    start, stop = unsigned(start), unsigned(stop)
    t = p.dtype.type
    clr = t(lr / (1.0 + (step - 1) * lr_decay))
    wd, eps_ = t(weight_decay), t(eps)
    for i in range(start, stop):
        grad = g[i] + wd * p[i]
        s = state_sum[i] + grad * grad
        state_sum[i] = s
        p[i] -= clr * (grad / (np.sqrt(s) + eps_))


@njit(**_INLINE)
def _rmsprop(p, g, square_avg, grad_avg, momentum_buffer, start, stop, lr, alpha, eps, weight_decay, momentum, centered):
    start, stop = unsigned(start), unsigned(stop)
    t = p.dtype.type
    lr_, a, one_minus_a, eps_, wd, mu = t(lr), t(alpha), t(1.0 - alpha), t(eps), t(weight_decay), t(momentum)
    use_momentum = momentum > 0.0
    for i in range(start, stop):
        grad = g[i] + wd * p[i]
        s = a * square_avg[i] + one_minus_a * grad * grad
        square_avg[i] = s
        if centered:
            ga = a * grad_avg[i] + one_minus_a * grad
            grad_avg[i] = ga
            denom = np.sqrt(s - ga * ga) + eps_
        else:
            denom = np.sqrt(s) + eps_
        if use_momentum:
            buf = mu * momentum_buffer[i] + grad / denom
            momentum_buffer[i] = buf
            p[i] -= lr_ * buf
        else:
            p[i] -= lr_ * (grad / denom)


@njit(**_INLINE)
def _adam(p, g, exp_avg, exp_avg_sq, max_exp_avg_sq, start, stop, step, lr, beta1, beta2, eps, weight_decay, amsgrad, decoupled):
    # Adam, and with ``decoupled`` AdamW: p ← p·(1 − lr·wd) first and no weight decay in g.
    start, stop = unsigned(start), unsigned(stop)
    t = p.dtype.type
    b1, one_minus_b1 = t(beta1), t(1.0 - beta1)
    b2, one_minus_b2 = t(beta2), t(1.0 - beta2)
    step_size = t(lr / (1.0 - beta1**step))
    bias_correction2_sqrt = t(np.sqrt(1.0 - beta2**step))
    eps_ = t(eps)
    wd = t(0.0) if decoupled else t(weight_decay)
    decay = t(1.0 - lr * weight_decay) if decoupled else t(1.0)
    for i in range(start, stop):
        if decoupled:
            p[i] *= decay
        grad = g[i] + wd * p[i]
        m = b1 * exp_avg[i] + one_minus_b1 * grad
        v = b2 * exp_avg_sq[i] + one_minus_b2 * grad * grad
        exp_avg[i] = m
        exp_avg_sq[i] = v
        if amsgrad:
            largest = max_exp_avg_sq[i]
            v = largest if (largest > v or largest != largest) else v  # NaN-propagating max
            max_exp_avg_sq[i] = v
        p[i] -= step_size * (m / (np.sqrt(v) / bias_correction2_sqrt + eps_))


# ----------------------------------------------------------------------------- whole arrays


@kernel(**JIT_OPTIONS)
def sgd_step(p, g, momentum_buffer, step, lr, momentum, dampening, nesterov, weight_decay):
    """Stochastic gradient descent, PyTorch's ``SGD``.

    ``g ← g + weight_decay·p``; with momentum μ: ``b ← g`` on the first step, else
    ``b ← μ·b + (1 − dampening)·g``; then ``g ← g + μ·b`` (nesterov) or ``g ← b``;
    finally ``p ← p − lr·g``.

    Parameters
    ----------
    p, g, momentum_buffer : ndarray, shape (n,)
    step : int
        The 1-based number of this step.
    lr, momentum, dampening, weight_decay : float
    nesterov : bool
    """
    _sgd(p, g, momentum_buffer, np.int64(0), p.size, step, lr, momentum, dampening, nesterov, weight_decay)


@kernel(**JIT_OPTIONS)
def momentum_step(p, g, velocity, step, lr, beta):
    """Momentum in exponential-average form: ``v ← β·v + (1 − β)·g``, ``p ← p − lr·v``; v₀ = 0.

    Parameters
    ----------
    p, g, velocity : ndarray, shape (n,)
    step : int
        Unused; kept for the common signature.
    lr, beta : float
    """
    _momentum(p, g, velocity, np.int64(0), p.size, lr, beta)


@kernel(**JIT_OPTIONS)
def adagrad_step(p, g, state_sum, step, lr, lr_decay, weight_decay, eps):
    """Adagrad, PyTorch's ``Adagrad``.

    ``g ← g + weight_decay·p``; ``clr = lr / (1 + (step − 1)·lr_decay)``; ``s ← s + g²``;
    ``p ← p − clr·g / (√s + eps)``; ``s`` starts at ``initial_accumulator_value``.

    Parameters
    ----------
    p, g, state_sum : ndarray, shape (n,)
    step : int
    lr, lr_decay, weight_decay, eps : float
    """
    _adagrad(p, g, state_sum, np.int64(0), p.size, step, lr, lr_decay, weight_decay, eps)


@kernel(**JIT_OPTIONS)
def rmsprop_step(p, g, square_avg, grad_avg, momentum_buffer, step, lr, alpha, eps, weight_decay, momentum, centered):
    """RMSprop, PyTorch's ``RMSprop``.

    ``g ← g + weight_decay·p``; ``s ← α·s + (1 − α)·g²``; centered: ``ḡ ← α·ḡ + (1 − α)·g`` and
    ``d = √(s − ḡ²) + eps``, else ``d = √s + eps``; with momentum μ > 0: ``b ← μ·b + g/d``,
    ``p ← p − lr·b``, else ``p ← p − lr·g/d``.

    Parameters
    ----------
    p, g, square_avg, grad_avg, momentum_buffer : ndarray, shape (n,)
    step : int
        Unused; kept for the common signature.
    lr, alpha, eps, weight_decay, momentum : float
    centered : bool
    """
    _rmsprop(p, g, square_avg, grad_avg, momentum_buffer, np.int64(0), p.size, lr, alpha, eps, weight_decay, momentum, centered)


@kernel(**JIT_OPTIONS)
def adam_step(p, g, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay, amsgrad):
    """Adam, PyTorch's ``Adam``.

    ``g ← g + weight_decay·p``; ``m ← β1·m + (1 − β1)·g``; ``v ← β2·v + (1 − β2)·g²``;
    amsgrad: ``v̂max ← max(v̂max, v)`` and v is replaced by it below;
    ``p ← p − lr/(1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + eps)``.

    Parameters
    ----------
    p, g, exp_avg, exp_avg_sq, max_exp_avg_sq : ndarray, shape (n,)
    step : int
        t, the 1-based step number.
    lr, beta1, beta2, eps, weight_decay : float
    amsgrad : bool
    """
    _adam(p, g, exp_avg, exp_avg_sq, max_exp_avg_sq, np.int64(0), p.size, step, lr, beta1, beta2, eps, weight_decay, amsgrad, False)


@kernel(**JIT_OPTIONS)
def adamw_step(p, g, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay, amsgrad):
    """AdamW, PyTorch's ``AdamW``: decoupled weight decay ``p ← p·(1 − lr·weight_decay)``, then
    the Adam update with no weight decay in the gradient.

    Parameters
    ----------
    p, g, exp_avg, exp_avg_sq, max_exp_avg_sq : ndarray, shape (n,)
    step : int
    lr, beta1, beta2, eps, weight_decay : float
    amsgrad : bool
    """
    _adam(p, g, exp_avg, exp_avg_sq, max_exp_avg_sq, np.int64(0), p.size, step, lr, beta1, beta2, eps, weight_decay, amsgrad, True)


# ----------------------------------------------------------------------------- the loop's form
# Every update has the signature (params, grads, state, step, lr, hyper, start, stop): ``state``
# is the (n_slots, n_params) buffer, ``hyper`` the float64 vector laid out as the spec's
# ``hyper`` (hyper[0] is the base lr; ``lr`` is this step's, after any schedule).


@njit(**_INLINE)
def _row(state, k):
    # State row k; rows an optimizer does not use alias row 0.
    return state[k if k < state.shape[0] else state.shape[0] - 1]


@kernel(**JIT_OPTIONS)
def sgd_update(params, grads, state, step, lr, hyper, start, stop):
    _sgd(params, grads, _row(state, 0), start, stop, step, lr, hyper[SGD.momentum], hyper[SGD.dampening],
         hyper[SGD.nesterov] != 0.0, hyper[SGD.weight_decay])  # fmt: skip


@kernel(**JIT_OPTIONS)
def momentum_update(params, grads, state, step, lr, hyper, start, stop):
    _momentum(params, grads, _row(state, 0), start, stop, lr, hyper[MOMENTUM.beta])


@kernel(**JIT_OPTIONS)
def adagrad_update(params, grads, state, step, lr, hyper, start, stop):
    _adagrad(params, grads, _row(state, 0), start, stop, step, lr, hyper[ADAGRAD.lr_decay], hyper[ADAGRAD.weight_decay],
             hyper[ADAGRAD.eps])  # fmt: skip


@kernel(**JIT_OPTIONS)
def rmsprop_update(params, grads, state, step, lr, hyper, start, stop):
    _rmsprop(params, grads, _row(state, 0), _row(state, 1), _row(state, 2), start, stop, lr, hyper[RMSPROP.alpha],
             hyper[RMSPROP.eps], hyper[RMSPROP.weight_decay], hyper[RMSPROP.momentum], hyper[RMSPROP.centered] != 0.0)  # fmt: skip


@kernel(**JIT_OPTIONS)
def adam_update(params, grads, state, step, lr, hyper, start, stop):
    _adam(params, grads, _row(state, 0), _row(state, 1), _row(state, 2), start, stop, step, lr, hyper[ADAM.beta1],
          hyper[ADAM.beta2], hyper[ADAM.eps], hyper[ADAM.weight_decay], hyper[ADAM.amsgrad] != 0.0, False)  # fmt: skip


@kernel(**JIT_OPTIONS)
def adamw_update(params, grads, state, step, lr, hyper, start, stop):
    _adam(params, grads, _row(state, 0), _row(state, 1), _row(state, 2), start, stop, step, lr, hyper[ADAMW.beta1],
          hyper[ADAMW.beta2], hyper[ADAMW.eps], hyper[ADAMW.weight_decay], hyper[ADAMW.amsgrad] != 0.0, True)  # fmt: skip


# Optimizer code -> its update over a range. The training loop is specialised per entry
# (``fastgd.kernels.train``), so a fit compiles only the optimizer it uses.
UPDATES = {
    OPT_SGD: sgd_update,
    OPT_MOMENTUM: momentum_update,
    OPT_ADAGRAD: adagrad_update,
    OPT_RMSPROP: rmsprop_update,
    OPT_ADAM: adam_update,
    OPT_ADAMW: adamw_update,
}


def optimizer_step(kind, params, grads, state, step, lr, hyper):
    """One optimizer step over the whole flat parameter buffer (``UPDATES[kind]`` over every
    element), called from Python.

    Parameters
    ----------
    kind : int
        Optimizer code.
    params, grads : ndarray, shape (n_params,)
    state : ndarray, shape (n_slots, n_params)
    step : int
        1-based step number.
    lr : float
        Learning rate for this step (schedules change it; ``hyper[0]`` is the base rate).
    hyper : ndarray of float64
        Hyper-parameters laid out as ``SPECS[kind].hyper``.
    """
    update = UPDATES.get(kind)
    if update is None:
        raise ValueError(f"kind must be an optimizer code ({sorted(UPDATES)}), got {kind!r}")
    update(params, grads, state, int(step), float(lr), hyper, 0, params.size)
