"""Optimizers with PyTorch's names, defaults and update rules.

An optimizer object holds hyper-parameters only; its state (momentum buffers, moment estimates)
lives in the network as one flat ``(n_slots, n_params)`` buffer, and one compiled step updates
all parameters at once.

Every class here follows from its optimizer's one declaration in ``kernels.optim.SPECS``: its
constructor's arguments and defaults, the checks of its arguments, its attributes, its state
buffers and their starting values, its docstring's update rule. ``optimizer_class`` builds the
class; the lines below name each one. ``tests/test_declarations.py`` walks the declarations.

Adding an optimizer: its declaration (and its two functions) in ``kernels/optim.py``, and its
line here.
"""

from __future__ import annotations

import inspect

import numpy as np

from ._validation import as_real
from .kernels.optim import (
    OPT_ADAGRAD,
    OPT_ADAM,
    OPT_ADAMAX,
    OPT_ADAMW,
    OPT_MOMENTUM,
    OPT_NADAM,
    OPT_RADAM,
    OPT_RMSPROP,
    OPT_SGD,
    SPECS,
    hyper_vector,
)

_KIND_RULES = {
    "positive": (lambda v: v > 0.0, "> 0"),
    "non-negative": (lambda v: v >= 0.0, ">= 0"),
    "unit": (lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
    "closed unit": (lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
}


def _checked(name, value, kind):
    if kind == "flag":
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
        return bool(value)
    value = as_real(value, name)
    test, text = _KIND_RULES[kind]
    if not test(value):
        raise ValueError(f"{name} must be {text}, got {value}")
    return value


class Optimizer:
    """Base class: an optimizer's hyper-parameters, read from its declaration (``spec``).

    Attributes
    ----------
    code : int
        Optimizer code used by ``kernels.optimizer_step``.
    hyper_names : tuple of str
        Layout of the float64 hyper-parameter vector passed to the kernel (``lr`` first).
    state_names : tuple of str
        One row of the network's optimizer-state buffer each.
    """

    spec = None
    code: int
    name: str
    hyper_names: tuple = ()
    state_names: tuple = ()

    def __init__(self, *args, **kwargs):
        bound = self.__signature__.bind(*args, **kwargs)
        bound.apply_defaults()
        values = {}
        groups = {}
        for hyper in self.spec.hyper:
            if hyper.group is None:
                values[hyper.name] = _checked(hyper.name, bound.arguments[hyper.name], hyper.kind)
            else:
                groups.setdefault(hyper.group, []).append(hyper)
        for group, members in groups.items():
            given = bound.arguments[group]
            if not isinstance(given, (tuple, list)) or len(given) != len(members):
                raise TypeError(
                    f"{group} must be a tuple of {len(members)} ({', '.join(h.name for h in members)}), got {given!r}"
                )
            for position, hyper in enumerate(members):
                values[hyper.name] = _checked(f"{group}[{position}]", given[position], hyper.kind)
        if self.spec.check is not None:
            message = self.spec.check(values)
            if message is not None:
                raise ValueError(message)
        self.__dict__.update(values)
        self._groups = tuple(groups)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        spec = cls.spec
        cls.name, cls.code, cls.hyper_names, cls.state_names = spec.name, spec.code, spec.hyper_names, spec.state
        parameters, seen = [], set()
        for hyper in spec.hyper:
            if hyper.group is None:
                parameters.append(
                    inspect.Parameter(hyper.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=hyper.default)
                )
            elif hyper.group not in seen:
                seen.add(hyper.group)
                default = tuple(h.default for h in spec.hyper if h.group == hyper.group)
                parameters.append(
                    inspect.Parameter(hyper.group, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default)
                )
        cls.__signature__ = inspect.Signature(parameters)
        for group in seen:  # e.g. Adam's betas, read as the pair it was given
            members = tuple(h.name for h in spec.hyper if h.group == group)
            setattr(cls, group, property(lambda self, members=members: tuple(getattr(self, m) for m in members)))

    def hyper_vector(self) -> np.ndarray:
        """The hyper-parameters as the float64 vector the kernels read (booleans as 0/1)."""
        return hyper_vector(self.code, {name: getattr(self, name) for name in self.hyper_names})[
            : len(self.hyper_names)
        ]

    def initial_state(self, n_params: int, dtype) -> np.ndarray:
        """A fresh ``(len(state_names), n_params)`` state buffer, each row at its declared start."""
        state = np.zeros((max(len(self.state_names), 1), n_params), dtype=dtype)
        for row, start in enumerate(self.spec.initial):
            state[row] = getattr(self, start) if isinstance(start, str) else start
        return state

    def get_config(self) -> dict:
        """Hyper-parameters as a JSON-friendly dict (``type(self)(**config)`` rebuilds it)."""
        return {name: getattr(self, name) for name in self.__signature__.parameters}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    __hash__ = object.__hash__


def optimizer_class(code, class_name) -> type:
    """The public class of optimizer ``code``, built from its declaration: its arguments (with
    their defaults), checks, attributes, state and a docstring stating its update rule."""
    spec = SPECS[code]
    lines = [
        spec.title,
        "",
        "Update rule, g the gradient, p the parameters, t the 1-based step count::",
        "",
        f"    {spec.formula}",
        "",
        "Parameters",
        "----------",
    ]
    seen = set()
    for hyper in spec.hyper:
        if hyper.group is None:
            lines += [
                f"{hyper.name} : {'bool' if hyper.kind == 'flag' else 'float'}, default {hyper.default!r}",
                f"    {_describe(hyper.kind)}",
            ]
        elif hyper.group not in seen:
            seen.add(hyper.group)
            members = [h for h in spec.hyper if h.group == hyper.group]
            default = tuple(h.default for h in members)
            lines += [
                f"{hyper.group} : tuple of {len(members)} floats, default {default!r}",
                f"    ({', '.join(h.name for h in members)}), each {_describe(hyper.kind)}",
            ]
    return type(class_name, (Optimizer,), {"spec": spec, "__doc__": "\n".join(lines), "__module__": __name__})


def _describe(kind):
    return "True or False" if kind == "flag" else _KIND_RULES[kind][1]


SGD = optimizer_class(OPT_SGD, "SGD")
Momentum = optimizer_class(OPT_MOMENTUM, "Momentum")
Adagrad = optimizer_class(OPT_ADAGRAD, "Adagrad")
RMSprop = optimizer_class(OPT_RMSPROP, "RMSprop")
Adam = optimizer_class(OPT_ADAM, "Adam")
AdamW = optimizer_class(OPT_ADAMW, "AdamW")
NAdam = optimizer_class(OPT_NADAM, "NAdam")
RAdam = optimizer_class(OPT_RADAM, "RAdam")
Adamax = optimizer_class(OPT_ADAMAX, "Adamax")

OPTIMIZERS = {cls.name: cls for cls in (SGD, Momentum, Adagrad, RMSprop, Adam, AdamW, NAdam, RAdam, Adamax)}

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
    (NAdam, dict(lr=0.01)),
    (NAdam, dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.01, momentum_decay=0.01)),
    (NAdam, dict(lr=0.01, weight_decay=0.05, decoupled_weight_decay=True)),
    (RAdam, dict(lr=0.01)),
    (RAdam, dict(lr=0.01, weight_decay=0.01)),
    (RAdam, dict(lr=0.01, weight_decay=0.05, decoupled_weight_decay=True)),
    (Adamax, dict(lr=0.01)),
    (Adamax, dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.01)),
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
