"""Whole-network kernels on a batch of rows: forward pass, loss, and loss with backprop.

Each is a Python entry point that runs the passes the training loop runs (``passes``, as the
first-class functions of ``phases``, with the network's pieces) on the calling thread, or as a
team for large batches, through one compiled call (``passes.run_passes``), so prediction,
``loss``/``gradients`` and training compute the same thing the same way, with the same compiled
code. Nothing is locked: calls from several Python threads run at the same time, each on its own
buffers. The NumPy twins in :mod:`fastgd.reference` take the same arguments (and ignore
``n_threads``).

Arguments: ``params`` (n_params,) and ``architecture`` (``layout.Architecture``); ``x`` (rows,
n_in) and ``y`` (rows, n_out) C-contiguous; ``row_scale`` (rows,): 1/n for mean losses, 1 for
sse, times sample weights; ``buffers``: a ``layout.Buffers`` for at least ``rows`` rows (the
layer outputs land in ``buffers.acts``, the pre-activations the layers keep in ``buffers.zs``,
the local gradients in ``buffers.deltas``); ``loss``: the loss code.
"""

from __future__ import annotations

import threading

import numpy as np

from . import layout
from .blas import gemm_address
from . import passes
from .dropout import NO_DROPOUT
from .kit import kit_for
from .phases import bundle as phases_bundle
from .pieces import bundle, quiet
from .team import run_team

_EMPTY = {}


def _none(dtype):
    # A one-element array standing for "no targets", "no row scales", "no gradient".
    dtype = np.dtype(dtype)
    if dtype not in _EMPTY:
        _EMPTY[dtype] = np.zeros(1, dtype=dtype)
    return _EMPTY[dtype]


def network_pieces(architecture, loss, dtype):
    """The ``Pieces`` and the ``?gemm`` address (0: none) of a network's passes."""
    dtype = np.dtype(dtype)
    pieces = bundle(dtype, architecture.layers["activation"], loss, layout.paths(architecture, dtype))
    return pieces, gemm_address(dtype) if architecture.blas else 0


# (id of the layer records, loss, dtype) -> (the records, kit, gemm): what a network's entry
# calls pass, found once (the records are kept so that their id stays theirs).
_ENTRIES = {}
_LOCAL = threading.local()


def _entry(architecture, loss, dtype):
    key = (id(architecture.layers), loss, dtype)
    found = _ENTRIES.get(key)
    if found is None or found[0] is not architecture.layers:
        pieces, gemm = network_pieces(architecture, loss, dtype)
        with quiet():
            found = (architecture.layers, kit_for(phases_bundle(dtype), pieces), gemm)
        _ENTRIES[key] = found
    return found[1], found[2]


def _control():
    # A control array for a call on the calling thread alone (one per Python thread).
    control = getattr(_LOCAL, "control", None)
    if control is None:
        control = _LOCAL.control = layout.make_control()
    return control


def _writable(array):
    # The passes are compiled for writable arrays (they are one compiled function for every
    # caller, the training loop's buffers included): a read-only input (a memory map, a
    # broadcast) is copied.
    return array if array.flags.writeable else array.copy()


def _run(params, grads, architecture, x, y, row_scale, buffers, loss, with_loss, l1, l2, n_threads, key=NO_DROPOUT, row0=0):
    dtype = params.dtype
    params, x, y, row_scale = _writable(params), _writable(x), _writable(y), _writable(row_scale)
    kit, gemm = _entry(architecture, int(loss), dtype)
    arguments = (kit, architecture, params, grads, x.reshape(-1), x.shape[0], y.reshape(-1), row_scale, buffers,
                 int(loss) if with_loss else -1, float(l1), float(l2), gemm, int(key), int(row0))  # fmt: skip
    if n_threads <= 1 and _QUIET_DONE.get(dtype):
        # The calling thread alone, the kernel already loaded: no team, no warning filter.
        return float(run_team(passes.run_passes, arguments, 1, _control()))
    with quiet():
        value = float(run_team(passes.run_passes, arguments, n_threads, layout.make_control()))
    _QUIET_DONE[dtype] = True
    return value


# dtypes whose entry kernel has run in this process (Numba's note on first-class functions is
# given while it is typed and compiled, never after).
_QUIET_DONE = {}


def forward(params, architecture, x, buffers, loss, n_threads=1, key=NO_DROPOUT, row0=0):
    """Forward pass of the whole network over the rows of ``x`` (the prediction is the output
    layer's block of ``buffers.acts``); with a dropout ``key`` >= 0 (``kernels.dropout``) the
    hidden layers with dropout drop their outputs, ``row0`` being x's first row in its batch."""
    none = _none(params.dtype)
    _run(params, none, architecture, x, none, none, buffers, loss, False, 0.0, 0.0, n_threads, key, row0)


def evaluate_loss(params, architecture, x, y, row_scale, buffers, loss, n_threads=1, key=NO_DROPOUT, row0=0):
    """Forward pass and loss of a batch (``kernels.losses``; no weight penalty); returns the loss."""
    return _run(params, _none(params.dtype), architecture, x, y, row_scale, buffers, loss, True, 0.0, 0.0, n_threads, key, row0)


def forward_backward(params, grads, architecture, x, y, row_scale, buffers, loss, l1, l2, n_threads=1, key=NO_DROPOUT, row0=0):
    """Forward pass, loss and backprop of one batch: every gradient into ``grads`` (the L1/L2
    penalty on the weights included), local gradients into ``buffers.deltas``; returns the loss
    plus the penalty at the parameters as they are."""
    return _run(params, grads, architecture, x, y, row_scale, buffers, loss, True, l1, l2, n_threads, key, row0)
