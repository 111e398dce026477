"""The training loop's phases that are pieces of their own (``kernels.pieces``): the loop calls
them by address, so their code is compiled once, apart, instead of inside the loop (a callee
linked into a kernel is optimised again inside it).

Each is run by every thread of the team (``tid``, ``n_threads``, ``control``), except
``gather``, which a thread runs on the rows it is given.
"""

import numpy as np

from .compat import kernel, unsigned
from .config import INTERNAL_OPTIONS
from .layout import FLAG_PARTIALS, chunk_count
from .team import barrier, first_task, next_task


@kernel(**INTERNAL_OPTIONS)
def save(tid, n_threads, control, params_to, params_from, state_to, state_from):
    """``params_to = params_from`` and ``state_to = state_from`` (the flat optimizer state, a
    row per slot), in the optimizer update's chunks, as a phase the whole team has left when this
    returns (0)."""
    n = params_from.size
    n_chunks = chunk_count(n)
    task = first_task(control, tid, n_threads)
    while task < n_chunks:
        first, stop = unsigned(task * n // n_chunks), unsigned((task + 1) * n // n_chunks)
        for i in range(first, stop):
            params_to[i] = params_from[i]
        for row in range(unsigned(0), unsigned(state_from.size), unsigned(n)):
            for i in range(row + first, row + stop):
                state_to[i] = state_from[i]
        task = next_task(control, n_threads, task)
    barrier(control, n_threads)
    return np.int64(0)


@kernel(**INTERNAL_OPTIONS)
def finite(tid, n_threads, control, params, state, partials):
    """Are every parameter and state entry finite (the same answer on every thread)? Per chunk,
    ``v * 0`` is 0 for finite v and NaN otherwise (the fast-math flags exclude nnan/ninf, without
    which LLVM would fold it to 0); the chunks' flags go to ``partials[FLAG_PARTIALS:]``."""
    n = params.size
    n_chunks = chunk_count(n)
    zero = params.dtype.type(0.0)
    task = first_task(control, tid, n_threads)
    while task < n_chunks:
        first, stop = unsigned(task * n // n_chunks), unsigned((task + 1) * n // n_chunks)
        total = zero
        for i in range(first, stop):
            total += params[i] * zero
        for row in range(unsigned(0), unsigned(state.size), unsigned(n)):
            for i in range(row + first, row + stop):
                total += state[i] * zero
        partials[FLAG_PARTIALS + task] = 1.0 if total == 0 else 0.0
        task = next_task(control, n_threads, task)
    barrier(control, n_threads)
    finite = True
    for chunk in range(n_chunks):
        finite = finite and partials[FLAG_PARTIALS + chunk] != 0.0
    return finite


@kernel(**INTERNAL_OPTIONS)
def gather(X, Y, sample_weight, order, x_batch, y_batch, row_scale, start, first, stop, inv, is_mean):
    """Rows ``[first, stop)`` of the batch starting at ``start`` of this epoch's ``order``, into
    the batch buffers: inputs, targets and row scales (the sample weight times ``inv``, one over
    the batch's weight, for mean losses). Returns 0."""
    n_in, n_out = unsigned(X.shape[1]), unsigned(Y.shape[1])
    for r in range(unsigned(first), unsigned(stop)):
        i = order[unsigned(start) + r]
        for k in range(n_in):
            x_batch[r * n_in + k] = X[i, k]
        for k in range(n_out):
            y_batch[r * n_out + k] = Y[i, k]
        row_scale[r] = sample_weight[i] * inv if is_mean else sample_weight[i]
    return np.int64(0)
