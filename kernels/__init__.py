"""Numba kernels of fastgd (installed as ``fastgd.kernels``), a self-contained package: it
imports nothing from the rest of fastgd.

Layers, from the bottom: ``config`` (numerics settings), ``jit`` (how everything is compiled:
Numba's ``njit`` and ``cfunc`` with Numba's cache), ``stamps`` (the cache's source stamps),
``lowlevel`` (pointers, atomics and clock calls through Numba's documented extension API),
``mathfn``/``activations``/``losses``/``optim``/``schedules``/``products`` (the arithmetic and
its tables), ``pieces`` (those kernels compiled one by one as first-class functions),
``layout`` (records, buffers, bundles), ``team`` (threads), ``passes``/``phases`` (forward and
backward over a batch), ``condition``/``epoch_end``/``exchange``/``stages`` (the loop's optional
stages), ``build`` (what is compiled where), then the entry points: ``layers`` (one layer, whole
arrays), ``network`` (whole network, one batch), ``optim``/``schedules`` (updates) and ``train``
(whole epochs).

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
    "scheduled_lr": "schedules",
    "forward": "network",
    "evaluate_loss": "network",
    "forward_backward": "network",
    "shuffle_order": "train",
    "train_epochs": "train",
    "stopping_rule": "epoch_end",
}
_STEPS = ("sgd_step", "momentum_step", "adagrad_step", "rmsprop_step", "adam_step", "adamw_step")
_MODULES = ("activations", "build", "config", "layout", "losses", "optim", "pieces", "schedules", "stages", "phases", "passes", "team",
            "train", "lowlevel", "products", "network", "layers", "stamps", "jit", "mathfn", "blas", "condition", "epoch_end", "exchange",
            "microkernel")  # fmt: skip

KERNEL_NAMES = (
    "activate",
    "activation_derivative",
    "dense_linear",
    "dense_forward",
    "loss_value",
    "output_delta",
    "hidden_delta",
    "dense_gradients",
    *_STEPS,  # <name>_step of every optimizer (kernels.optim.STEPS)
    "optimizer_step",
    "scheduled_lr",
    "weight_penalty",
    "forward",
    "evaluate_loss",
    "forward_backward",
    "shuffle_order",
    "train_epochs",
    "stopping_rule",
)

__all__ = ["KERNEL_NAMES", *KERNEL_NAMES]


def __getattr__(name):
    if name in _MODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    elif name in _NAMES or name in _STEPS:
        value = getattr(importlib.import_module(f"{__name__}.{_NAMES.get(name, 'optim')}"), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_NAMES) | set(_STEPS) | set(_MODULES))
