"""Whole-network kernels on a batch of rows: forward pass, loss, and loss with backprop.

Each is a Python entry point that runs the pieces the training loop runs (the passes
``passes.forward_pass``/``backward_pass``, with the network's ``pieces`` table) as a team
(``team.run_team``), so prediction, ``loss``/``gradients`` and training compute the same thing
the same way, with the same compiled code. The NumPy twins in :mod:`fastgd.reference` take the
same arguments (and ignore ``n_threads``).

Arguments: ``params`` (n_params,) and ``meta`` (``layout``); ``x`` (rows, n_in) and ``y``
(rows, n_out) C-contiguous; ``row_scale`` (rows,): 1/n for mean losses, 1 for sse, times sample
weights; ``evaluation``: a ``layout.Evaluation`` for at least ``rows`` rows (the layer outputs
land in ``evaluation.acts``, the output layer's pre-activations in ``evaluation.z_out``, the
local gradients in ``evaluation.deltas``); ``loss``: the loss code.
"""

from .layout import make_control
from .passes import backward_pass, batch_value, forward_pass
from .pieces import table
from .team import run_team


def _flat(array):
    return array.reshape(array.size)


def _forward(params, meta, x, y, row_scale, evaluation, loss, with_loss, n_threads, control):
    pieces = table(meta, loss, -1, params.dtype)
    e = evaluation
    args = (pieces, params, meta, _flat(x), x.shape[0], y, row_scale, e.acts, e.z_out, e.deltas, e.partials, e.transposed, with_loss)
    run_team(forward_pass, args, n_threads, control)
    return pieces


def forward(params, meta, x, evaluation, loss, n_threads=1):
    """Forward pass of the whole network over the rows of ``x`` (the prediction is the output
    layer's block of ``evaluation.acts``)."""
    _forward(params, meta, x, evaluation.z_out, evaluation.z_out, evaluation, loss, False, n_threads, make_control())


def evaluate_loss(params, meta, x, y, row_scale, evaluation, loss, n_threads=1):
    """Forward pass and loss of a batch (``kernels.losses``; no weight penalty); returns the loss."""
    _forward(params, meta, x, _flat(y), row_scale, evaluation, loss, True, n_threads, make_control())
    return float(batch_value(meta, x.shape[0], evaluation.partials, 0.0, 0.0))


def forward_backward(params, grads, meta, x, y, row_scale, evaluation, loss, l1, l2, n_threads=1):
    """Forward pass, loss and backprop of one batch: every gradient into ``grads`` (the L1/L2
    penalty on the weights included), local gradients into ``evaluation.deltas``; returns the
    loss plus the penalty at the parameters as they are."""
    control = make_control()
    pieces = _forward(params, meta, x, _flat(y), row_scale, evaluation, loss, True, n_threads, control)
    e = evaluation
    args = (pieces, params, grads, meta, _flat(x), x.shape[0], e.acts, e.deltas, e.partials, e.transposed, float(l1), float(l2))
    run_team(backward_pass, args, n_threads, control)
    return float(batch_value(meta, x.shape[0], e.partials, float(l1), float(l2)))

