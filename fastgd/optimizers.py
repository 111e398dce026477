"""Optimizers with PyTorch's names, defaults and update rules.

An optimizer object holds hyper-parameters only; its state (momentum buffers, moment estimates)
lives in the network as one flat ``(n_slots, n_params)`` buffer, and one compiled step updates
all parameters at once (see :mod:`fastgd.kernels.optim`, whose kernels are the definitions).

Each class takes its code, name, hyper-parameter layout and state names from the one declaration
in ``kernels.optim.SPECS``; ``tests/test_declarations.py`` checks that every declared
hyper-parameter is an attribute of the class and every constructor argument is declared.

Adding an optimizer: a ``SPECS`` row and its update in ``kernels/optim.py``, its NumPy twin in
:mod:`fastgd.reference`, a class here and a row in ``OPTIMIZERS_UNDER_TEST`` (the option sets
the tests train it with): three files.
"""

from __future__ import annotations

import numpy as np

from ._validation import as_real
from .kernels.optim import OPT_ADAGRAD, OPT_ADAM, OPT_ADAMW, OPT_MOMENTUM, OPT_RMSPROP, OPT_SGD, SPECS


def _real(name, value):
    return as_real(value, name)


def _positive(name, value):
    value = _real(name, value)
    if value <= 0.0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def _non_negative(name, value):
    value = _real(name, value)
    if value < 0.0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def _unit_interval(name, value, closed=False):
    value = _real(name, value)
    if not (0.0 <= value <= 1.0 if closed else 0.0 <= value < 1.0):
        raise ValueError(f"{name} must be in [0, 1{']' if closed else ')'}, got {value}")
    return value


def _flag(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return bool(value)


class Optimizer:
    """Base class: a code for the kernels, hyper-parameters, and the names of its state buffers.

    Attributes
    ----------
    code : int
        Optimizer code used by ``kernels.optimizer_step``.
    hyper_names : tuple of str
        Layout of the float64 hyper-parameter vector passed to the kernel (``lr`` first).
    state_names : tuple of str
        One row of the network's optimizer-state buffer each.
    """

    code: int
    name: str
    hyper_names: tuple = ()
    state_names: tuple = ()

    def hyper_vector(self) -> np.ndarray:
        """The hyper-parameters as the float64 vector the kernels read (booleans as 0/1)."""
        return np.array([float(getattr(self, n)) for n in self.hyper_names], dtype=np.float64)

    def initial_state(self, n_params: int, dtype) -> np.ndarray:
        """A fresh ``(len(state_names), n_params)`` state buffer."""
        return np.zeros((max(len(self.state_names), 1), n_params), dtype=dtype)

    def get_config(self) -> dict:
        """Hyper-parameters as a JSON-friendly dict (``type(self)(**config)`` rebuilds it)."""
        return {n: getattr(self, n) for n in self._init_names}

    @property
    def _init_names(self):
        return [n for n in self.__init__.__code__.co_varnames[1 : self.__init__.__code__.co_argcount]]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    __hash__ = object.__hash__


class SGD(Optimizer):
    """Stochastic gradient descent, as ``torch.optim.SGD``.

    Update rule, with g the gradient and p the parameters::

        g ← g + weight_decay·p
        if momentum μ ≠ 0:
            b ← g                              (first step)
            b ← μ·b + (1 − dampening)·g        (later steps)
            g ← g + μ·b  if nesterov  else  b
        p ← p − lr·g

    Parameters
    ----------
    lr : float, default 0.001
        Learning rate, > 0 (PyTorch's default).
    momentum : float, default 0
        Heavy-ball momentum factor, >= 0.
    dampening : float, default 0
        In [0, 1].
    nesterov : bool, default False
        Nesterov momentum; needs momentum > 0 and dampening = 0.
    weight_decay : float, default 0
        L2 penalty coefficient added to the gradient, >= 0.
    """

    name, code, hyper_names, state_names = SPECS[OPT_SGD].name, SPECS[OPT_SGD].code, SPECS[OPT_SGD].hyper_names, SPECS[OPT_SGD].state

    def __init__(self, lr=0.001, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
        self.lr = _positive("lr", lr)
        self.momentum = _non_negative("momentum", momentum)
        self.dampening = _unit_interval("dampening", dampening, closed=True)
        self.nesterov = _flag("nesterov", nesterov)
        self.weight_decay = _non_negative("weight_decay", weight_decay)
        if self.nesterov and (self.momentum <= 0.0 or self.dampening != 0.0):
            raise ValueError("nesterov=True requires momentum > 0 and dampening = 0")


class Momentum(Optimizer):
    """Momentum in exponential-average form.

    Update rule, with v₀ = 0::

        v ← β·v + (1 − β)·g
        p ← p − lr·v

    Parameters
    ----------
    lr : float, default 0.01
        Learning rate, > 0.
    beta : float, default 0.9
        Averaging factor, in [0, 1).
    """

    name, code, hyper_names, state_names = SPECS[OPT_MOMENTUM].name, SPECS[OPT_MOMENTUM].code, SPECS[OPT_MOMENTUM].hyper_names, SPECS[OPT_MOMENTUM].state

    def __init__(self, lr=0.01, beta=0.9):
        self.lr = _positive("lr", lr)
        self.beta = _unit_interval("beta", beta)


class Adagrad(Optimizer):
    """Adagrad, as ``torch.optim.Adagrad``.

    Update rule, t the 1-based step and s₀ = initial_accumulator_value::

        g ← g + weight_decay·p
        clr = lr / (1 + (t − 1)·lr_decay)
        s ← s + g²
        p ← p − clr·g / (√s + eps)

    Parameters
    ----------
    lr : float, default 0.01
    lr_decay : float, default 0
    weight_decay : float, default 0
    initial_accumulator_value : float, default 0
    eps : float, default 1e-10
    """

    name, code, hyper_names, state_names = SPECS[OPT_ADAGRAD].name, SPECS[OPT_ADAGRAD].code, SPECS[OPT_ADAGRAD].hyper_names, SPECS[OPT_ADAGRAD].state

    def __init__(self, lr=0.01, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10):
        self.lr = _positive("lr", lr)
        self.lr_decay = _non_negative("lr_decay", lr_decay)
        self.weight_decay = _non_negative("weight_decay", weight_decay)
        self.initial_accumulator_value = _non_negative("initial_accumulator_value", initial_accumulator_value)
        self.eps = _non_negative("eps", eps)

    def initial_state(self, n_params, dtype):
        state = super().initial_state(n_params, dtype)
        state[0] = self.initial_accumulator_value
        return state


class RMSprop(Optimizer):
    """RMSprop, as ``torch.optim.RMSprop``.

    Update rule::

        g ← g + weight_decay·p
        s ← α·s + (1 − α)·g²
        if centered:  ḡ ← α·ḡ + (1 − α)·g;  d = √(s − ḡ²) + eps
        else:         d = √s + eps
        if momentum μ > 0:  b ← μ·b + g/d;  p ← p − lr·b
        else:               p ← p − lr·g/d

    Parameters
    ----------
    lr : float, default 0.01
    alpha : float, default 0.99
        Smoothing constant, in [0, 1).
    eps : float, default 1e-8
    weight_decay : float, default 0
    momentum : float, default 0
    centered : bool, default False
    """

    name, code, hyper_names, state_names = SPECS[OPT_RMSPROP].name, SPECS[OPT_RMSPROP].code, SPECS[OPT_RMSPROP].hyper_names, SPECS[OPT_RMSPROP].state

    def __init__(self, lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
        self.lr = _positive("lr", lr)
        self.alpha = _unit_interval("alpha", alpha)
        self.eps = _non_negative("eps", eps)
        self.weight_decay = _non_negative("weight_decay", weight_decay)
        self.momentum = _non_negative("momentum", momentum)
        self.centered = _flag("centered", centered)


class Adam(Optimizer):
    """Adam, as ``torch.optim.Adam``.

    Update rule, t the 1-based step::

        g ← g + weight_decay·p
        m ← β1·m + (1 − β1)·g
        v ← β2·v + (1 − β2)·g²
        if amsgrad:  v_max ← max(v_max, v), and v_max replaces v below
        p ← p − lr/(1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + eps)

    Parameters
    ----------
    lr : float, default 0.001
    betas : (float, float), default (0.9, 0.999)
        Each in [0, 1).
    eps : float, default 1e-8
    weight_decay : float, default 0
        Coupled L2 penalty (added to the gradient).
    amsgrad : bool, default False
    """

    name, code, hyper_names, state_names = SPECS[OPT_ADAM].name, SPECS[OPT_ADAM].code, SPECS[OPT_ADAM].hyper_names, SPECS[OPT_ADAM].state
    _default_weight_decay = 0.0

    def __init__(self, lr=0.001, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False):
        self.lr = _positive("lr", lr)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        self.beta1 = _unit_interval("betas[0]", betas[0])
        self.beta2 = _unit_interval("betas[1]", betas[1])
        self.eps = _non_negative("eps", eps)
        self.weight_decay = _non_negative("weight_decay", weight_decay)
        self.amsgrad = _flag("amsgrad", amsgrad)

    @property
    def betas(self):
        return (self.beta1, self.beta2)


class AdamW(Adam):
    """AdamW, as ``torch.optim.AdamW``: Adam with decoupled weight decay.

    Update rule, t the 1-based step::

        p ← p·(1 − lr·weight_decay)
        m ← β1·m + (1 − β1)·g
        v ← β2·v + (1 − β2)·g²
        if amsgrad:  v_max ← max(v_max, v), and v_max replaces v below
        p ← p − lr/(1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + eps)

    Parameters
    ----------
    lr : float, default 0.001
    betas : (float, float), default (0.9, 0.999)
    eps : float, default 1e-8
    weight_decay : float, default 0.01
    amsgrad : bool, default False
    """

    name, code, hyper_names, state_names = SPECS[OPT_ADAMW].name, SPECS[OPT_ADAMW].code, SPECS[OPT_ADAMW].hyper_names, SPECS[OPT_ADAMW].state

    def __init__(self, lr=0.001, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, amsgrad=False):
        super().__init__(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)


OPTIMIZERS = {cls.name: cls for cls in (SGD, Momentum, Adagrad, RMSprop, Adam, AdamW)}

# Every optimizer with each option set worth testing and benchmarking: (class, keyword arguments).
OPTIMIZERS_UNDER_TEST = (
    (SGD, dict(lr=0.1)),
    (SGD, dict(lr=0.05, momentum=0.9)),
    (SGD, dict(lr=0.05, momentum=0.9, dampening=0.3)),
    (SGD, dict(lr=0.05, momentum=0.9, nesterov=True)),
    (SGD, dict(lr=0.05, momentum=0.5, weight_decay=0.01)),
    (Momentum, dict(lr=0.1)),
    (Momentum, dict(lr=0.1, beta=0.5)),
    (Adagrad, dict(lr=0.05)),
    (Adagrad, dict(lr=0.05, lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.1)),
    (RMSprop, dict(lr=0.01)),
    (RMSprop, dict(lr=0.01, centered=True)),
    (RMSprop, dict(lr=0.01, momentum=0.9, weight_decay=0.01)),
    (RMSprop, dict(lr=0.01, momentum=0.5, centered=True, alpha=0.9)),
    (Adam, dict(lr=0.01)),
    (Adam, dict(lr=0.01, amsgrad=True)),
    (Adam, dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.01)),
    (AdamW, dict(lr=0.01)),
    (AdamW, dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
)


def make_optimizer(optimizer) -> Optimizer:
    """An ``Optimizer`` from an instance (returned as is) or a name (built with its defaults)."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    if isinstance(optimizer, str):
        try:
            return OPTIMIZERS[optimizer.lower()]()
        except KeyError:
            raise ValueError(f"unknown optimizer {optimizer!r}; expected one of {sorted(OPTIMIZERS)}") from None
    raise TypeError(f"optimizer must be an Optimizer or a name, got {type(optimizer).__name__}")
