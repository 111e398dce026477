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

Specialisation
--------------
Each pass is compiled per network configuration: the hidden layers' activation, the output
activation and the loss are constants of the compiled code (``HIDDEN``, ``OUTPUT``, ``LOSS``,
rebound by ``compat.specialise``), so Numba prunes every branch the network does not use before
typing it. That is most of the code (five activations, four losses), and compiling it was most
of the time of a first fit. ``forward_kernel``/``backward_kernel`` hand out (and keep) one
compiled pass per configuration.
"""

import numpy as np
from numba import njit

from .activations import IDENTITY, SIGMOID, SOFTMAX, activate_range, derivative_range, softmax_row
from .compat import specialise, unsigned
from .config import JIT_OPTIONS
from .layout import (
    MAX_BLOCKS,
    META_B_OFFSET,
    META_N_IN,
    META_N_OUT,
    META_UNITS_BEFORE,
    META_W_OFFSET,
    block_count,
)
from .losses import MSE, row_delta, row_loss
from .products import paths, product_nn, product_nt, product_tn, transpose, uses_blas
from .team import barrier, first_task, next_task

# Where penalty partials start in ``partials`` (after the row-loss partials).
PENALTY_PARTIALS = MAX_BLOCKS

# The configuration constants of a specialisation (placeholders in the generic code).
HIDDEN = SIGMOID
OUTPUT = SIGMOID
LOSS = MSE
TILES = True  # the network may use the micro-kernel (products.paths)
BLAS = True  # the network may use BLAS


def _forward_pass(tid, n_threads, control, params, meta, x, rows, y, row_scale, acts, z_out, deltas, partials, transposed, with_loss):
    """Forward pass of ``rows`` rows of ``x`` (flat, ``rows × n_in``) through the network.

    With ``with_loss``: the output rows' losses times ``row_scale`` summed per block into
    ``partials[block]`` (``loss_blocks(meta, rows)`` blocks), the output local gradients into
    the output layer's block of ``deltas`` (``y`` is flat ``rows × n_out``), and, for the backward
    pass, the weights Wᵀ of every layer but the first whose local-gradient product is too small
    for BLAS, into ``transposed`` (at the weights' offsets).
    """
    last = meta.shape[0] - 1
    capacity = acts.size // (meta[last, META_UNITS_BEFORE] + meta[last, META_N_OUT])
    for layer in range(last + 1):
        n_in, n_out = meta[layer, META_N_IN], meta[layer, META_N_OUT]
        w, b = meta[layer, META_W_OFFSET], meta[layer, META_B_OFFSET]
        out = capacity * meta[layer, META_UNITS_BEFORE]
        source = x if layer == 0 else acts
        source_start = 0 if layer == 0 else capacity * meta[layer - 1, META_UNITS_BEFORE]
        # The output layer keeps z = a_in W + b in z_out (the losses need it); a = f(z) goes to acts.
        target = z_out if layer == last else acts
        target_start = 0 if layer == last else out
        n_blocks = block_count(rows, n_in * n_out)
        blas = uses_blas(BLAS, rows, n_out, n_in)
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
            product_nn(control, TILES, blas, stop - first, n_out, n_in, source, source_start + first * n_in, n_in, params, w, n_out, target,
                       target_start + first * n_out, n_out)  # fmt: skip
            if layer < last:
                activate_range(acts, out + first * n_out, out + stop * n_out, params, b, n_out, HIDDEN)
            else:
                # z += b, a = f(z), and with the loss the block's weighted loss sum and the
                # rows' output local gradients.
                for row in range(unsigned(first * n_out), unsigned(stop * n_out), unsigned(n_out)):
                    for j in range(unsigned(n_out)):
                        z = z_out[row + j] + params[unsigned(b) + j]
                        z_out[row + j] = z
                        acts[unsigned(out) + row + j] = z
                if OUTPUT == SOFTMAX:
                    for row in range(first * n_out, stop * n_out, n_out):
                        softmax_row(z_out, row, acts, out + row, n_out)
                elif OUTPUT != IDENTITY:
                    activate_range(acts, out + first * n_out, out + stop * n_out, params, b, 0, OUTPUT)
                if with_loss:
                    total = 0.0
                    for r in range(first, stop):
                        row = r * n_out
                        total += np.float64(row_scale[r]) * row_loss(z_out, row, acts, out + row, y, row, n_out, LOSS)
                        row_delta(acts, out + row, y, row, row_scale[r], deltas, out + row, n_out, OUTPUT, LOSS)
                    partials[task] = total
            task = next_task(control, n_threads, task)
        barrier(control, n_threads)


@njit(inline="always", **JIT_OPTIONS)
def loss_blocks(meta, rows):
    """How many row-loss partials ``forward_pass`` writes for a batch of ``rows`` rows."""
    last = meta.shape[0] - 1
    return block_count(rows, meta[last, META_N_IN] * meta[last, META_N_OUT])


@njit(inline="always", **JIT_OPTIONS)
def weight_blocks(meta, layer, rows):
    """Blocks of rows of layer ``layer``'s weight gradient (one penalty partial each)."""
    return block_count(meta[layer, META_N_IN], rows * meta[layer, META_N_OUT])


def _backward_pass(tid, n_threads, control, params, grads, meta, x, rows, acts, deltas, partials, transposed, l1, l2):
    """Backprop of a batch whose ``forward_pass`` (with the loss) has run: every gradient into
    ``grads``, plus the L1/L2 penalty (``l1·sign(W) + l2·W``) on the weights, whose value
    ``l1·Σ|W| + (l2/2)·ΣW²`` goes to the penalty partials (see ``batch_value``). ``transposed``
    holds the weights Wᵀ the forward pass transposed."""
    last = meta.shape[0] - 1
    capacity = acts.size // (meta[last, META_UNITS_BEFORE] + meta[last, META_N_OUT])
    penalised = l1 != 0.0 or l2 != 0.0
    for layer in range(last, -1, -1):
        n_in, n_out = meta[layer, META_N_IN], meta[layer, META_N_OUT]
        w, b = meta[layer, META_W_OFFSET], meta[layer, META_B_OFFSET]
        delta = capacity * meta[layer, META_UNITS_BEFORE]
        source = x if layer == 0 else acts
        below = 0 if layer == 0 else capacity * meta[layer - 1, META_UNITS_BEFORE]
        weight_tasks = weight_blocks(meta, layer, rows)
        delta_tasks = 0 if layer == 0 else block_count(rows, n_out * n_in)
        tasks = weight_tasks + 1 + delta_tasks
        blas_weights = uses_blas(BLAS, n_in, n_out, rows)
        blas_deltas = uses_blas(BLAS, rows, n_in, n_out)
        task = first_task(control, tid, n_threads)
        while task < tasks:
            if task < weight_tasks:
                first, stop = task * n_in // weight_tasks, (task + 1) * n_in // weight_tasks
                product_tn(control, TILES, blas_weights, stop - first, n_out, rows, source, below + first, n_in, deltas, delta, n_out, grads, w + first * n_out, n_out)
                if penalised:
                    partials[PENALTY_PARTIALS + layer * MAX_BLOCKS + task] = penalise(params, grads, w + first * n_out, w + stop * n_out, l1, l2)
            elif task == weight_tasks:
                _bias_gradient(deltas, delta, rows, n_out, grads, b)
            else:
                block = task - weight_tasks - 1
                first, stop = block * rows // delta_tasks, (block + 1) * rows // delta_tasks
                if BLAS and blas_deltas:
                    product_nt(control, stop - first, n_in, n_out, deltas, delta + first * n_out, n_out, params, w, n_out, deltas, below + first * n_in, n_in)
                else:
                    product_nn(control, TILES, blas_deltas, stop - first, n_in, n_out, deltas, delta + first * n_out, n_out, transposed, w, n_in, deltas,
                               below + first * n_in, n_in)  # fmt: skip
                derivative_range(acts, below + first * n_in, deltas, below + first * n_in, (stop - first) * n_in, HIDDEN)
            task = next_task(control, n_threads, task)
        barrier(control, n_threads)


@njit(inline="always", **JIT_OPTIONS)
def _bias_gradient(deltas, delta, rows, n_out, grads, b):
    zero = grads.dtype.type(0.0)
    delta, rows, n_out, b = unsigned(delta), unsigned(rows), unsigned(n_out), unsigned(b)
    for j in range(n_out):
        grads[b + j] = zero
    for r in range(rows):
        row = delta + r * n_out
        for j in range(n_out):
            grads[b + j] += deltas[row + j]


@njit(inline="always", **JIT_OPTIONS)
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


_FORWARD, _BACKWARD = {}, {}


def configuration(meta, loss, dtype):
    """(hidden activation, output activation, loss codes, tiles, blas) of a network: the key of
    its compiled passes (see the module docstring and ``products.paths``). Every hidden layer
    must share one activation."""
    codes = [int(code) for code in meta[:, 4]]
    hidden = set(codes[:-1]) or {IDENTITY}
    if len(hidden) != 1:
        raise ValueError(f"the compiled passes need one activation for all hidden layers, got codes {codes[:-1]}")
    tiles, blas = paths(meta, dtype)
    return hidden.pop(), codes[-1], int(loss), tiles, blas


def forward_kernel(hidden, output, loss, tiles, blas):
    """The forward pass compiled for one configuration (see the module docstring)."""
    key = (int(hidden), int(output), int(loss), bool(tiles), bool(blas))
    if key not in _FORWARD:
        name = "forward_pass_{}_{}_{}_{}{}".format(*key[:3], "t" if key[3] else "", "b" if key[4] else "")
        _FORWARD[key] = specialise(_forward_pass, name, HIDDEN=key[0], OUTPUT=key[1], LOSS=key[2], TILES=key[3], BLAS=key[4])
    return _FORWARD[key]


def backward_kernel(hidden, tiles, blas):
    """The backward pass compiled for one hidden activation and paths (the output layer's local
    gradient comes from the forward pass, so nothing else of the configuration matters here)."""
    key = (int(hidden), bool(tiles), bool(blas))
    if key not in _BACKWARD:
        name = "backward_pass_{}_{}{}".format(key[0], "t" if key[1] else "", "b" if key[2] else "")
        _BACKWARD[key] = specialise(_backward_pass, name, HIDDEN=key[0], TILES=key[1], BLAS=key[2])
    return _BACKWARD[key]
