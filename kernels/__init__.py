"""Numba kernels of fastgd (installed as ``fastgd.kernels``).

Every public function here has a NumPy twin with the same name and signature in
:mod:`fastgd.reference`; ``KERNEL_NAMES`` lists them, and the equivalence tests walk that list.
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
from .optim import adagrad_step, adam_step, adamw_step, momentum_step, optimizer_step, rmsprop_step, sgd_step
from .small import forward_backward_small
from .train import evaluate_loss, forward, forward_backward, shuffle_order, train_epochs

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

__all__ = ["codes", "KERNEL_NAMES", *KERNEL_NAMES]

from .._config import guard_compile_cache  # noqa: E402
from . import blas, dense, extras, guard, mathfn, optim, small, train  # noqa: E402

guard_compile_cache([blas, codes, dense, extras, guard, mathfn, optim, small, train])
