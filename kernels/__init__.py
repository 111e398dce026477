"""Numba kernels of fastgd (installed as ``fastgd.kernels``), a self-contained package: it
imports nothing from the rest of fastgd.

A training step reads top-down: ``train`` (the loop and its stages) → ``passes`` (forward and
backward over a batch) → ``products`` (matrix products: loops, a register tile, BLAS),
``activations`` (→ ``mathfn``, vectorisable exp/tanh/log1p), ``losses``, ``optim`` (optimizers
and learning-rate schedules) → ``team`` (threads), ``layout`` (records and buffers) and
``lowlevel`` (pointers, atomics, calls to C). Beside the step: ``health`` (clipping, gradient
health), ``epoch_end`` (validation, the stopping rule), ``exchange`` (MPI), ``network`` and
``layers`` (the entry points on whole arrays), ``compile`` (everything ahead of time), ``config``,
``jit`` and ``stamps`` (how everything is compiled and cached).

Every name in ``KERNEL_NAMES`` has a NumPy twin with the same name and signature in
:mod:`fastgd.reference`, and the equivalence tests walk that list. Nothing is compiled at import:
each kernel is compiled (or loaded from Numba's cache) the first time it is used, and the
modules themselves are imported the first time one of their names is (PEP 562), so
``python -m fastgd.kernels.stamps`` imports nothing else.
"""

import importlib

# Public name -> its module.
_NAMES = {
    "activate": "layers",
    "activation_derivative": "layers",
    "dense_linear": "layers",
    "dense_forward": "layers",
    "loss_value": "layers",
    "output_delta": "layers",
    "hidden_delta": "layers",
    "dense_gradients": "layers",
    "weight_penalty": "layers",
    "optimizer_step": "optim",
    "scheduled_lr": "optim",
    "forward": "network",
    "evaluate_loss": "network",
    "forward_backward": "network",
    "shuffle_order": "train",
    "train_epochs": "train",
    "stopping_rule": "epoch_end",
}
_MODULES = (
    "activations",
    "compile",
    "config",
    "epoch_end",
    "exchange",
    "health",
    "jit",
    "layers",
    "layout",
    "losses",
    "many",
    "lowlevel",
    "mathfn",
    "network",
    "optim",
    "passes",
    "products",
    "stamps",
    "team",
    "train",
)

KERNEL_NAMES = tuple(_NAMES)

__all__ = ["KERNEL_NAMES", *KERNEL_NAMES]


_LOADED = {}  # name -> what it names, once imported


def __getattr__(name):
    value = _LOADED.get(name)
    if value is None:
        if name in _MODULES:
            value = importlib.import_module(f"{__name__}.{name}")
        elif name in _NAMES:
            value = getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
        else:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        _LOADED[name] = value
    return value


def __dir__():
    return sorted({"KERNEL_NAMES", *_NAMES, *_MODULES})
