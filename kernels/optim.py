"""Optimizers, following the update rule of the PyTorch optimizer of the same name
(``torch.optim``), so that the same hyper-parameters give the same trajectory.

Each optimizer is declared once in ``SPECS``: its code, the names of its hyper-parameters (the
order of the float64 vector the kernels read, lr first; ``flags`` marks the booleans among them)
and of its state buffers (rows of the network's ``(n_slots, n_params)`` state). Its rule is one
kernel, ``<name>_update(params, grads, state, step, lr, hyper, start, stop)``: the update of a
range ``[start, stop)`` of the flat buffers, reading its hyper-parameters by name
(``hyper[ADAM.beta1]``, through an index built from the declaration, so it cannot read a name
its declaration lacks), and a piece of its own (``kernels.pieces``), compiled once per dtype.
Scalar coefficients are computed in float64, as PyTorch does with Python-float
hyper-parameters, then converted to the buffers' dtype, so float32 buffers are updated in
float32 arithmetic.

Everything else is derived from the declaration and the update: ``<name>_step`` (whole arrays,
named scalar arguments: the form the tests and the NumPy twins share), the list of kernels, the
classes' layouts (``fastgd.optimizers``), the tests (``tests/test_declarations.py`` checks that
the classes, the updates and the twins agree with it).

Adding an optimizer: a ``SPECS`` row and its ``<name>_update`` here, its twin ``<name>_step``
in ``fastgd.reference``, its class and a row of ``OPTIMIZERS_UNDER_TEST`` in
``fastgd.optimizers``: three files.
"""

from __future__ import annotations

import inspect
from collections import namedtuple
from typing import NamedTuple

import numpy as np
from numba import njit

from .compat import kernel, unsigned
from .config import INTERNAL_OPTIONS, JIT_OPTIONS

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
    flags: tuple = ()  # the hyper-parameters that are booleans (1.0 or 0.0 in the vector)

    @property
    def index(self):
        """name -> position in the hyper-parameter vector, as attributes (``index.beta1``)."""
        return namedtuple(f"{self.name.capitalize()}Hyper", self.hyper)(*range(len(self.hyper)))


SPECS = {
    spec.code: spec
    for spec in (
        OptimizerSpec("sgd", OPT_SGD, ("lr", "momentum", "dampening", "nesterov", "weight_decay"), ("momentum_buffer",), ("nesterov",)),
        OptimizerSpec("momentum", OPT_MOMENTUM, ("lr", "beta"), ("velocity",)),
        OptimizerSpec("adagrad", OPT_ADAGRAD, ("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps"), ("sum",)),
        OptimizerSpec("rmsprop", OPT_RMSPROP, ("lr", "alpha", "eps", "weight_decay", "momentum", "centered"),
                      ("square_avg", "grad_avg", "momentum_buffer"), ("centered",)),
        OptimizerSpec("adam", OPT_ADAM, ("lr", "beta1", "beta2", "eps", "weight_decay", "amsgrad"),
                      ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"), ("amsgrad",)),
        OptimizerSpec("adamw", OPT_ADAMW, ("lr", "beta1", "beta2", "eps", "weight_decay", "amsgrad"),
                      ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"), ("amsgrad",)),
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
    step_size = t(lr / (1.0 - beta1 ** np.float64(step)))  # pow(), as Python computes float ** int
    bias_correction2_sqrt = t(np.sqrt(1.0 - beta2 ** np.float64(step)))
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


# ----------------------------------------------------------------------------- the loop's form
# Every update has the signature (params, grads, state, step, lr, hyper, start, stop): ``state``
# is the (n_slots, n_params) buffer, ``hyper`` the float64 vector laid out as the spec's
# ``hyper`` (hyper[0] is the base lr; ``lr`` is this step's, after any schedule).


@njit(**_INLINE)
def _row(state, k):
    # State row k; rows an optimizer does not use alias row 0.
    return state[k if k < state.shape[0] else state.shape[0] - 1]


@kernel(**INTERNAL_OPTIONS)
def sgd_update(params, grads, state, step, lr, hyper, start, stop):
    _sgd(params, grads, _row(state, 0), start, stop, step, lr, hyper[SGD.momentum], hyper[SGD.dampening],
         hyper[SGD.nesterov] != 0.0, hyper[SGD.weight_decay])  # fmt: skip
    return np.int64(0)


@kernel(**INTERNAL_OPTIONS)
def momentum_update(params, grads, state, step, lr, hyper, start, stop):
    _momentum(params, grads, _row(state, 0), start, stop, lr, hyper[MOMENTUM.beta])
    return np.int64(0)


@kernel(**INTERNAL_OPTIONS)
def adagrad_update(params, grads, state, step, lr, hyper, start, stop):
    _adagrad(params, grads, _row(state, 0), start, stop, step, lr, hyper[ADAGRAD.lr_decay], hyper[ADAGRAD.weight_decay],
             hyper[ADAGRAD.eps])  # fmt: skip
    return np.int64(0)


@kernel(**INTERNAL_OPTIONS)
def rmsprop_update(params, grads, state, step, lr, hyper, start, stop):
    _rmsprop(params, grads, _row(state, 0), _row(state, 1), _row(state, 2), start, stop, lr, hyper[RMSPROP.alpha],
             hyper[RMSPROP.eps], hyper[RMSPROP.weight_decay], hyper[RMSPROP.momentum], hyper[RMSPROP.centered] != 0.0)  # fmt: skip
    return np.int64(0)


@kernel(**INTERNAL_OPTIONS)
def adam_update(params, grads, state, step, lr, hyper, start, stop):
    _adam(params, grads, _row(state, 0), _row(state, 1), _row(state, 2), start, stop, step, lr, hyper[ADAM.beta1],
          hyper[ADAM.beta2], hyper[ADAM.eps], hyper[ADAM.weight_decay], hyper[ADAM.amsgrad] != 0.0, False)  # fmt: skip
    return np.int64(0)


@kernel(**INTERNAL_OPTIONS)
def adamw_update(params, grads, state, step, lr, hyper, start, stop):
    _adam(params, grads, _row(state, 0), _row(state, 1), _row(state, 2), start, stop, step, lr, hyper[ADAMW.beta1],
          hyper[ADAMW.beta2], hyper[ADAMW.eps], hyper[ADAMW.weight_decay], hyper[ADAMW.amsgrad] != 0.0, True)  # fmt: skip
    return np.int64(0)


# Optimizer code -> its update over a range (found by name: ``<name>_update``).
UPDATES = {code: globals()[f"{spec.name}_update"] for code, spec in SPECS.items()}


def _step_function(spec):
    # <name>_step(p, g, *state buffers, step, *hyper-parameters): the update over whole arrays
    # with named scalar arguments (the twins' form), running the compiled update.
    names = ("p", "g", *spec.state, "step", *spec.hyper)

    def step_function(*args):
        if len(args) != len(names):
            raise TypeError(f"{spec.name}_step takes {len(names)} arguments {names}, got {len(args)}")
        values = dict(zip(names, args))
        p = values["p"]
        state = np.ascontiguousarray(np.stack([values[name] for name in spec.state]))
        hyper = np.array([float(values[name]) for name in spec.hyper])
        optimizer_step(spec.code, p, values["g"], state, int(values["step"]), hyper[0], hyper)
        for row, name in enumerate(spec.state):
            values[name][...] = state[row]

    step_function.__name__ = step_function.__qualname__ = f"{spec.name}_step"
    step_function.__doc__ = (f"{spec.name} ({', '.join(names)}): one step of the ``{spec.name}_update`` rule over "
                             f"whole arrays, updating p and the state buffers in place.")  # fmt: skip
    step_function.__signature__ = inspect.Signature([inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD) for name in names])
    return step_function


# ``<name>_step`` for every optimizer.
STEPS = {code: _step_function(spec) for code, spec in SPECS.items()}
globals().update({function.__name__: function for function in STEPS.values()})


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
    if kind not in UPDATES:
        raise ValueError(f"kind must be an optimizer code ({sorted(UPDATES)}), got {kind!r}")
    from .pieces import run  # (pieces builds on this module)

    run(f"update_{SPECS[kind].name}", params.dtype, params, grads, state, int(step), float(lr), hyper, 0, params.size)
