# stamp: 9082f607695e423fa8c6c2eefee7f625
"""Whole-network kernels on a batch of rows: forward pass, loss, and loss with backprop.

Each is a Python entry point that runs the passes the training loop runs (``kernels.passes``)
through one compiled call (``run_passes``), on the calling thread or as a team for large
batches, so prediction, ``loss``/``gradients`` and training compute the same thing the same
way. Nothing is locked: calls from several Python threads run at the same time, each on its own
buffers. The NumPy twins in :mod:`fastgd.reference` take the same arguments (and ignore
``n_threads``).

Arguments: ``params`` (n_params,) and ``architecture`` (``layout.Architecture``); ``x`` (rows,
n_in) and ``y`` (rows, n_out) C-contiguous; ``row_scale`` (rows,): 1/n for mean losses, 1 for
sse, times sample weights; ``buffers``: a ``layout.Buffers`` for at least ``rows`` rows (the
layer outputs land in ``buffers.acts``, the local gradients in ``buffers.deltas``); ``loss``:
the loss code; ``parameter``: the loss's own parameter (Huber's δ; None: its declared default).
"""

from __future__ import annotations

import threading

import numpy as np

from . import layout, passes
from .jit import current, first_call, kernel
from .losses import SPECS as LOSS_SPECS
from .lowlevel import address, call_piece
from .passes import NO_DROPOUT, NO_LOSS, Batch, Pass
from .products import gemm_address
from .team import barrier, run_team


@kernel
def run_passes(tid, n_threads, control, architecture, params, grads, batch, buffers, options, penalties, pieces):
    """The entry points' compiled call: the forward pass (with the loss when ``options.loss`` >=
    0), then with ``options.slopes`` the backward pass into ``grads`` (with the L1/L2
    ``penalties``); returns the batch loss with the penalty (``batch_value``), or 0 without a
    loss or rows. ``pieces``: (a PASS record array of one, the forward pass's address, the
    backward pass's), the passes being called by address (``passes.piece``)."""
    if batch.rows == 0:
        return 0.0
    record, forward, backward = pieces
    if tid == 0:
        passes.fill(record[0], control, architecture, params, grads, batch, buffers, options, penalties)
    barrier(control, n_threads)
    args = address(record, 0)
    call_piece(forward, tid, n_threads, args)
    if options.loss < 0:
        return 0.0
    if options.slopes:
        call_piece(backward, tid, n_threads, args)
    return passes.batch_value(architecture, batch.rows, buffers, penalties[0], penalties[1])


_EMPTY = {}
_LOCAL = threading.local()


def _none(dtype):
    # A one-element array standing for "no targets", "no row scales", "no gradient".
    dtype = np.dtype(dtype)
    if dtype not in _EMPTY:
        _EMPTY[dtype] = np.zeros(1, dtype=dtype)
    return _EMPTY[dtype]


def _control():
    # A control array for a call on the calling thread alone (one per Python thread).
    control = getattr(_LOCAL, "control", None)
    if control is None:
        control = _LOCAL.control = layout.make_control()
    return control


def _writable(array):
    # The passes are compiled for writable arrays (one compiled function for every caller, the
    # training loop's buffers included): a read-only input (a memory map, a broadcast) is copied.
    return array if array.flags.writeable else array.copy()


def _run(params, grads, architecture, batch, buffers, options, penalties, n_threads):
    gemm = gemm_address(params.dtype) if architecture.blas else 0
    options = options._replace(gemm=gemm)
    pieces = (_record(), *passes.piece_addresses(params.dtype))
    arguments = (architecture, _writable(params), grads, batch, buffers, options, penalties, pieces)
    if n_threads <= 1:
        return float(first_call(run_passes, 0, 1, _control(), *arguments))
    first_call(
        run_passes,
        0,
        1,
        _control(),
        architecture,
        arguments[1],
        grads,
        batch._replace(rows=0),
        buffers,
        options,
        penalties,
        pieces,
    )
    return float(run_team(current(run_passes), arguments, n_threads, layout.make_control()))


def _record():
    # A PASS record for a call from the calling thread (one per Python thread).
    record = getattr(_LOCAL, "record", None)
    if record is None:
        record = _LOCAL.record = np.zeros(1, dtype=layout.PASS)
    return record


def _batch(x, y, row_scale, row0=0):
    return Batch(_writable(x).reshape(-1), _writable(y).reshape(-1), _writable(row_scale), int(x.shape[0]), int(row0))


def forward(params, architecture, x, buffers, loss, n_threads=1, key=NO_DROPOUT, row0=0):
    """Forward pass of the whole network over the rows of ``x`` (the prediction is the output
    layer's block of ``buffers.acts``); with a dropout ``key`` >= 0 (``passes.step_key``) the
    hidden layers with dropout drop their outputs, ``row0`` being x's first row in its batch."""
    none = _none(params.dtype)
    _run(
        params,
        none,
        architecture,
        _batch(x, none, none, row0),
        buffers,
        Pass(NO_LOSS, 0.0, False, int(key), 0),
        (0.0, 0.0),
        n_threads,
    )


def evaluate_loss(
    params, architecture, x, y, row_scale, buffers, loss, n_threads=1, key=NO_DROPOUT, row0=0, parameter=None
):
    """Forward pass and loss of a batch (``kernels.losses``; no weight penalty); returns the loss."""
    return _run(
        params,
        _none(params.dtype),
        architecture,
        _batch(x, y, row_scale, row0),
        buffers,
        Pass(int(loss), LOSS_SPECS[int(loss)].parameter_value(parameter), False, int(key), 0),
        (0.0, 0.0),
        n_threads,
    )


def forward_backward(
    params,
    grads,
    architecture,
    x,
    y,
    row_scale,
    buffers,
    loss,
    l1,
    l2,
    n_threads=1,
    key=NO_DROPOUT,
    row0=0,
    parameter=None,
):
    """Forward pass, loss and backprop of one batch: every gradient into ``grads`` (the L1/L2
    penalty on the weights included), local gradients into ``buffers.deltas``; returns the loss
    plus the penalty at the parameters as they are."""
    options = Pass(int(loss), LOSS_SPECS[int(loss)].parameter_value(parameter), True, int(key), 0)
    return _run(
        params, grads, architecture, _batch(x, y, row_scale, row0), buffers, options, (float(l1), float(l2)), n_threads
    )
