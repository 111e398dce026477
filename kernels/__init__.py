"""Numba kernels of fastgd (installed as ``fastgd.kernels``).

Every function named in ``KERNEL_NAMES`` has a NumPy twin with the same name and signature in
:mod:`fastgd.reference`, and the equivalence tests walk that list. Most are Numba dispatchers;
``optimizer_step`` and ``train_epochs`` are Python functions that pick a compiled
specialisation (``optim.UPDATES``, ``training_loop``) and call it.
"""

from . import codes
from .dense import (
    activate,
    activation_derivative,
    dense_forward,
    dense_gradients,
    dense_linear,
    hidden_delta,
    loss_value,
    output_delta,
)
from .extras import scheduled_lr, weight_penalty
from .optim import (
    adagrad_step,
    adam_step,
    adamw_step,
    momentum_step,
    optimizer_step,
    rmsprop_step,
    sgd_step,
)
from .small import forward_backward_small
from .train import (
    evaluate_loss,
    forward,
    forward_backward,
    shuffle_order,
    train_epochs,
    training_loop,
)

KERNEL_NAMES = (
    "activate",
    "activation_derivative",
    "dense_linear",
    "dense_forward",
    "loss_value",
    "output_delta",
    "hidden_delta",
    "dense_gradients",
    "sgd_step",
    "momentum_step",
    "adagrad_step",
    "rmsprop_step",
    "adam_step",
    "adamw_step",
    "optimizer_step",
    "scheduled_lr",
    "weight_penalty",
    "forward",
    "evaluate_loss",
    "forward_backward",
    "forward_backward_small",
    "shuffle_order",
    "train_epochs",
)

__all__ = ["codes", "KERNEL_NAMES", *KERNEL_NAMES, "training_loop"]

from .._config import guard_compile_cache
from . import blas, dense, extras, guard, mathfn, optim, small, train

guard_compile_cache([blas, codes, dense, extras, guard, mathfn, optim, small, train])
