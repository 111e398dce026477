# stamp: bfa4f8405c203883f0ffd0144b9d3138
"""The forward and backward pass of a whole network over one batch, as team phases, and the
dropout masks; the training loop, the validation stage and the entry points (``predict``,
``loss``, ``gradients``) all run these.

Both run inside a team (``kernels.team``): each layer is one phase whose tasks are fixed blocks
of rows (``layout.block_count``), separated from the next layer by a barrier. ``team`` is
``(tid, n_threads, control)``; a team of one (``0, 1, control``) waits at no barrier.

Forward, layer by layer: ``a = f(a_in @ W + b)`` per block of batch rows, in place in the
layer's block of ``acts`` (the output layer's z kept in ``zs``, which its loss reads); with
``slopes`` the derivatives f'(z) go to the layer's block of ``slopes``, and a hidden layer with
dropout multiplies its outputs and slopes by the same masks. The output layer computes, in the
same task, its rows' losses (their weighted sum per block goes to ``losses[block]``) and output
local gradients.

Backward, from the output layer down, one phase per layer with three kinds of tasks: blocks of
rows of the weight gradient ``Aᵀ δ`` (plus the L1/L2 penalty on those weights, whose value goes
to ``penalties``), the bias gradient ``Σ_rows δ``, and blocks of rows of the layer below's local
gradient ``(δ Wᵀ) ⊙ slopes``.
"""

from typing import NamedTuple

import numpy as np

from .activations import IDENTITY, SOFTMAX, apply, softmax_backward
from .jit import compile_piece, helper, piece_address, subroutine
from .layout import CONTROL, LAYER, MAX_BLOCKS, PASS, Architecture, Buffers, delta_blocks, layer_blocks, weight_blocks
from .losses import SPECS as LOSS_SPECS
from .losses import loss_rows
from .lowlevel import address, as_array, span
from .products import BLAS, NN, NT, TN, path, product, transpose, uses_blas
from .team import barrier, next_task

# Whether each loss's local gradient is already dC/dz (no output derivative applied after it).
FUSED = tuple(LOSS_SPECS[code].fused for code in range(len(LOSS_SPECS)))

NO_DROPOUT = -1  # the dropout key of a pass that drops nothing
NO_LOSS = -1  # the loss code of a pass that computes none (a prediction)


class Batch(NamedTuple):
    """The rows a pass runs: ``x`` (rows × n_in, flat), ``y`` (rows × n_out, flat) and
    ``row_scale`` (rows,) for a pass with a loss (one element each otherwise), ``rows``, and
    ``row0``, the index of x's first row in its batch (dropout's masks depend on it, not on how
    a batch is cut)."""

    x: np.ndarray
    y: np.ndarray
    row_scale: np.ndarray
    rows: int
    row0: int


class Pass(NamedTuple):
    """What a pass computes: ``loss`` (a code, or NO_LOSS) and its ``parameter``; ``slopes``: the
    derivatives a backward pass needs; ``key``: the step's dropout key (NO_DROPOUT: none);
    ``gemm``: BLAS's ``?gemm`` address (0: the network never calls BLAS)."""

    loss: int
    parameter: float
    slopes: bool
    key: int
    gemm: int


@subroutine
def forward(team, architecture, params, batch, buffers, options):
    """Forward pass of ``batch`` through the network (see the module's docstring).

    With ``options.loss`` >= 0: the output rows' losses times ``row_scale`` summed per block into
    ``buffers.losses`` (``layer_blocks(architecture, last, rows)`` blocks), the output local
    gradients into the output layer's block of ``buffers.deltas``, and, with ``options.slopes``,
    the weights Wᵀ of every layer but the first whose local-gradient product does not go to BLAS,
    into ``buffers.transposed`` (at the weights' offsets), for the backward pass.
    """
    tid, n_threads, control = team
    layers = architecture.layers
    last = layers.size - 1
    rows = batch.rows
    capacity = buffers.acts.size // architecture.units
    lanes = 32 // params.itemsize
    acts, slopes, zs = buffers.acts, buffers.slopes, buffers.zs
    with_loss = options.loss >= 0
    for layer in range(last + 1):
        record = layers[layer]
        n_in, n_out, w = record["n_in"], record["n_out"], record["weights"]
        out = capacity * record["acts"]
        if layer == 0:
            source, source_start = batch.x, 0
        else:
            source, source_start = acts, capacity * layers[layer - 1]["acts"]
        n_blocks = layer_blocks(architecture, layer, rows)
        chosen = path(architecture.blas, NN, rows, n_out, n_in, lanes)
        # One more task: transpose W for the backward pass's product δ @ Wᵀ (same size, so the
        # same BLAS decision), when it will not go to BLAS.
        transposes = options.slopes and layer > 0 and not uses_blas(architecture.blas, rows, n_in, n_out)
        tasks = n_blocks + 1 if transposes else n_blocks
        task = tid
        while task < tasks:
            if task == n_blocks:
                transpose(params, w, n_in, n_out, buffers.transposed, w)
            else:
                first, stop = task * rows // n_blocks, (task + 1) * rows // n_blocks
                _forward_block(
                    layer,
                    layer == last,
                    record,
                    params,
                    (source, source_start + first * n_in, n_in),
                    chosen,
                    (first, stop - first, batch.row0 + first),
                    out,
                    buffers,
                    options,
                )
                if layer == last and with_loss:
                    count = stop - first
                    at = out + first * n_out
                    delta = buffers.deltas[at : at + count * n_out]
                    buffers.losses[task] = loss_rows(
                        options.loss,
                        zs[first * n_out : stop * n_out],
                        acts[at : at + count * n_out],
                        batch.y[first * n_out : stop * n_out],
                        batch.row_scale[first:stop],
                        delta,
                        count,
                        n_out,
                        options.parameter,
                    )
                    if options.slopes and not FUSED[options.loss]:
                        _output_derivative(
                            record["activation"],
                            delta,
                            acts[at : at + count * n_out],
                            slopes[at : at + count * n_out],
                            count,
                            n_out,
                        )
            task = next_task(n_threads, task)
        barrier(control, n_threads)
    return np.int64(0)


@helper
def _forward_block(layer, is_last, record, params, a, chosen, rows, out, buffers, options):
    # Rows [first, first + count) of one layer (``rows``: first, count, and the first's row in its
    # batch): the product, the bias, the activation (and its slopes), dropout. The output layer's
    # z goes to zs first, then to its block of acts.
    first, count, row0 = rows
    n_in, n_out, w, b = record["n_in"], record["n_out"], record["weights"], record["bias"]
    at = out + first * n_out
    n = count * n_out
    a_out = buffers.acts[at : at + n]
    z = buffers.zs[first * n_out : first * n_out + n] if is_last else a_out
    product(chosen, NN, count, n_out, n_in, a, (params, w, n_out), (z, 0, n_out), options.gemm)
    width, bias = np.uint64(n_out), np.uint64(b)
    for r in span(0, count):
        for j in span(0, width):
            z[r * width + j] += params[bias + j]
    if is_last:
        for i in range(n):
            a_out[i] = z[i]
    slopes = buffers.slopes[at : at + n]
    apply(record["activation"], a_out, slopes, count, n_out, options.slopes)
    if options.key >= 0 and record["dropout"] > 0.0:
        drop_rows(options.key, layer, record["dropout"], row0, count, n_out, a_out, slopes)


@helper
def _output_derivative(activation, delta, a, slopes, rows, width):
    # dC/da · scale → dC/dz · scale for a loss not fused with its output activation.
    if activation == SOFTMAX:
        softmax_backward(delta, a, rows, width)
    elif activation != IDENTITY:
        for i in range(rows * width):
            delta[i] *= slopes[i]


@subroutine
def backward(team, architecture, params, grads, x, rows, buffers, l1, l2, gemm):
    """Backprop of a batch of ``rows`` rows of ``x`` whose ``forward`` (with a loss and slopes)
    has run: every gradient into ``grads``, plus the L1/L2 penalty (``l1·sign(W) + l2·W``) on the
    weights, whose value ``l1·Σ|W| + (l2/2)·ΣW²`` goes to ``buffers.penalties`` (see
    ``batch_value``). Wᵀ comes from ``buffers.transposed``, where the forward pass put it."""
    tid, n_threads, control = team
    layers = architecture.layers
    last = layers.size - 1
    capacity = buffers.acts.size // architecture.units
    lanes = 32 // params.itemsize
    acts, deltas = buffers.acts, buffers.deltas
    penalised = l1 != 0.0 or l2 != 0.0
    for layer in range(last, -1, -1):
        record = layers[layer]
        n_in, n_out, w, b = record["n_in"], record["n_out"], record["weights"], record["bias"]
        delta = capacity * record["acts"]
        if layer == 0:
            source, source_start = x, 0
        else:
            source, source_start = acts, capacity * layers[layer - 1]["acts"]
        weight_tasks = weight_blocks(architecture, layer, rows)
        tasks = weight_tasks + 1 + delta_blocks(architecture, layer, rows)
        weight_path = path(architecture.blas, TN, n_in, n_out, rows, lanes)
        delta_path = path(architecture.blas, NN, rows, n_in, n_out, lanes)
        task = tid
        while task < tasks:
            if task < weight_tasks:
                first, stop = task * n_in // weight_tasks, (task + 1) * n_in // weight_tasks
                product(
                    weight_path,
                    TN,
                    stop - first,
                    n_out,
                    rows,
                    (source, source_start + first, n_in),
                    (deltas, delta, n_out),
                    (grads, w + first * n_out, n_out),
                    gemm,
                )
                if penalised:
                    buffers.penalties[layer * MAX_BLOCKS + task] = penalise(
                        params, grads, w + first * n_out, w + stop * n_out, l1, l2
                    )
            elif task == weight_tasks:
                _bias_gradient(deltas, delta, rows, n_out, grads, b)
            else:
                n_blocks = tasks - weight_tasks - 1
                block = task - weight_tasks - 1
                first, stop = block * rows // n_blocks, (block + 1) * rows // n_blocks
                _delta_block(
                    layers[layer - 1],
                    capacity,
                    record,
                    params,
                    buffers,
                    (deltas, delta + first * n_out, n_out),
                    first,
                    stop - first,
                    delta_path,
                    gemm,
                )
            task = next_task(n_threads, task)
        barrier(control, n_threads)
    return np.int64(0)


@helper
def _delta_block(beneath, capacity, record, params, buffers, delta, first, count, chosen, gemm):
    # Rows [first, first + count) of the local gradient below a layer: (δ @ Wᵀ) ⊙ slopes.
    n_in, n_out, w = record["n_in"], record["n_out"], record["weights"]
    at = capacity * beneath["acts"] + first * n_in
    target = (buffers.deltas, at, n_in)
    if chosen == BLAS:
        product(BLAS, NT, count, n_in, n_out, delta, (params, w, n_out), target, gemm)
    else:
        product(chosen, NN, count, n_in, n_out, delta, (buffers.transposed, w, n_in), target, gemm)
    n = count * n_in
    deltas, slopes = buffers.deltas[at : at + n], buffers.slopes[at : at + n]
    for i in range(n):
        deltas[i] *= slopes[i]


@helper
def _bias_gradient(deltas, start, rows, n_out, grads, b):
    zero = grads.dtype.type(0.0)
    width, bias = np.uint64(n_out), np.uint64(b)
    for j in span(bias, width):
        grads[j] = zero
    for r in span(0, rows):
        row = np.uint64(start) + r * width
        for j in span(0, width):
            grads[bias + j] += deltas[row + j]


@subroutine
def penalise(params, grads, start, stop, l1, l2):
    """Add ``l1·sign(w) + l2·w`` to ``grads[start:stop]``; return ``l1·Σ|w| + (l2/2)·Σw²``
    (float64) over ``params[start:stop]``."""
    t = params.dtype.type
    l1_, l2_, zero, one = t(l1), t(l2), t(0.0), t(1.0)
    total = 0.0
    weights, gradients = params[start:stop], grads[start:stop]
    for i in range(stop - start):
        w = weights[i]
        w64 = np.float64(w)
        total += l1 * abs(w64) + 0.5 * l2 * w64 * w64
        sign = one if w > zero else (-one if w < zero else zero)
        gradients[i] += l1_ * sign + l2_ * w
    return total


@subroutine
def batch_value(architecture, rows, buffers, l1, l2):
    """The batch loss: the row-loss partials and the penalty partials summed in block order."""
    value = 0.0
    for block in range(layer_blocks(architecture, architecture.layers.size - 1, rows)):
        value += buffers.losses[block]
    if l1 != 0.0 or l2 != 0.0:
        for layer in range(architecture.layers.size):
            for block in range(weight_blocks(architecture, layer, rows)):
                value += buffers.penalties[layer * MAX_BLOCKS + block]
    return value


# --------------------------------------------------------------------------- the pieces
# The passes compiled apart, once per dtype, as C functions ``int64 piece(tid, n_threads, args)``
# (``numba.cfunc``, Numba's "Creating C callbacks with @cfunc") that callers call by address
# (``lowlevel.call_piece``), ``args`` the address of a ``layout.PASS`` record (``fill``). A
# caller links none of a pass's code, so it is compiled (and cached) once, and a fit's first
# compile can give the passes to a helper process while it compiles the loop.

_PASS = np.zeros(0, dtype=PASS)
_LAYERS = np.zeros(0, dtype=LAYER)
_INT64 = np.zeros(0, dtype=np.int64)
_FLOAT64 = np.zeros(0, dtype=np.float64)


@subroutine
def fill(record, control, architecture, params, grads, batch, buffers, options, penalties):
    """Write a pass's arguments into ``record`` (a ``layout.PASS`` record): the arrays by
    address, the rest as they are (``batch``: ``Batch``; ``options``: ``Pass``; ``penalties``:
    (l1, l2))."""
    layers = architecture.layers
    record["control"], record["layers"], record["n_layers"] = address(control, 0), address(layers, 0), layers.size
    record["n_params"], record["units"], record["blas"] = (
        architecture.n_params,
        architecture.units,
        1 if architecture.blas else 0,
    )
    record["params"], record["grads"] = address(params, 0), address(grads, 0)
    record["x"], record["y"], record["row_scale"] = (
        address(batch.x, 0),
        address(batch.y, 0),
        address(batch.row_scale, 0),
    )
    record["rows"], record["row0"] = batch.rows, batch.row0
    record["capacity"] = buffers.acts.size // architecture.units
    record["acts"], record["slopes"], record["zs"] = (
        address(buffers.acts, 0),
        address(buffers.slopes, 0),
        address(buffers.zs, 0),
    )
    record["deltas"], record["losses"] = address(buffers.deltas, 0), address(buffers.losses, 0)
    record["penalties"], record["transposed"] = address(buffers.penalties, 0), address(buffers.transposed, 0)
    record["loss"], record["parameter"], record["with_slopes"] = (
        options.loss,
        options.parameter,
        1 if options.slopes else 0,
    )
    record["key"], record["gemm"], record["l1"], record["l2"] = options.key, options.gemm, penalties[0], penalties[1]


@subroutine
def _unpack(args, like):
    # The arguments of a pass from the PASS record at address ``args``, as the passes take them;
    # ``like``: an array of the network's dtype.
    record = as_array(args, 1, _PASS)[0]
    layers = as_array(record["layers"], record["n_layers"], _LAYERS)
    architecture = Architecture(layers, record["n_params"], record["units"], record["blas"] != 0)
    capacity, rows = record["capacity"], record["rows"]
    n_in, n_out = layers[0]["n_in"], layers[layers.size - 1]["n_out"]
    size = capacity * record["units"]
    buffers = Buffers(
        as_array(record["acts"], size, like),
        as_array(record["slopes"], size, like),
        as_array(record["zs"], capacity * n_out, like),
        as_array(record["deltas"], size, like),
        as_array(record["losses"], MAX_BLOCKS, _FLOAT64),
        as_array(record["penalties"], layers.size * MAX_BLOCKS, _FLOAT64),
        as_array(record["transposed"], record["n_params"], like),
    )
    y_size = rows * n_out if record["loss"] >= 0 else 1
    batch = Batch(
        as_array(record["x"], rows * n_in, like),
        as_array(record["y"], y_size, like),
        as_array(record["row_scale"], rows if record["loss"] >= 0 else 1, like),
        rows,
        record["row0"],
    )
    options = Pass(record["loss"], record["parameter"], record["with_slopes"] != 0, record["key"], record["gemm"])
    control = as_array(record["control"], CONTROL.width, _INT64)
    params, grads = (
        as_array(record["params"], record["n_params"], like),
        as_array(record["grads"], record["n_params"], like),
    )
    return control, architecture, params, grads, batch, buffers, options, (record["l1"], record["l2"])


def _make_pieces(dtype):
    # The two pieces of one dtype (closures over an array of it: a piece's types are fixed),
    # named apart so that Numba's cache keeps each under its own name.
    like = np.zeros(0, dtype=dtype)

    def forward_pass(tid, n_threads, args):
        control, architecture, params, grads, batch, buffers, options, penalties = _unpack(args, like)
        return forward((tid, n_threads, control), architecture, params, batch, buffers, options)

    def backward_pass(tid, n_threads, args):
        control, architecture, params, grads, batch, buffers, options, penalties = _unpack(args, like)
        return backward(
            (tid, n_threads, control),
            architecture,
            params,
            grads,
            batch.x,
            batch.rows,
            buffers,
            penalties[0],
            penalties[1],
            options.gemm,
        )

    found = {}
    for kind, function in (("forward", forward_pass), ("backward", backward_pass)):
        function.__name__ = function.__qualname__ = f"{kind}_pass_{np.dtype(dtype).name}"
        found[kind] = function
    return found


PIECE_KINDS = ("forward", "backward")
_COMPILED = {}


def piece(kind, dtype):
    """Pass ``kind`` ("forward" or "backward") for ``dtype``, compiled (or loaded from Numba's
    cache) the first time: a ``numba.cfunc`` (its ``address`` is what callers call), or under
    NUMBA_DISABLE_JIT the Python function, registered by a stand-in address."""
    key = (kind, np.dtype(dtype).name)
    found = _COMPILED.get(key)
    if found is None:
        function = _make_pieces(dtype)[kind]
        found = compile_piece(function)
        _COMPILED[key] = found
    return found


def piece_addresses(dtype):
    """(forward, backward): the addresses of the two passes of ``dtype`` (``piece``)."""
    return tuple(piece_address(piece(kind, dtype)) for kind in PIECE_KINDS)


# --------------------------------------------------------------------------- dropout
# Inverted dropout's masks, drawn from counters: which units of a layer a training step drops
# depends only on (the seed, the step, the layer, the row's index in the batch, the unit), never
# on threads, shards, ranks or the order work is done in, so the masks are the same on any number
# of threads or processes and in the NumPy twin (``fastgd.reference.dropout_masks``).
#
# While training, a hidden layer with rate p multiplies each output by 0 (probability p) or by
# 1/(1 − p), as PyTorch's ``nn.Dropout`` does, and its slopes by the same multipliers (so the
# backward pass needs no mask of its own). A pass with key ``NO_DROPOUT`` drops nothing.
#
# The draw for unit j of row r: ``h = mix(mix(mix(key + (layer + 1)·φ) + (row0 + r + 1)·φ) +
# (j + 1)·φ)`` (splitmix64's finaliser ``mix``, φ the golden-ratio increment); the unit is kept
# when the top 53 bits of h are at least p·2⁵³. ``key = mix(seed·φ + step)``, step counted from 1
# over all fits of the network.

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
TWO_53 = 9007199254740992.0


@subroutine
def mix(z):
    """splitmix64's finaliser: a bijection of uint64 with good avalanche."""
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@subroutine
def step_key(seed, step):
    """The dropout key of training step ``step`` (1-based, over all fits): a non-negative int64."""
    return np.int64(mix(np.uint64(seed) * GOLDEN + np.uint64(step)) >> np.uint64(1))


@subroutine
def drop_rows(key, layer, rate, row0, rows, width, a, slopes):
    """Inverted dropout over ``rows × width`` outputs ``a`` (flat) of layer ``layer``, rows
    ``row0`` … of the batch: each output and its slope multiplied by 0 or 1/(1 − rate)."""
    t = a.dtype.type
    limit = np.uint64(rate * TWO_53)
    scale = t(1.0 / (1.0 - rate))
    zero = t(0.0)
    base = mix(np.uint64(key) + np.uint64(layer + 1) * GOLDEN)
    for r in range(rows):
        row_base = mix(base + np.uint64(row0 + r + 1) * GOLDEN)
        for j in range(width):
            h = mix(row_base + np.uint64(j + 1) * GOLDEN)
            m = scale if (h >> np.uint64(11)) >= limit else zero
            a[r * width + j] *= m
            slopes[r * width + j] *= m
