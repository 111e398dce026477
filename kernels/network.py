"""Whole-network kernels on a batch of rows: forward pass, loss, and loss with backprop.

Each is a Python entry point that runs a compiled team kernel (``team.run_team``) over the
``passes`` that the training loop runs too, so prediction, ``loss``/``gradients`` and training
compute the same thing the same way. The NumPy twins in :mod:`fastgd.reference` take the same
arguments (and ignore ``n_threads``).

Arguments: ``params`` (n_params,) and ``meta`` (``layout``); ``x`` (rows, n_in) and ``y``
(rows, n_out) C-contiguous; ``row_scale`` (rows,): 1/n for mean losses, 1 for sse, times sample
weights; ``evaluation``: a ``layout.Evaluation`` for at least ``rows`` rows (the layer outputs
land in ``evaluation.acts``, the output layer's pre-activations in ``evaluation.z_out``).
"""

import numpy as np

from .compat import kernel
from .config import JIT_OPTIONS
from .layout import make_control
from .passes import backward_pass, batch_value, forward_pass
from .team import run_team


@kernel(**JIT_OPTIONS)
def _forward_team(tid, n_threads, control, params, meta, x, rows, acts, z_out, deltas, partials):
    forward_pass(tid, n_threads, control, params, meta, x, rows, z_out, z_out, acts, z_out, deltas, partials, np.int64(0),
                 np.bool_(False))  # fmt: skip
    return 0.0


@kernel(**JIT_OPTIONS)
def _loss_team(tid, n_threads, control, params, meta, x, rows, y, row_scale, acts, z_out, deltas, partials, loss):
    forward_pass(tid, n_threads, control, params, meta, x, rows, y, row_scale, acts, z_out, deltas, partials, loss, np.bool_(True))
    return batch_value(meta, rows, partials, 0.0, 0.0)


@kernel(**JIT_OPTIONS)
def _gradients_team(tid, n_threads, control, params, grads, meta, x, rows, y, row_scale, acts, z_out, deltas, partials, loss, l1, l2):
    forward_pass(tid, n_threads, control, params, meta, x, rows, y, row_scale, acts, z_out, deltas, partials, loss, np.bool_(True))
    backward_pass(tid, n_threads, control, params, grads, meta, x, rows, acts, deltas, partials, l1, l2)
    return batch_value(meta, rows, partials, l1, l2)


def _flat(array):
    return array.reshape(array.size)


def forward(params, meta, x, evaluation, n_threads=1):
    """Forward pass of the whole network over the rows of ``x`` (the prediction is the output
    layer's block of ``evaluation.acts``)."""
    e = evaluation
    run_team(_forward_team, (params, meta, _flat(x), x.shape[0], e.acts, e.z_out, e.deltas, e.partials), n_threads, make_control())


def evaluate_loss(params, meta, x, y, row_scale, evaluation, loss, n_threads=1):
    """Forward pass and loss of a batch (``kernels.losses``; no weight penalty); returns the loss."""
    e = evaluation
    args = (params, meta, _flat(x), x.shape[0], _flat(y), row_scale, e.acts, e.z_out, e.deltas, e.partials, int(loss))
    return float(run_team(_loss_team, args, n_threads, make_control()))


def forward_backward(params, grads, meta, x, y, row_scale, evaluation, loss, l1, l2, n_threads=1):
    """Forward pass, loss and backprop of one batch: every gradient into ``grads`` (the L1/L2
    penalty on the weights included), local gradients into ``evaluation.deltas``; returns the
    loss plus the penalty at the parameters as they are."""
    e = evaluation
    args = (params, grads, meta, _flat(x), x.shape[0], _flat(y), row_scale, e.acts, e.z_out, e.deltas, e.partials, int(loss),
            float(l1), float(l2))  # fmt: skip
    return float(run_team(_gradients_team, args, n_threads, make_control()))
