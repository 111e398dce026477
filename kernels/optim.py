# stamp: 68f71500c2fdff32914b450cffc1442b
"""Optimizers, following the update rule of the PyTorch optimizer of the same name
(``torch.optim``), so that the same hyper-parameters give the same trajectory.

Each optimizer is declared once in ``SPECS``: its code, the names of its hyper-parameters (the
order of the float64 vector the kernels read, lr first; ``flags`` marks the booleans among them),
of its state buffers (rows of the network's ``(n_slots, n_params)`` state), and its update
``<name>_update(params, grads, state, step, lr, hyper)`` over a chunk of the flat buffers,
reading its hyper-parameters by name (``hyper[ADAM.beta1]``, through an index built from the
declaration, so it cannot read a name its declaration lacks). ``update_piece(code)`` is the piece
applying it to a chunk (compiled per dtype by ``kernels.pieces``). Scalar coefficients are computed in float64, as PyTorch does with Python-float
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
from numba import types
from numba.extending import overload

from .config import SHARDED_FASTMATH_FLAGS
from .jit import helper
from .lowlevel import advance, view

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


# ----------------------------------------------------------------------------- the rules
# Each over whole (chunk) arrays: p the parameters, g the gradient, then the state rows.


@helper(fastmath=SHARDED_FASTMATH_FLAGS)
def _sgd(p, g, momentum_buffer, step, lr, momentum, dampening, nesterov, weight_decay):
    t = p.dtype.type
    lr_, mu, damp, wd = t(lr), t(momentum), t(1.0 - dampening), t(weight_decay)
    first = step == 1
    if momentum == 0.0:
        for i in range(p.size):
            p[i] -= lr_ * (g[i] + wd * p[i])
        return
    for i in range(p.size):
        grad = g[i] + wd * p[i]
        buf = grad if first else mu * momentum_buffer[i] + damp * grad
        momentum_buffer[i] = buf
        p[i] -= lr_ * (grad + mu * buf if nesterov else buf)


@helper(fastmath=SHARDED_FASTMATH_FLAGS)
def _momentum(p, g, velocity, lr, beta):
    t = p.dtype.type
    lr_, b, one_minus_b = t(lr), t(beta), t(1.0 - beta)
    for i in range(p.size):
        v = b * velocity[i] + one_minus_b * g[i]
        velocity[i] = v
        p[i] -= lr_ * v


@helper(fastmath=SHARDED_FASTMATH_FLAGS)
def _adagrad(p, g, state_sum, step, lr, lr_decay, weight_decay, eps):
    t = p.dtype.type
    clr = t(lr / (1.0 + (step - 1) * lr_decay))
    wd, eps_ = t(weight_decay), t(eps)
    for i in range(p.size):
        grad = g[i] + wd * p[i]
        s = state_sum[i] + grad * grad
        state_sum[i] = s
        p[i] -= clr * (grad / (np.sqrt(s) + eps_))


@helper(fastmath=SHARDED_FASTMATH_FLAGS)
def _rmsprop(p, g, square_avg, grad_avg, momentum_buffer, lr, alpha, eps, weight_decay, momentum, centered):
    t = p.dtype.type
    lr_, a, one_minus_a, eps_, wd, mu = t(lr), t(alpha), t(1.0 - alpha), t(eps), t(weight_decay), t(momentum)
    use_momentum = momentum > 0.0
    for i in range(p.size):
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


@helper(fastmath=SHARDED_FASTMATH_FLAGS)
def _adam(p, g, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay, amsgrad, decoupled):
    # Adam, and with ``decoupled`` AdamW: p ← p·(1 − lr·wd) first and no weight decay in g.
    t = p.dtype.type
    b1, one_minus_b1 = t(beta1), t(1.0 - beta1)
    b2, one_minus_b2 = t(beta2), t(1.0 - beta2)
    step_size = t(lr / (1.0 - beta1 ** np.float64(step)))  # pow(), as Python computes float ** int
    bias_correction2_sqrt = t(np.sqrt(1.0 - beta2 ** np.float64(step)))
    eps_ = t(eps)
    wd = t(0.0) if decoupled else t(weight_decay)
    decay = t(1.0 - lr * weight_decay) if decoupled else t(1.0)
    for i in range(p.size):
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


# ----------------------------------------------------------------------------- the updates
# <name>_update(params, grads, first, second, third, step, lr, hyper): the state rows in order
# (rows an optimizer does not have alias its first), ``hyper`` the float64 vector laid out as
# the spec's ``hyper`` (hyper[0] is the base lr; ``lr`` is this step's, after any schedule).


@helper
def sgd_update(params, grads, first, second, third, step, lr, hyper):
    _sgd(params, grads, first, step, lr, hyper[SGD.momentum], hyper[SGD.dampening], hyper[SGD.nesterov] != 0.0,
         hyper[SGD.weight_decay])  # fmt: skip


@helper
def momentum_update(params, grads, first, second, third, step, lr, hyper):
    _momentum(params, grads, first, lr, hyper[MOMENTUM.beta])


@helper
def adagrad_update(params, grads, first, second, third, step, lr, hyper):
    _adagrad(params, grads, first, step, lr, hyper[ADAGRAD.lr_decay], hyper[ADAGRAD.weight_decay], hyper[ADAGRAD.eps])


@helper
def rmsprop_update(params, grads, first, second, third, step, lr, hyper):
    _rmsprop(params, grads, first, second, third, lr, hyper[RMSPROP.alpha], hyper[RMSPROP.eps], hyper[RMSPROP.weight_decay],
             hyper[RMSPROP.momentum], hyper[RMSPROP.centered] != 0.0)  # fmt: skip


@helper
def adam_update(params, grads, first, second, third, step, lr, hyper):
    _adam(params, grads, first, second, third, step, lr, hyper[ADAM.beta1], hyper[ADAM.beta2], hyper[ADAM.eps],
          hyper[ADAM.weight_decay], hyper[ADAM.amsgrad] != 0.0, False)  # fmt: skip


@helper
def adamw_update(params, grads, first, second, third, step, lr, hyper):
    _adam(params, grads, first, second, third, step, lr, hyper[ADAMW.beta1], hyper[ADAMW.beta2], hyper[ADAMW.eps],
          hyper[ADAMW.weight_decay], hyper[ADAMW.amsgrad] != 0.0, True)  # fmt: skip


# Optimizer code -> its update (found by name: ``<name>_update``).
UPDATES = {code: globals()[f"{spec.name}_update"] for code, spec in SPECS.items()}
# Length of the hyper-parameter vector of every optimizer (the longest declaration).
HYPER_WIDTH = max(len(spec.hyper) for spec in SPECS.values())


def apply_update(code, params, grads, first, second, third, step, lr, hyper):
    """Optimizer ``code``'s update (a constant in compiled code) over whole chunk arrays."""
    UPDATES[code](params, grads, first, second, third, step, lr, hyper)


@overload(apply_update, prefer_literal=True)
def _apply_update(code, params, grads, first, second, third, step, lr, hyper):
    if isinstance(code, types.IntegerLiteral):
        update = UPDATES[code.literal_value]
        return lambda code, params, grads, first, second, third, step, lr, hyper: update(params, grads, first, second, third, step, lr,
                                                                                         hyper)  # fmt: skip


@helper
def _state_row(state, k, slots, width, first, stop):
    # Row k of the state (row 0 where the state has fewer rows), elements [first, stop).
    return view(advance(state, (k if k < slots else 0) * width), width)[first:stop]


def update_piece(code):
    """The piece of optimizer ``code`` (compiled per dtype by ``kernels.pieces``):
    ``piece(first, stop, width, slots, params, grads, state, step, lr, hyper)``, one step over
    elements ``[first, stop)`` of the flat buffers: ``params`` and ``grads`` point at ``width``
    values (n_params), ``state`` at ``slots × width`` (its rows), ``hyper`` at HYPER_WIDTH
    float64 (``SPECS[code].hyper``); ``step`` is 1-based, ``lr`` this step's rate.
    """

    def piece(first, stop, width, slots, params, grads, state, step, lr, hyper):
        p, g = view(params, width)[first:stop], view(grads, width)[first:stop]
        rows = _state_row(state, 0, slots, width, first, stop), _state_row(state, 1, slots, width, first, stop)
        third = _state_row(state, 2, slots, width, first, stop)
        apply_update(code, p, g, rows[0], rows[1], third, step, lr, view(hyper, HYPER_WIDTH))

    piece.__qualname__ = piece.__name__ = f"{SPECS[code].name}_piece"
    return piece


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
    """One optimizer step over the whole flat parameter buffer (the ``optimizer_update`` piece
    over every element), called from Python.

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
    from .pieces import call_update  # (pieces builds on this module)

    call_update(int(kind), params, grads, state, int(step), float(lr), hyper)
