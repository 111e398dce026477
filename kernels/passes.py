"""The forward and backward pass of a whole network over one batch, as team phases.

Both run inside a team (``team``): each layer is one phase whose tasks are fixed blocks of rows
(``layout.block_count``), separated from the next layer by a barrier. ``tid``/``n_threads``/
``control`` describe the team (a team of one: ``0, 1, control``).

Forward, layer by layer: ``a = f(a_in @ W + b)`` per block of batch rows into the layer's block
of ``acts``; the output layer keeps ``z`` in ``z_out`` and, in the same task, computes its rows'
losses (their weighted sum per block goes to ``partials[block]``) and output local gradients.

Backward, from the output layer down, one phase per layer with three kinds of tasks: blocks of
rows of the weight gradient ``Aᵀ δ`` (plus the L1/L2 penalty on those weights, whose value goes
to ``partials``), the bias gradient ``Σ_rows δ``, and blocks of rows of the layer below's local
gradient ``(δ Wᵀ) ⊙ f'(a)``.
"""

import numpy as np
from numba import njit

from .activations import SOFTMAX, activate_range, derivative_range, softmax_row
from .compat import kernel
from .config import JIT_OPTIONS
from .layout import (
    MAX_BLOCKS,
    META_ACTIVATION,
    META_B_OFFSET,
    META_N_IN,
    META_N_OUT,
    META_UNITS_BEFORE,
    META_W_OFFSET,
    block_count,
    block_start,
)
from .losses import row_delta, row_loss
from .products import product_nn, product_nt, product_tn
from .team import barrier, first_task, next_task

_INLINE = dict(JIT_OPTIONS, inline="always")

# Where penalty partials start in ``partials`` (after the row-loss partials).
PENALTY_PARTIALS = MAX_BLOCKS


@njit(**_INLINE)
def capacity_of(acts, meta):
    last = meta.shape[0] - 1
    return acts.size // (meta[last, META_UNITS_BEFORE] + meta[last, META_N_OUT])


@kernel(**JIT_OPTIONS)
def forward_pass(tid, n_threads, control, params, meta, x, rows, y, row_scale, acts, z_out, deltas, partials, loss, with_loss):
    """Forward pass of ``rows`` rows of ``x`` (flat, ``rows × n_in``) through the network.

    With ``with_loss``: the output rows' losses times ``row_scale`` summed per block into
    ``partials[block]`` (``loss_blocks(meta, rows)`` blocks), and the output local gradients
    into the last block of ``deltas``; ``y`` is flat ``rows × n_out``.
    """
    capacity = capacity_of(acts, meta)
    last = meta.shape[0] - 1
    for layer in range(last + 1):
        n_in, n_out = meta[layer, META_N_IN], meta[layer, META_N_OUT]
        w, b, activation = meta[layer, META_W_OFFSET], meta[layer, META_B_OFFSET], meta[layer, META_ACTIVATION]
        out = capacity * meta[layer, META_UNITS_BEFORE]
        source = x if layer == 0 else acts
        source_start = 0 if layer == 0 else capacity * meta[layer - 1, META_UNITS_BEFORE]
        n_blocks = block_count(rows, n_in * n_out)
        task = first_task(control, n_threads)
        while task < n_blocks:
            first, stop = block_start(task, n_blocks, rows), block_start(task + 1, n_blocks, rows)
            count = stop - first
            if layer < last:
                product_nn(count, n_out, n_in, source, source_start + first * n_in, n_in, params, w, n_out, acts, out + first * n_out, n_out)
                activate_range(acts, out + first * n_out, out + stop * n_out, params, b, n_out, activation)
            else:
                _output_rows(params, b, n_out, activation, source, source_start, n_in, w,
                             first, count, out, acts, z_out, y, row_scale, deltas, partials, task, loss, with_loss)  # fmt: skip
            task = next_task(control, n_threads, task)
        barrier(control, n_threads)


@njit(**JIT_OPTIONS)
def _output_rows(params, b, n_out, activation, source, source_start, n_in, w, first, count, out, acts, z_out, y,
                 row_scale, deltas, partials, block, loss, with_loss):  # fmt: skip
    # One block of the output layer: z = a_in W + b into z_out, a = f(z) into acts, and with
    # the loss the block's weighted loss sum and the rows' output local gradients.
    product_nn(count, n_out, n_in, source, source_start + first * n_in, n_in, params, w, n_out, z_out, first * n_out, n_out)
    z_first, z_stop = first * n_out, (first + count) * n_out
    for row in range(z_first, z_stop, n_out):
        for j in range(n_out):
            z_out[row + j] += params[b + j]
    for i in range(z_first, z_stop):
        acts[out + i] = z_out[i]
    if activation == SOFTMAX:
        for row in range(z_first, z_stop, n_out):
            softmax_row(z_out, row, acts, out + row, n_out)
    else:
        activate_range(acts, out + z_first, out + z_stop, params, np.int64(0), np.int64(0), activation)
    if with_loss:
        total = 0.0
        for r in range(first, first + count):
            row = r * n_out
            total += np.float64(row_scale[r]) * row_loss(z_out, row, acts, out + row, y, row, n_out, loss)
            row_delta(acts, out + row, y, row, row_scale[r], deltas, out + row, n_out, activation, loss)
        partials[block] = total


@njit(**_INLINE)
def loss_blocks(meta, rows):
    """How many row-loss partials ``forward_pass`` writes for a batch of ``rows`` rows."""
    last = meta.shape[0] - 1
    return block_count(rows, meta[last, META_N_IN] * meta[last, META_N_OUT])


@njit(**_INLINE)
def weight_blocks(meta, layer, rows):
    """Blocks of rows of layer ``layer``'s weight gradient (one penalty partial each)."""
    return block_count(meta[layer, META_N_IN], rows * meta[layer, META_N_OUT])


@kernel(**JIT_OPTIONS)
def backward_pass(tid, n_threads, control, params, grads, meta, x, rows, acts, deltas, partials, l1, l2):
    """Backprop of a batch whose ``forward_pass`` (with the loss) has run: every gradient into
    ``grads``, plus the L1/L2 penalty (``l1·sign(W) + l2·W``) on the weights, whose value
    ``l1·Σ|W| + (l2/2)·ΣW²`` goes to the penalty partials (``penalty_value``)."""
    capacity = capacity_of(acts, meta)
    last = meta.shape[0] - 1
    penalised = l1 != 0.0 or l2 != 0.0
    for layer in range(last, -1, -1):
        n_in, n_out = meta[layer, META_N_IN], meta[layer, META_N_OUT]
        w, b = meta[layer, META_W_OFFSET], meta[layer, META_B_OFFSET]
        delta = capacity * meta[layer, META_UNITS_BEFORE]
        source = x if layer == 0 else acts
        source_start = 0 if layer == 0 else capacity * meta[layer - 1, META_UNITS_BEFORE]
        below = 0 if layer == 0 else capacity * meta[layer - 1, META_UNITS_BEFORE]
        weight_tasks = weight_blocks(meta, layer, rows)
        delta_tasks = 0 if layer == 0 else block_count(rows, n_out * n_in)
        tasks = weight_tasks + 1 + delta_tasks
        task = first_task(control, n_threads)
        while task < tasks:
            if task < weight_tasks:
                first = block_start(task, weight_tasks, n_in)
                stop = block_start(task + 1, weight_tasks, n_in)
                product_tn(stop - first, n_out, rows, source, source_start + first, n_in, deltas, delta, n_out, grads, w + first * n_out, n_out)
                if penalised:
                    partials[PENALTY_PARTIALS + layer * MAX_BLOCKS + task] = _penalise(params, grads, w + first * n_out, w + stop * n_out, l1, l2)
            elif task == weight_tasks:
                _bias_gradient(deltas, delta, rows, n_out, grads, b)
            else:
                block = task - weight_tasks - 1
                first = block_start(block, delta_tasks, rows)
                stop = block_start(block + 1, delta_tasks, rows)
                product_nt(stop - first, n_in, n_out, deltas, delta + first * n_out, n_out, params, w, n_out, deltas, below + first * n_in, n_in)
                derivative_range(acts, below + first * n_in, deltas, below + first * n_in, (stop - first) * n_in, meta[layer - 1, META_ACTIVATION])
            task = next_task(control, n_threads, task)
        barrier(control, n_threads)


@njit(**JIT_OPTIONS)
def _bias_gradient(deltas, delta, rows, n_out, grads, b):
    zero = grads.dtype.type(0.0)
    for j in range(n_out):
        grads[b + j] = zero
    for r in range(rows):
        row = delta + r * n_out
        for j in range(n_out):
            grads[b + j] += deltas[row + j]


@njit(**JIT_OPTIONS)
def _penalise(params, grads, start, stop, l1, l2):
    # Add l1·sign(w) + l2·w to grads[start:stop]; return l1·Σ|w| + (l2/2)·Σw² in float64.
    t = params.dtype.type
    l1_, l2_, zero, one = t(l1), t(l2), t(0.0), t(1.0)
    total = 0.0
    for i in range(start, stop):
        w = params[i]
        w64 = np.float64(w)
        total += l1 * abs(w64) + 0.5 * l2 * w64 * w64
        sign = one if w > zero else (-one if w < zero else zero)
        grads[i] += l1_ * sign + l2_ * w
    return total


@njit(**JIT_OPTIONS)
def batch_value(meta, rows, partials, l1, l2):
    """The batch loss: the row-loss partials and the penalty partials summed in block order."""
    value = 0.0
    for block in range(loss_blocks(meta, rows)):
        value += partials[block]
    if l1 != 0.0 or l2 != 0.0:
        for layer in range(meta.shape[0]):
            for block in range(weight_blocks(meta, layer, rows)):
                value += partials[PENALTY_PARTIALS + layer * MAX_BLOCKS + block]
    return value
