"""The forward and backward pass of a whole network over one batch, as team phases: one piece
each per dtype, for every network (the layers' activations, the loss and the product paths
are pieces the passes call by address, from the ``pieces`` table, ``layout.PIECE_*``).

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

from .compat import call_piece, kernel, unsigned
from .config import JIT_OPTIONS
from .layout import (
    DERIVATIVE,
    FORWARD,
    MAX_BLOCKS,
    META_B_OFFSET,
    META_N_IN,
    META_N_OUT,
    META_UNITS_BEFORE,
    META_W_OFFSET,
    PIECE_LAYERS,
    PIECE_LOSS,
    PIECE_NN_BLAS,
    PIECE_NN_LOOPS,
    PIECE_NN_TILES,
    PIECE_NT_BLAS,
    PIECE_OUTPUT,
    PIECE_OUTPUT_SLOPE,
    PIECE_TN_BLAS,
    PIECE_TN_LOOPS,
    PIECE_TN_TILES,
    block_count,
    layer_blocks,
    network_blas,
    uses_blas,
)
from .products import transpose
from .team import barrier, first_task, next_task

# Where penalty partials start in ``partials`` (after the row-loss partials).
PENALTY_PARTIALS = MAX_BLOCKS

_INLINE = dict(JIT_OPTIONS, inline="always")
_DONE = np.int64(0)  # what pieces return


@njit(**_INLINE)
def _product(pieces, blas_slot, tiles_slot, loops_slot, blas, n, lanes):
    # The piece of a product of n columns: BLAS when the whole product goes there (uses_blas),
    # else the micro-kernel for at least a vector's width of columns, else plain loops.
    if blas:
        return pieces[blas_slot]
    return pieces[tiles_slot] if n >= lanes else pieces[loops_slot]


@kernel(**JIT_OPTIONS)
def forward_pass(tid, n_threads, control, pieces, params, meta, x, rows, y, row_scale, acts, z_out, deltas, partials, transposed,
                 with_loss):  # fmt: skip
    """Forward pass of ``rows`` rows of ``x`` (flat, ``rows × n_in``) through the network.

    With ``with_loss``: the output rows' losses times ``row_scale`` summed per block into
    ``partials[block]`` (``loss_blocks(meta, rows)`` blocks), the output local gradients into
    the output layer's block of ``deltas`` (``y`` is flat ``rows × n_out``), and, for the backward
    pass, the weights Wᵀ of every layer but the first whose local-gradient product is too small
    for BLAS, into ``transposed`` (at the weights' offsets).

    Returns
    -------
    int64
        0.
    """
    last = meta.shape[0] - 1
    capacity = acts.size // (meta[last, META_UNITS_BEFORE] + meta[last, META_N_OUT])
    lanes = 32 // params.itemsize
    may_blas = pieces[PIECE_NN_BLAS] != 0
    for layer in range(last + 1):
        n_in, n_out = meta[layer, META_N_IN], meta[layer, META_N_OUT]
        w, b = meta[layer, META_W_OFFSET], meta[layer, META_B_OFFSET]
        out = capacity * meta[layer, META_UNITS_BEFORE]
        source = x if layer == 0 else acts
        source_start = 0 if layer == 0 else capacity * meta[layer - 1, META_UNITS_BEFORE]
        # The output layer keeps z = a_in W + b in z_out (the losses need it); a = f(z) goes to acts.
        target = z_out if layer == last else acts
        target_start = 0 if layer == last else out
        # (from the sizes alone, as loss_blocks counts them without the pieces table)
        n_blocks = layer_blocks(meta, layer, rows)
        blas = uses_blas(may_blas, rows, n_out, n_in)
        product = _product(pieces, PIECE_NN_BLAS, PIECE_NN_TILES, PIECE_NN_LOOPS, blas, n_out, lanes)
        # One more task: transpose W for the backward pass's product δ @ Wᵀ (same size, so the
        # same BLAS decision), when it will not go to BLAS.
        tasks = n_blocks + 1 if with_loss and layer > 0 and not blas else n_blocks
        task = first_task(control, tid, n_threads)
        while task < tasks:
            if task == n_blocks:
                transpose(params, w, n_in, n_out, transposed, w)
                task = next_task(control, n_threads, task)
                continue
            first, stop = task * rows // n_blocks, (task + 1) * rows // n_blocks
            call_piece(_DONE, product, (control, stop - first, n_out, n_in, source, source_start + first * n_in, n_in, params, w, n_out,
                                        target, target_start + first * n_out, n_out))  # fmt: skip
            if layer < last:
                call_piece(_DONE, pieces[PIECE_LAYERS + layer], (FORWARD, acts, out + first * n_out, (stop - first) * n_out, n_out,
                                                                 params, b))  # fmt: skip
            else:
                _output_block(pieces, params, b, z_out, acts, out, first, stop, n_out, y, row_scale, deltas, partials, task, with_loss)
            task = next_task(control, n_threads, task)
        barrier(control, n_threads)
    return _DONE


@njit(**_INLINE)
def _output_block(pieces, params, b, z_out, acts, out, first, stop, n_out, y, row_scale, deltas, partials, task, with_loss):
    # z += b (kept in z_out), a = f(z) into acts; with the loss, the block's weighted loss sum
    # into partials[task] and the rows' output local gradients into deltas.
    start, count = first * n_out, (stop - first) * n_out
    for i in range(unsigned(start), unsigned(start + count), unsigned(n_out)):
        for j in range(unsigned(n_out)):
            z = z_out[i + j] + params[unsigned(b) + j]
            z_out[i + j] = z
            acts[unsigned(out) + i + j] = z
    call_piece(_DONE, pieces[PIECE_OUTPUT], (FORWARD, acts, out + start, count, n_out, params, np.int64(-1)))
    if with_loss:
        partials[task] = call_piece(0.0, pieces[PIECE_LOSS], (z_out, start, acts, out + start, y, start, row_scale, first, deltas,
                                                              out + start, stop - first, n_out))  # fmt: skip
        slope = pieces[PIECE_OUTPUT_SLOPE]
        if slope != 0:
            call_piece(_DONE, slope, (DERIVATIVE, deltas, out + start, count, n_out, acts, out + start))


@njit(**_INLINE)
def loss_blocks(meta, rows):
    """How many row-loss partials ``forward_pass`` writes for a batch of ``rows`` rows."""
    return layer_blocks(meta, meta.shape[0] - 1, rows)


@njit(**_INLINE)
def weight_blocks(meta, layer, rows):
    """Blocks of rows of layer ``layer``'s weight gradient (one penalty partial each)."""
    n_in, n_out = meta[layer, META_N_IN], meta[layer, META_N_OUT]
    return block_count(n_in, rows * n_out, uses_blas(network_blas(meta), n_in, n_out, rows))


@kernel(**JIT_OPTIONS)
def backward_pass(tid, n_threads, control, pieces, params, grads, meta, x, rows, acts, deltas, partials, transposed, l1, l2):
    """Backprop of a batch whose ``forward_pass`` (with the loss) has run: every gradient into
    ``grads``, plus the L1/L2 penalty (``l1·sign(W) + l2·W``) on the weights, whose value
    ``l1·Σ|W| + (l2/2)·ΣW²`` goes to the penalty partials (see ``batch_value``). ``transposed``
    holds the weights Wᵀ the forward pass transposed.

    Returns
    -------
    int64
        0.
    """
    last = meta.shape[0] - 1
    capacity = acts.size // (meta[last, META_UNITS_BEFORE] + meta[last, META_N_OUT])
    lanes = 32 // params.itemsize
    may_blas = pieces[PIECE_NN_BLAS] != 0
    blocks_blas = network_blas(meta)
    penalised = l1 != 0.0 or l2 != 0.0
    for layer in range(last, -1, -1):
        n_in, n_out = meta[layer, META_N_IN], meta[layer, META_N_OUT]
        w, b = meta[layer, META_W_OFFSET], meta[layer, META_B_OFFSET]
        delta = capacity * meta[layer, META_UNITS_BEFORE]
        source = x if layer == 0 else acts
        below = 0 if layer == 0 else capacity * meta[layer - 1, META_UNITS_BEFORE]
        weight_tasks = weight_blocks(meta, layer, rows)
        delta_tasks = 0 if layer == 0 else block_count(rows, n_out * n_in, uses_blas(blocks_blas, rows, n_in, n_out))
        tasks = weight_tasks + 1 + delta_tasks
        blas_deltas = uses_blas(may_blas, rows, n_in, n_out)
        weights_product = _product(pieces, PIECE_TN_BLAS, PIECE_TN_TILES, PIECE_TN_LOOPS, uses_blas(may_blas, n_in, n_out, rows), n_out,
                                   lanes)  # fmt: skip
        task = first_task(control, tid, n_threads)
        while task < tasks:
            if task < weight_tasks:
                first, stop = task * n_in // weight_tasks, (task + 1) * n_in // weight_tasks
                call_piece(_DONE, weights_product, (control, stop - first, n_out, rows, source, below + first, n_in, deltas, delta, n_out,
                                                    grads, w + first * n_out, n_out))  # fmt: skip
                if penalised:
                    partials[PENALTY_PARTIALS + layer * MAX_BLOCKS + task] = penalise(params, grads, w + first * n_out, w + stop * n_out, l1, l2)
            elif task == weight_tasks:
                _bias_gradient(deltas, delta, rows, n_out, grads, b)
            else:
                block = task - weight_tasks - 1
                first, stop = block * rows // delta_tasks, (block + 1) * rows // delta_tasks
                if blas_deltas:
                    call_piece(_DONE, pieces[PIECE_NT_BLAS], (control, stop - first, n_in, n_out, deltas, delta + first * n_out, n_out, params,
                                                              w, n_out, deltas, below + first * n_in, n_in))  # fmt: skip
                else:
                    product = pieces[PIECE_NN_TILES] if n_in >= lanes else pieces[PIECE_NN_LOOPS]
                    call_piece(_DONE, product, (control, stop - first, n_in, n_out, deltas, delta + first * n_out, n_out, transposed, w, n_in,
                                                deltas, below + first * n_in, n_in))  # fmt: skip
                call_piece(_DONE, pieces[PIECE_LAYERS + layer - 1], (DERIVATIVE, deltas, below + first * n_in, (stop - first) * n_in, n_in,
                                                                     acts, below + first * n_in))  # fmt: skip
            task = next_task(control, n_threads, task)
        barrier(control, n_threads)
    return _DONE


@njit(**_INLINE)
def _bias_gradient(deltas, delta, rows, n_out, grads, b):
    zero = grads.dtype.type(0.0)
    delta, rows, n_out, b = unsigned(delta), unsigned(rows), unsigned(n_out), unsigned(b)
    for j in range(n_out):
        grads[b + j] = zero
    for r in range(rows):
        row = delta + r * n_out
        for j in range(n_out):
            grads[b + j] += deltas[row + j]


@njit(**_INLINE)
def penalise(params, grads, start, stop, l1, l2):
    """Add ``l1·sign(w) + l2·w`` to ``grads[start:stop]``; return ``l1·Σ|w| + (l2/2)·Σw²``
    (float64) over ``params[start:stop]``."""
    t = params.dtype.type
    l1_, l2_, zero, one = t(l1), t(l2), t(0.0), t(1.0)
    total = 0.0
    for i in range(unsigned(start), unsigned(stop)):
        w = params[i]
        w64 = np.float64(w)
        total += l1 * (w64 if w64 >= 0.0 else -w64) + 0.5 * l2 * w64 * w64
        sign = one if w > zero else (-one if w < zero else zero)
        grads[i] += l1_ * sign + l2_ * w
    return total


@kernel(**JIT_OPTIONS)
def batch_value(meta, rows, partials, l1, l2):
    """The batch loss: the row-loss partials and the penalty partials summed in block order (a
    piece of the training loop's, and called from Python for a batch's loss)."""
    value = 0.0
    for block in range(loss_blocks(meta, rows)):
        value += partials[block]
    if l1 != 0.0 or l2 != 0.0:
        for layer in range(meta.shape[0]):
            for block in range(weight_blocks(meta, layer, rows)):
                value += partials[PENALTY_PARTIALS + layer * MAX_BLOCKS + block]
    return value
