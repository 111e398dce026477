# stamp: 88f15385f3a0ce651aa9d3fd4a46d84b
"""The forward and backward pass of a whole network over one batch, as team phases, each
compiled once per dtype for every network, on its own, as a C callback (``phases``), and handed
to the training loop, the validation stage and the Python entry points (``run_passes``) as
first-class functions. The layers' activations, the loss and the product paths are pieces
(``kernels.pieces``) the passes call as first-class functions in turn.

Both run inside a team (``kernels.team``): each layer is one phase whose tasks are fixed blocks
of rows (``layout.block_count``), separated from the next layer by a barrier. ``tid``,
``n_threads`` and ``control`` describe the team (a team of one: ``0, 1, control``: no barrier
waits, one block per small layer, nothing else).

Forward, layer by layer: ``z = a_in @ W + b`` (kept in ``zs`` where the layer keeps z, else
computed in place in ``acts``) and ``a = f(z)`` per block of batch rows; dropout's masks while
training; the output layer computes, in the same task, its rows' losses (their weighted sum per
block goes to ``partials[block]``) and output local gradients.

Backward, from the output layer down, one phase per layer with three kinds of tasks: blocks of
rows of the weight gradient ``Aᵀ δ`` (plus the L1/L2 penalty on those weights, whose value goes
to ``partials``), the bias gradient ``Σ_rows δ``, and blocks of rows of the layer below's local
gradient ``(δ Wᵀ) ⊙ f'(z)``.
"""

import numpy as np

from .activations import BACKWARD, BACKWARD_FROM_Z, FORWARD, IDENTITY
from .dropout import apply_mask, drop_rows
from .jit import helper, kernel
from .layout import MAX_BLOCKS, PENALTY_PARTIALS, delta_blocks, layer_blocks, weight_blocks
from .losses import SPECS as LOSS_SPECS
from .lowlevel import advance, pointer, view, view2
from .products import BLAS, NN, NT, TILES, TN, path, transpose, uses_blas
from .team import barrier, next_task

# Whether each loss's local gradient is already dC/dz (no output derivative applied after it).
FUSED = tuple(LOSS_SPECS[code].fused for code in range(len(LOSS_SPECS)))


@helper
def _product_piece(pieces, chosen):
    if chosen == BLAS:
        return pieces.blas
    return pieces.tiles if chosen == TILES else pieces.loops


@helper
def _capacity(size, width):
    # Rows a buffer of ``size`` elements holds at ``width`` columns a row.
    return size // (width if width > 0 else 1)


# The passes address their buffers through pointers (``lowlevel.pointer`` / ``advance``), set
# once at the top: an array that flows between branches and helpers is reference-counted by
# Numba at each step (an atomic operation apiece), which costs a tiny network more than its
# arithmetic.


@helper
def _z_at(record, zs, z_capacity, acts, capacity):
    # Where a layer's pre-activations go: its block of zs when it keeps z, else its block of
    # acts (z computed in place).
    if record["z"] >= 0:
        return advance(zs, z_capacity * record["z"])
    return advance(acts, capacity * record["acts"])


def forward_pass(tid, n_threads, control, pieces, architecture, params, x, rows, y, row_scale, buffers, loss, gemm, key, row0):
    """Forward pass of ``rows`` rows of ``x`` (flat, ``rows × n_in``) through the network.

    With a dropout ``key`` >= 0 (a training step's: ``kernels.dropout``), the hidden layers with
    dropout drop their outputs, ``row0`` being the index of x's first row in the batch (so that
    the masks do not depend on how the batch is cut); ``NO_DROPOUT`` (-1): none.

    With a ``loss`` code >= 0: the output rows' losses times ``row_scale`` summed per block into
    ``buffers.partials[block]`` (``layer_blocks(architecture, last, rows)`` blocks), the output
    local gradients into the output layer's block of ``buffers.deltas`` (``y`` is flat
    ``rows × n_out``), and, for the backward pass, the weights Wᵀ of every layer but the first
    whose local-gradient product does not go to BLAS, into ``buffers.transposed`` (at the
    weights' offsets). ``gemm``: BLAS's ``?gemm`` address (0: the network never calls BLAS).

    Returns
    -------
    int64
        0.
    """
    layers = architecture.layers
    last = layers.size - 1
    capacity = _capacity(buffers.acts.size, architecture.units)
    z_capacity = _capacity(buffers.zs.size, architecture.z_units)
    mask_capacity = _capacity(buffers.masks.size, architecture.mask_units)
    lanes = 32 // params.itemsize
    acts, zs, masks, deltas = pointer(buffers.acts, 0), pointer(buffers.zs, 0), pointer(buffers.masks, 0), pointer(buffers.deltas, 0)
    weights, transposed, inputs = pointer(params, 0), pointer(buffers.transposed, 0), pointer(x, 0)
    targets, scales, partials = pointer(y, 0), pointer(row_scale, 0), buffers.partials
    for layer in range(last + 1):
        record = layers[layer]
        n_in, n_out, w, b, code = record["n_in"], record["n_out"], record["weights"], record["bias"], record["activation"]
        out = capacity * record["acts"]
        source = inputs if layer == 0 else advance(acts, capacity * layers[layer - 1]["acts"])
        z_base = _z_at(record, zs, z_capacity, acts, capacity)
        n_blocks = layer_blocks(architecture, layer, rows)
        chosen = path(architecture.blas, NN, rows, n_out, n_in, lanes)
        product = _product_piece(pieces, chosen)
        address = gemm if chosen == BLAS else 0
        # One more task: transpose W for the backward pass's product δ @ Wᵀ (same size, so the
        # same BLAS decision), when it will not go to BLAS.
        transposes = loss >= 0 and layer > 0 and not uses_blas(architecture.blas, rows, n_in, n_out)
        tasks = n_blocks + 1 if transposes else n_blocks
        activation = pieces.activations[code]
        task = tid
        while task < tasks:
            if task == n_blocks:
                transpose(view2(advance(weights, w), n_in, n_out), n_in, n_out, view2(advance(transposed, w), n_out, n_in))
                task = next_task(n_threads, task)
                continue
            first, stop = task * rows // n_blocks, (task + 1) * rows // n_blocks
            count = stop - first
            z_at = advance(z_base, first * n_out)
            product(NN, count, n_out, n_in, advance(source, first * n_in), n_in, advance(weights, w), n_out, z_at, n_out, address)
            a_at = advance(acts, out + first * n_out)
            activation(FORWARD, count, n_out, z_at, advance(weights, b), a_at)
            if key >= 0 and record["mask"] >= 0:
                drop_rows(key, layer, record["dropout"], row0 + first, count, n_out, view(a_at, count * n_out),
                          view(advance(masks, mask_capacity * record["mask"] + first * n_out), count * n_out))  # fmt: skip
            if layer == last and loss >= 0:
                delta_at = advance(deltas, out + first * n_out)
                partials[task] = pieces.losses[loss](count, n_out, z_at, a_at, advance(targets, first * n_out), advance(scales, first),
                                                     delta_at)  # fmt: skip
                if not FUSED[loss] and code != IDENTITY:
                    activation(BACKWARD, count, n_out, delta_at, z_at, a_at)
            task = next_task(n_threads, task)
        barrier(control, n_threads)
    return np.int64(0)


def backward_pass(tid, n_threads, control, pieces, architecture, params, grads, x, rows, buffers, l1, l2, gemm, key):
    """Backprop of a batch whose ``forward_pass`` (with the loss) has run: every gradient into
    ``grads``, plus the L1/L2 penalty (``l1·sign(W) + l2·W``) on the weights, whose value
    ``l1·Σ|W| + (l2/2)·ΣW²`` goes to the penalty partials (see ``batch_value``). Wᵀ comes from
    ``buffers.transposed``, where the forward pass put it. ``key``: the forward pass's (with
    one >= 0 the local gradients of layers with dropout go through their masks).

    Returns
    -------
    int64
        0.
    """
    layers = architecture.layers
    last = layers.size - 1
    capacity = _capacity(buffers.acts.size, architecture.units)
    z_capacity = _capacity(buffers.zs.size, architecture.z_units)
    mask_capacity = _capacity(buffers.masks.size, architecture.mask_units)
    lanes = 32 // params.itemsize
    acts, zs, masks, deltas = pointer(buffers.acts, 0), pointer(buffers.zs, 0), pointer(buffers.masks, 0), pointer(buffers.deltas, 0)
    weights, gradients, transposed, inputs = pointer(params, 0), pointer(grads, 0), pointer(buffers.transposed, 0), pointer(x, 0)
    partials = buffers.partials
    penalised = l1 != 0.0 or l2 != 0.0
    for layer in range(last, -1, -1):
        record = layers[layer]
        n_in, n_out, w, b = record["n_in"], record["n_out"], record["weights"], record["bias"]
        delta = advance(deltas, capacity * record["acts"])
        source = inputs if layer == 0 else advance(acts, capacity * layers[layer - 1]["acts"])
        weight_tasks = weight_blocks(architecture, layer, rows)
        tasks = weight_tasks + 1 + delta_blocks(architecture, layer, rows)
        weight_path = path(architecture.blas, TN, n_in, n_out, rows, lanes)
        delta_path = path(architecture.blas, NN, rows, n_in, n_out, lanes)
        task = tid
        while task < tasks:
            if task < weight_tasks:
                first, stop = task * n_in // weight_tasks, (task + 1) * n_in // weight_tasks
                _product_piece(pieces, weight_path)(TN, stop - first, n_out, rows, advance(source, first), n_in, delta, n_out,
                                                    advance(gradients, w + first * n_out), n_out, gemm if weight_path == BLAS else 0)  # fmt: skip
                if penalised:
                    partials[PENALTY_PARTIALS + layer * MAX_BLOCKS + task] = penalise(params, grads, w + first * n_out, w + stop * n_out,
                                                                                      l1, l2)  # fmt: skip
            elif task == weight_tasks:
                _bias_gradient(view2(delta, rows, n_out), rows, n_out, view(advance(gradients, b), n_out))
            else:
                block = task - weight_tasks - 1
                n_blocks = tasks - weight_tasks - 1
                first, stop = block * rows // n_blocks, (block + 1) * rows // n_blocks
                count = stop - first
                beneath = layers[layer - 1]
                target = advance(deltas, capacity * beneath["acts"] + first * n_in)
                product_source = advance(delta, first * n_out)
                if delta_path == BLAS:
                    pieces.blas(NT, count, n_in, n_out, product_source, n_out, advance(weights, w), n_out, target, n_in, gemm)
                else:
                    _product_piece(pieces, delta_path)(NN, count, n_in, n_out, product_source, n_out, advance(transposed, w), n_in, target,
                                                       n_in, 0)  # fmt: skip
                z_at = advance(_z_at(beneath, zs, z_capacity, acts, capacity), first * n_in)
                below = pieces.activations[beneath["activation"]]
                if key >= 0 and beneath["mask"] >= 0:
                    # Through the dropout mask, then f' from z (the kept outputs are the dropped ones).
                    mask_at = advance(masks, mask_capacity * beneath["mask"] + first * n_in)
                    apply_mask(view(target, count * n_in), view(mask_at, count * n_in), count * n_in)
                    below(BACKWARD_FROM_Z, count, n_in, target, z_at, z_at)
                else:
                    below(BACKWARD, count, n_in, target, z_at, advance(acts, capacity * beneath["acts"] + first * n_in))
            task = next_task(n_threads, task)
        barrier(control, n_threads)
    return np.int64(0)


@helper
def _bias_gradient(delta, rows, n_out, grad):
    zero = grad.dtype.type(0.0)
    for j in range(n_out):
        grad[j] = zero
    for r in range(rows):
        for j in range(n_out):
            grad[j] += delta[r, j]


@helper
def penalise(params, grads, start, stop, l1, l2):
    """Add ``l1·sign(w) + l2·w`` to ``grads[start:stop]``; return ``l1·Σ|w| + (l2/2)·Σw²``
    (float64) over ``params[start:stop]``."""
    p, g = view(pointer(params, start), stop - start), view(pointer(grads, start), stop - start)
    t = params.dtype.type
    l1_, l2_, zero, one = t(l1), t(l2), t(0.0), t(1.0)
    total = 0.0
    for i in range(stop - start):
        w = p[i]
        w64 = np.float64(w)
        total += l1 * (w64 if w64 >= 0.0 else -w64) + 0.5 * l2 * w64 * w64
        sign = one if w > zero else (-one if w < zero else zero)
        g[i] += l1_ * sign + l2_ * w
    return total


@helper
def loss_blocks(architecture, rows):
    """How many row-loss partials ``forward_pass`` writes for a batch of ``rows`` rows."""
    return layer_blocks(architecture, architecture.layers.size - 1, rows)


@helper
def batch_value(architecture, rows, partials, l1, l2):
    """The batch loss: the row-loss partials and the penalty partials summed in block order."""
    value = 0.0
    for block in range(loss_blocks(architecture, rows)):
        value += partials[block]
    if l1 != 0.0 or l2 != 0.0:
        for layer in range(architecture.layers.size):
            for block in range(weight_blocks(architecture, layer, rows)):
                value += partials[PENALTY_PARTIALS + layer * MAX_BLOCKS + block]
    return value



@kernel
def weight_penalty(params, grads, layers, l1, l2):
    """``penalise`` over every layer's weights (``layers``: the LAYER records); returns the
    penalty's value."""
    total = 0.0
    for layer in range(layers.size):
        start = layers[layer]["weights"]
        total += penalise(params, grads, start, start + layers[layer]["n_in"] * layers[layer]["n_out"], l1, l2)
    return total


@kernel
def run_passes(tid, n_threads, control, kit, architecture, params, grads, x, rows, y, row_scale, buffers, loss, l1, l2, gemm, key, row0):
    """The Python entry points' compiled call (``kernels.network``): the forward pass (with the
    loss when ``loss`` >= 0), then with ``grads`` of more than one element the backward pass,
    with the passes and pieces of ``kit`` (``kernels.kit``) and the dropout ``key`` (``row0``:
    x's first row in its batch; ``NO_DROPOUT`` for predictions); returns the batch loss with the
    penalty (``batch_value``), or 0 without a loss or rows."""
    if rows == 0:
        return 0.0
    phases, pieces = kit.phases, kit.pieces
    phases.forward(tid, n_threads, control, pieces, architecture, params, x, rows, y, row_scale, buffers, loss, gemm, key, row0)
    if loss < 0:
        return 0.0
    if grads.size > 1:
        phases.backward(tid, n_threads, control, pieces, architecture, params, grads, x, rows, buffers, l1, l2, gemm, key)
    return batch_value(architecture, rows, buffers.partials, l1, l2)
