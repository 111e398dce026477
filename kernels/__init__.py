"""Numba kernels of fastgd (installed as ``fastgd.kernels``), a self-contained package: it
imports nothing from the rest of fastgd.

Layers, from the bottom: ``config`` (numerics settings) and ``compat`` (every private Numba
name), ``layout`` (buffers, blocks, bundles), ``mathfn``/``activations``/``losses``/``products``
(the arithmetic), ``team`` (threads), ``passes`` (forward and backward over a batch), then the
entry points: ``layers`` (one layer, whole arrays), ``network`` (whole network, one batch),
``optim``/``schedules`` (updates) and ``train`` (whole epochs).

Every name in ``KERNEL_NAMES`` has a NumPy twin with the same name and signature in
:mod:`fastgd.reference`, and the equivalence tests walk that list.
"""

from . import activations, compat, config, layout, losses, optim, pieces, schedules
from .layers import (
    activate,
    activation_derivative,
    dense_forward,
    dense_gradients,
    dense_linear,
    hidden_delta,
    loss_value,
    output_delta,
    weight_penalty,
)
from .network import evaluate_loss, forward, forward_backward
from .optim import STEPS, optimizer_step
from .schedules import scheduled_lr
from .train import shuffle_order, train_epochs

globals().update({step.__name__: step for step in STEPS.values()})

KERNEL_NAMES = (
    "activate",
    "activation_derivative",
    "dense_linear",
    "dense_forward",
    "loss_value",
    "output_delta",
    "hidden_delta",
    "dense_gradients",
    *(step.__name__ for step in STEPS.values()),  # <name>_step of every optimizer (kernels.optim)
    "optimizer_step",
    "scheduled_lr",
    "weight_penalty",
    "forward",
    "evaluate_loss",
    "forward_backward",
    "shuffle_order",
    "train_epochs",
)

__all__ = ["activations", "compat", "config", "layout", "losses", "optim", "pieces", "schedules", "KERNEL_NAMES", *KERNEL_NAMES]
