"""The one owner of fastgd's buffer layout: the per-layer description ``meta``, the flat work
buffers, the ``control`` array, the partition of work into fixed blocks, and the named bundles
the compiled entry points take.

Everything here is plain data and arithmetic on sizes; the kernels import the constants and the
``@njit`` helpers, and :mod:`fastgd` builds every buffer through :func:`make_work` and friends,
so the layout is written down once.

Flat buffers
------------
``params`` (and ``grads``, laid out alike) holds layer after layer the weights ``(n_in, n_out)``
row-major and then the bias ``(n_out,)``. ``acts`` and ``deltas`` hold, layer after layer, a
block of ``capacity`` rows by ``n_out`` columns (row-major); layer l's block starts at
``capacity * meta[l, META_UNITS_BEFORE]``. ``z_out`` holds the output layer's pre-activations,
``capacity * n_out`` of them.

Blocks
------
Work inside a batch is split into blocks whose boundaries depend on the sizes only, never on
the number of threads, and every reduction adds block results in block order: results are
bitwise the same with any number of threads.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from .compat import unsigned
from .config import BLAS_MIN_MACS, BLAS_MIN_WEIGHTS, JIT_OPTIONS

# --------------------------------------------------------------------------- meta
# Columns of ``meta`` (int64, shape (n_layers, META_WIDTH)): one row per layer.
META_N_IN = 0
META_N_OUT = 1
META_W_OFFSET = 2  # where the layer's weights start in params
META_B_OFFSET = 3  # where its bias starts
META_ACTIVATION = 4  # activation code (kernels.activations)
META_UNITS_BEFORE = 5  # sum of n_out over the layers before it (its block in acts/deltas)
META_BLAS = 6  # 1 in every row when the network may call BLAS at all (network_blas)
META_WIDTH = 7


def make_meta(layer_sizes, activation_codes) -> np.ndarray:
    """``meta`` for a network with these sizes (input first) and one activation code per layer."""
    n_layers = len(layer_sizes) - 1
    meta = np.zeros((n_layers, META_WIDTH), dtype=np.int64)
    offset = units = 0
    for layer in range(n_layers):
        n_in, n_out = int(layer_sizes[layer]), int(layer_sizes[layer + 1])
        meta[layer, :META_BLAS] = (n_in, n_out, offset, offset + n_in * n_out, int(activation_codes[layer]), units)
        offset += n_in * n_out + n_out
        units += n_out
    # BLAS only when a weight matrix has at least BLAS_MIN_WEIGHTS elements: smaller ones stay in
    # a core's cache, where the micro-kernel is faster at any batch size.
    meta[:, META_BLAS] = any(int(n_in) * int(n_out) >= BLAS_MIN_WEIGHTS for n_in, n_out in meta[:, :2])
    return meta


def parameter_count(meta) -> int:
    last = meta[-1]
    return int(last[META_B_OFFSET] + last[META_N_OUT])


def total_units(meta) -> int:
    """Columns of all layers together: the width of one row of ``acts``/``deltas``."""
    return int(meta[-1, META_UNITS_BEFORE] + meta[-1, META_N_OUT])


def layer_view(flat, meta, layer, weights=True):
    """A layer's weights ``(n_in, n_out)`` (or bias ``(n_out,)``) as a view into ``flat``."""
    n_in, n_out, w, b = (int(v) for v in meta[layer, :4])
    if weights:
        return flat[w : w + n_in * n_out].reshape(n_in, n_out)
    return flat[b : b + n_out]


def block_of(buffer, meta, layer, rows):
    """Rows ``[0, rows)`` of a layer's block in ``acts``/``deltas`` as a ``(rows, n_out)`` view."""
    capacity = buffer.size // total_units(meta)
    start = capacity * int(meta[layer, META_UNITS_BEFORE])
    n_out = int(meta[layer, META_N_OUT])
    return buffer[start : start + rows * n_out].reshape(rows, n_out)


# --------------------------------------------------------------------------- control
# The ``control`` array (int64): flags read and written across threads. Slots that threads spin
# on sit on cache lines of their own (8 int64 = 64 bytes).
CONTROL_STOP = 0  # set (by another thread: fit's Ctrl-C handler) to ask the loop to stop
CONTROL_OUTCOME = 1  # how the call ended (OUTCOME_*), written by the loop
CONTROL_STOP_SEEN = 2  # thread 0's reading of CONTROL_STOP, which every thread then acts on
CONTROL_SGEMM = 3  # address of NumPy's OpenBLAS cblas_sgemm (0: call SciPy's BLAS through Numba)
CONTROL_DGEMM = 4  # and of its cblas_dgemm
CONTROL_ILP64 = 5  # 1 when that library takes 64-bit integers
CONTROL_ARRIVED = 8  # team barrier: threads arrived
CONTROL_GENERATION = 16  # team barrier: generation, advanced by the last to arrive
CONTROL_ABORT = 24  # a thread failed: the others leave their barriers
CONTROL_NEXT_TASK = 32  # next task of the current phase, handed out atomically
CONTROL_CLOCK = 40  # scratch of the loop's clock (two slots: seconds, nanoseconds)
CONTROL_VISITED = 42  # when the loop last visited Python (monotonic nanoseconds)
CONTROL_HALT = 43  # a visit's answer (1: stop after this epoch), shared with the whole team
CONTROL_WIDTH = 48

OUTCOME_FINISHED = 0
OUTCOME_DIVERGED = 1  # a loss or a parameter became NaN or infinite
OUTCOME_INTERRUPTED = 2  # a stop was requested
OUTCOME_STOPPED = 3  # the stopping rule or a visit (a Python callback) ended training after an epoch


def make_control() -> np.ndarray:
    """A fresh ``control`` array, with the addresses of the BLAS the kernels call."""
    from .compat import cblas_gemm_addresses

    control = np.zeros(CONTROL_WIDTH, dtype=np.int64)
    control[CONTROL_SGEMM], control[CONTROL_DGEMM], control[CONTROL_ILP64] = cblas_gemm_addresses()
    return control


# --------------------------------------------------------------------------- pieces
# The ``pieces`` table (int64): the addresses of the compiled pieces a network's passes call
# (``kernels.pieces.table`` builds it; a slot a network never uses holds another piece of the
# same kind, or 0 where the passes test for it).
PIECE_FORWARD = 0  # the forward pass (passes.forward_pass)
PIECE_BACKWARD = 1  # the backward pass (passes.backward_pass)
PIECE_OUTPUT = 2  # the output layer's activation
PIECE_OUTPUT_SLOPE = 3  # the same, when the loss's delta still needs its derivative; else 0
PIECE_LOSS = 4
PIECE_NN_LOOPS = 5  # the product paths, by shape (kernels.products)
PIECE_NN_TILES = 6
PIECE_NN_BLAS = 7  # 0: the network never calls BLAS
PIECE_TN_LOOPS = 8
PIECE_TN_TILES = 9
PIECE_TN_BLAS = 10
PIECE_NT_BLAS = 11
PIECE_UPDATE = 12  # the optimizer's update (kernels.optim)
PIECE_CONDITION = 13  # clipping and gradient health (kernels.condition), or 0
PIECE_EXCHANGE = 14  # the exchange between ranks (kernels.exchange), or 0
PIECE_SAVE = 15  # the training loop's phases (kernels.phases, passes.batch_value)
PIECE_FINITE = 16
PIECE_GATHER = 17
PIECE_VALUE = 18
PIECE_MONITOR = 19  # validation and the stopping rule (kernels.epoch_end), or 0
PIECE_VISIT = 20  # visits to Python (kernels.epoch_end), or 0
PIECE_LAYERS = 22  # then layer k's activation at PIECE_LAYERS + k

# What an activation piece does (its first argument).
FORWARD = 0  # target = f(target + bias), in place
DERIVATIVE = 1  # target *= f'(a)

# The condition stage's modes: the points of the loop it is called at.
CONDITION_EPOCH_START = 0
CONDITION_STEP = 1
CONDITION_EPOCH_END = 2

# The exchange piece's modes (kernels.exchange).
EXCHANGE_STEP = 0
EXCHANGE_WEIGHTS = 1


# --------------------------------------------------------------------------- blocks
# A matrix product with fewer multiply-adds than PARALLEL_MIN_MACS is one block; a larger one is
# split into blocks of output rows that threads take in turn, at most MAX_BLOCKS: blocks of at
# least MIN_BLOCK_ROWS_BLAS rows when the product goes to BLAS (whose speed falls with fewer rows:
# 32 rows ran at 51 GFLOP/s, 128 at 79, 256 at 86 here), else of at least MIN_BLOCK_ROWS (four
# tiles of the micro-kernel). Elementwise work over the parameters is split into chunks of at
# least MIN_CHUNK elements, at most MAX_CHUNKS.
PARALLEL_MIN_MACS = 1 << 15
MIN_BLOCK_ROWS = 16
MIN_BLOCK_ROWS_BLAS = 128
MAX_BLOCKS = 16
MIN_CHUNK = 1 << 14
MAX_CHUNKS = 64


@njit(inline="always", **JIT_OPTIONS)
def block_count(rows, macs_per_row, blas):
    """Blocks of rows for a product producing ``rows`` rows of ``macs_per_row`` multiply-adds;
    ``blas``: whether the product goes to BLAS (``uses_blas``)."""
    macs = rows * macs_per_row
    if macs < PARALLEL_MIN_MACS:
        return 1
    blocks = rows // (MIN_BLOCK_ROWS_BLAS if blas else MIN_BLOCK_ROWS)
    blocks = MAX_BLOCKS if blocks > MAX_BLOCKS else blocks
    return 1 if blocks < 1 else blocks


@njit(inline="always", **JIT_OPTIONS)
def network_blas(meta):
    """Whether a network may call BLAS at all (``products.paths``; ``make_meta`` decides it)."""
    return meta[0, META_BLAS] != 0


@njit(inline="always", **JIT_OPTIONS)
def uses_blas(blas, m, n, k):
    """Whether an ``m × n`` product over ``k`` goes to BLAS, in a network that may use BLAS
    (``blas``, ``network_blas``): decided once per whole product, so that all its blocks take the
    same path (and a product of local gradients with weightsᵀ knows whether the weights need
    transposing for ``product_nn``)."""
    return blas and m * n * k >= BLAS_MIN_MACS


@njit(inline="always", **JIT_OPTIONS)
def layer_blocks(meta, layer, rows):
    """Blocks of rows of layer ``layer``'s forward product ``a_in @ W`` for ``rows`` rows (the
    gather cuts a batch as layer 0 does, so that a thread multiplies the rows it gathered)."""
    n_in, n_out = meta[layer, META_N_IN], meta[layer, META_N_OUT]
    return block_count(rows, n_in * n_out, uses_blas(network_blas(meta), rows, n_out, n_in))


@njit(inline="always", **JIT_OPTIONS)
def block_start(block, n_blocks, rows):
    return block * rows // n_blocks


@njit(inline="always", **JIT_OPTIONS)
def chunk_count(n):
    chunks = n // MIN_CHUNK
    chunks = MAX_CHUNKS if chunks > MAX_CHUNKS else chunks
    return 1 if chunks < 1 else chunks


@njit(inline="always", **JIT_OPTIONS)
def chunk_bounds(task, n_chunks, n):
    """``[first, stop)`` of chunk ``task`` of ``n_chunks`` over n elements."""
    return block_start(task, n_chunks, n), block_start(task + 1, n_chunks, n)


@njit(inline="always", **JIT_OPTIONS)
def add_shards(grads, shards, first, stop):
    """``grads[0] += grads[1] + ...`` in shard order, over ``[first, stop)``."""
    total = grads[0]
    for shard in range(1, shards):
        part = grads[shard]
        for i in range(unsigned(first), unsigned(stop)):
            total[i] += part[i]


# Gradient health (``Settings.track``), per epoch and layer, in ``Work.health``: the weight
# gradient's 2-norm (mean over the epoch's steps, before clipping), the weights' 2-norm at the
# end of the epoch, the epoch's update over the weights (‖W_end − W_start‖ / ‖W_start‖), and for
# sigmoid and tanh layers the share of units (over the epoch's rows) whose derivative is below
# SATURATION_THRESHOLD (NaN for other layers).
HEALTH_GRAD_NORM = 0
HEALTH_WEIGHT_NORM = 1
HEALTH_UPDATE_RATIO = 2
HEALTH_SATURATION = 3
HEALTH_WIDTH = 4
SATURATION_THRESHOLD = 1e-3
# Blocks of rows per shard whose saturated units are counted as separate tasks.
SATURATION_BLOCKS = 8


# Slots of the float64 ``partials`` buffer (per shard): per-block row-loss partials, then the
# penalty partials (per layer and block), reduced in block order; at the end of an epoch (and in
# the condition stage, after the step's losses were summed) the penalty partials' place holds
# one value per parameter chunk, from FLAG_PARTIALS on.
FLAG_PARTIALS = MAX_BLOCKS


# Slots of the float64 ``partials`` buffer: per-block partial sums reduced in block order.
def partial_slots(n_layers) -> int:
    """Row-loss partials (one per block), penalty partials (per layer and block), and one flag
    per parameter chunk."""
    return MAX_BLOCKS + n_layers * MAX_BLOCKS + MAX_CHUNKS


# --------------------------------------------------------------------------- bundles
class TrainState(NamedTuple):
    """What training changes: parameters, optimizer state, optimizer step count.

    params : (n_params,); opt_state : (n_slots, n_params); step : int64 (1,).
    """

    params: np.ndarray
    opt_state: np.ndarray
    step: np.ndarray


class Data(NamedTuple):
    """Training rows: X (n, n_in), Y (n, n_out), sample_weight (n,), all of the network's dtype."""

    X: np.ndarray
    Y: np.ndarray
    sample_weight: np.ndarray


class Work(NamedTuple):
    """Buffers of one fit, allocated once (``make_work``); nothing is allocated per step.

    A batch is cut into ``shards`` shards of rows (``shard_plan``), each with its own buffers
    (the rows of the 2-D arrays below) and gradient; the gradients are added in shard order.

    grads : (shards, n_params); order : int64 (n,); keys : uint64 (n,);
    x_batch : (capacity * n_in,); y_batch : (capacity * n_out,); row_scale : (capacity,);
    acts, deltas : (shards, shard_capacity * units); z_out : (shards, shard_capacity * n_out);
    transposed : (shards, n_params), weights transposed for the backward pass;
    saved_params, saved_state : like params and opt_state (the state at the end of the last
    completed epoch); partials : float64 (shards, partial_slots);
    epoch_losses : float64 (max epochs per call,);
    scalars : float64 (STEP_SCALARS,), what a step exchanges besides the gradient (data-parallel);
    batch_weights : float64 (steps per epoch,), each step's batch weight summed over the ranks
    (data-parallel training on partitioned data; else unused, size 1);
    health : float64 (max epochs per call, n_layers, HEALTH_WIDTH), each completed epoch's
    gradient health per layer (``Settings.track``; see HEALTH_*); health_partials : float64
    (MAX_CHUNKS, n_layers), a step's squared weight-gradient sums per parameter chunk and layer;
    health_counts : int64 (shards * SATURATION_BLOCKS, n_layers), a step's saturated units per
    block of rows and layer; health_sums : float64 (4, n_layers), an epoch's running sums
    (``kernels.train.condition``).
    """

    grads: np.ndarray
    order: np.ndarray
    keys: np.ndarray
    x_batch: np.ndarray
    y_batch: np.ndarray
    row_scale: np.ndarray
    acts: np.ndarray
    deltas: np.ndarray
    z_out: np.ndarray
    transposed: np.ndarray
    saved_params: np.ndarray
    saved_state: np.ndarray
    partials: np.ndarray
    epoch_losses: np.ndarray
    scalars: np.ndarray
    batch_weights: np.ndarray
    health: np.ndarray
    health_partials: np.ndarray
    health_counts: np.ndarray
    health_sums: np.ndarray


class Settings(NamedTuple):
    """How to train: the network description and every hyper-parameter of the loop.

    meta : int64 (n_layers, META_WIDTH); loss, optimizer : codes; batch_size : rows per step;
    shuffle : bool; seed : shuffle seed; first_epoch : epochs trained before (selects the
    shuffle permutations); epochs : epochs this call runs (<= epoch_losses.size); lr : base
    learning rate; hyper : float64, the optimizer's hyper-parameters (kernels.optim.SPECS);
    schedule_kind, schedule : learning-rate schedule (kernels.schedules); l1, l2 : weight penalties;
    shards, solo : how batches are cut (``shard_plan``).

    Data-parallel training (``fastgd.distributed``): ``ranks`` processes, this one being
    ``rank``, each computing the gradient of its share of every batch and adding them up
    through ``kernels.exchange.CHANNELS[channel]``. With ``partitioned`` False every rank holds
    all the rows, and its share is rows ``[rank·B/ranks, (rank+1)·B/ranks)`` of each batch of B
    (the shard ``rank`` of ``ranks``); with True each rank holds its own rows, takes batches of
    ``batch_size`` of them, and the batch is the union of the ranks' batches. One process:
    rank 0 of 1.

    Gradient clipping, after the penalty and the sum over ranks, before the optimizer step
    (0 = off): ``clip_value`` clamps every entry to [−clip_value, clip_value]; then with
    ``clip_norm`` the gradient is scaled by clip_norm / (‖g‖₂ + 1e-6) when that is below 1
    (PyTorch's ``clip_grad_value_`` and ``clip_grad_norm_``).

    ``track``: record each epoch's gradient health per layer in ``Work.health``.

    ``mean``: the loss is averaged over the rows (its batch and epoch values are weighted
    means), not summed (``kernels.losses.SPECS``).

    ``penalty_per_weight``: each step's weight penalty is ``l1``, ``l2`` divided by the batch's
    total sample weight (its rows when unweighted), as scikit-learn's ``alpha``; else they are
    added as they are.
    """

    meta: np.ndarray
    loss: int
    optimizer: int
    batch_size: int
    shuffle: bool
    seed: int
    first_epoch: int
    epochs: int
    lr: float
    hyper: np.ndarray
    schedule_kind: int
    schedule: np.ndarray
    l1: float
    l2: float
    shards: int
    solo: bool
    rank: int
    ranks: int
    partitioned: bool
    channel: int
    clip_norm: float
    clip_value: float
    track: bool
    mean: bool
    penalty_per_weight: bool


class Evaluation(NamedTuple):
    """Buffers of a forward (and backward) pass over ``capacity`` rows: acts, deltas
    (capacity * units,), z_out (capacity * n_out,), partials float64 (partial_slots,),
    transposed (n_params,)."""

    acts: np.ndarray
    deltas: np.ndarray
    z_out: np.ndarray
    partials: np.ndarray
    transposed: np.ndarray


# --------------------------------------------------------------------------- epoch ends
# What the loop does after each completed epoch besides checking and saving it
# (``kernels.epoch_end``): validation, the stopping rule and visits to Python.
#
# The stopping rule, ``EpochEnd.rule`` (float64):
RULE_MODE = 0  # STOP_NONE, STOP_PATIENCE or STOP_NO_IMPROVEMENT
RULE_MONITOR = 1  # MONITOR_LOSS (the training loss), MONITOR_VAL_LOSS or MONITOR_VAL_SCORE
RULE_PATIENCE = 2  # epochs without improvement that stop (patience, n_iter_no_change)
RULE_DELTA = 3  # the improvement that counts (min_delta, tol)
RULE_RESTORE = 4  # 1: keep the best epoch's parameters in best_params
RULE_ACCURACY = 5  # ACCURACY_NONE, ACCURACY_ARGMAX (crossentropy) or ACCURACY_THRESHOLD (binary_crossentropy)
RULE_VALIDATE = 6  # 1: validation rows are given (X, Y, row_scale)
RULE_OFFSET = 7  # epochs of this fit before this call (STATE_BEST_EPOCH counts from the fit's start)
RULE_LR_FACTOR = 8  # > 0: a stop first divides the learning rate by this (scikit-learn's "adaptive")...
RULE_MIN_LR_SCALE = 9  # ...while the rate's scale (STATE_LR_SCALE) is above this; then it stops
RULE_WIDTH = 10
STOP_NONE = 0
STOP_PATIENCE = 1  # Keras's EarlyStopping: best − delta beaten, else wait; stop after `patience` waits
STOP_NO_IMPROVEMENT = 2  # scikit-learn's tol / n_iter_no_change (see kernels.epoch_end)
MONITOR_LOSS = 0
MONITOR_VAL_LOSS = 1
MONITOR_VAL_SCORE = 2  # the validation score (RULE_ACCURACY's kind): higher is better
ACCURACY_NONE = 0
ACCURACY_ARGMAX = 1  # rows whose largest output is their target's
ACCURACY_THRESHOLD = 2  # outputs on the same side of 0.5 as their target
ACCURACY_SUBSET = 3  # rows whose every output is on its target's side of 0.5 (multilabel)
ACCURACY_R2 = 4  # the coefficient of determination, averaged over the outputs (regression)
# The rule's state, ``EpochEnd.state`` (float64), kept across calls of one fit:
STATE_BEST = 0  # the best monitored value so far
STATE_WAITED = 1  # epochs since it improved (or scikit-learn's no-improvement count)
STATE_BEST_EPOCH = 2  # when it did (1-based within the fit; 0: not yet)
STATE_SNAPSHOT = 3  # 1: best_params holds that epoch's parameters
STATE_LR_SCALE = 4  # the factor on every step's learning rate (1 until RULE_LR_FACTOR divides it)
STATE_WIDTH = 5
# Per epoch of a call, ``EpochEnd.records`` (float64, NaN where not measured):
RECORD_VAL_LOSS = 0
RECORD_VAL_ACCURACY = 1  # the validation score of RULE_ACCURACY's kind (an accuracy, or R²)
RECORD_WIDTH = 2
# Visits to Python, ``EpochEnd.visits`` (int64):
VISIT_CHANNEL = 0  # kernels.epoch_end.VISITORS[channel] is called (0: no visits)
VISIT_EVERY = 1  # after every this many epochs (0: none by count)
VISIT_INTERVAL = 2  # and whenever this many nanoseconds have passed since the last (0: never by time)
VISIT_BEAT = 3  # 1: also between batches when that time has passed (Ctrl-C in a main-thread fit)
VISIT_WIDTH = 4
VISIT_EPOCH = 0  # a visit's kinds: after an epoch, or a heartbeat between batches
VISIT_HEARTBEAT = 1


class EpochEnd(NamedTuple):
    """What the loop does after each completed epoch (see ``RULE_*``, ``STATE_*``, ``VISIT_*``).

    X, Y : validation rows, flat (n_val * n_in,), (n_val * n_out,); row_scale : (n_val,), 1/n_val;
    acts, z_out, deltas, transposed, partials : an ``Evaluation`` of the validation rows;
    best_params : (n_params,); records : float64 (epochs, RECORD_WIDTH); state : float64
    (STATE_WIDTH,); rule : float64 (RULE_WIDTH,); visits : int64 (VISIT_WIDTH,). Unused parts are
    one element long (``make_epoch_end``).
    """

    X: np.ndarray
    Y: np.ndarray
    row_scale: np.ndarray
    acts: np.ndarray
    z_out: np.ndarray
    deltas: np.ndarray
    transposed: np.ndarray
    partials: np.ndarray
    best_params: np.ndarray
    records: np.ndarray
    state: np.ndarray
    rule: np.ndarray
    visits: np.ndarray


def make_epoch_end(meta, dtype, epochs, validation=None, rule=None, visits=None, restore=False) -> EpochEnd:
    """An ``EpochEnd`` for calls of up to ``epochs`` epochs: ``validation`` = (X_val, Y_val,
    row_scale) or None, ``rule`` a float64 RULE_WIDTH vector (None: no rule), ``visits`` an int64
    VISIT_WIDTH vector (None: no visits); ``restore``: room for the best epoch's parameters."""
    dtype = np.dtype(dtype)
    one = np.zeros(1, dtype=dtype)
    rule = np.zeros(RULE_WIDTH) if rule is None else np.asarray(rule, dtype=np.float64)
    if validation is not None:
        X, Y, row_scale = (np.array(array, dtype=dtype).reshape(-1) for array in validation)  # writable copies
        evaluation = make_evaluation(meta, row_scale.size, dtype)
        rule[RULE_VALIDATE] = 1.0
    else:
        X, Y, row_scale = one, one.copy(), one.copy()
        evaluation = Evaluation(one.copy(), one.copy(), one.copy(), np.zeros(1), one.copy())
    best = np.empty(parameter_count(meta), dtype=dtype) if restore else one.copy()
    state = np.zeros(STATE_WIDTH)
    state[STATE_BEST] = -np.inf if rule[RULE_MONITOR] == MONITOR_VAL_SCORE else np.inf
    state[STATE_LR_SCALE] = 1.0
    return EpochEnd(X, Y, row_scale, evaluation.acts, evaluation.z_out, evaluation.deltas, evaluation.transposed,
                    evaluation.partials, best, np.full((epochs, RECORD_WIDTH), np.nan), state, rule,
                    np.zeros(VISIT_WIDTH, dtype=np.int64) if visits is None else np.asarray(visits, dtype=np.int64))  # fmt: skip


def make_settings(meta, loss, optimizer, batch_size, shuffle, seed, first_epoch, epochs, lr, hyper,
                  schedule_kind, schedule, l1, l2, shards=1, solo=False, rank=0, ranks=1, partitioned=False,
                  channel=0, clip_norm=0.0, clip_value=0.0, track=False, penalty_per_weight=False) -> Settings:  # fmt: skip
    """``Settings`` with every scalar converted to the one type the compiled loop is compiled
    for (a Python int here and a NumPy int there would compile it twice)."""
    from .losses import SPECS  # (the loop reads the loss's kind here, not its code)

    return Settings(
        np.ascontiguousarray(meta, dtype=np.int64), int(loss), int(optimizer), int(batch_size), bool(shuffle),
        int(np.int64(np.uint64(seed).astype(np.int64))), int(first_epoch), int(epochs), float(lr),
        np.ascontiguousarray(hyper, dtype=np.float64), int(schedule_kind), np.ascontiguousarray(schedule, dtype=np.float64),
        float(l1), float(l2), int(shards), bool(solo), int(rank), int(ranks), bool(partitioned), int(channel),
        float(clip_norm), float(clip_value), bool(track), bool(SPECS[int(loss)].mean), bool(penalty_per_weight),
    )  # fmt: skip


def make_evaluation(meta, rows, dtype) -> Evaluation:
    units = total_units(meta)
    acts = np.empty(rows * units, dtype=dtype)
    return Evaluation(acts, np.empty_like(acts), np.empty(rows * int(meta[-1, META_N_OUT]), dtype=dtype),
                      np.zeros(partial_slots(meta.shape[0])), np.empty(parameter_count(meta), dtype=dtype))  # fmt: skip


def make_work(meta, n_rows, capacity, n_slots, epochs, dtype, shards=1, partitioned=False) -> Work:
    """The buffers of a fit over ``n_rows`` rows in batches of at most ``capacity`` rows, cut
    into ``shards`` shards (``partitioned``: data-parallel training on partitioned data)."""
    from .exchange import STEP_SCALARS  # (exchange builds on this module)

    n_params = parameter_count(meta)
    shard_capacity = -(-capacity // shards)
    units, n_out = total_units(meta), int(meta[-1, META_N_OUT])
    acts = np.empty((shards, shard_capacity * units), dtype=dtype)
    return Work(
        np.zeros((shards, n_params), dtype=dtype),
        np.empty(n_rows, dtype=np.int64),
        np.empty(n_rows, dtype=np.uint64),
        np.empty(capacity * int(meta[0, META_N_IN]), dtype=dtype),
        np.empty(capacity * n_out, dtype=dtype),
        np.empty(capacity, dtype=dtype),
        acts,
        np.empty_like(acts),
        np.empty((shards, shard_capacity * n_out), dtype=dtype),
        np.empty((shards, n_params), dtype=dtype),
        np.empty(n_params, dtype=dtype),
        np.empty((n_slots, n_params), dtype=dtype),
        np.zeros((shards, partial_slots(meta.shape[0]))),
        np.zeros(epochs, dtype=np.float64),
        np.zeros(STEP_SCALARS),
        np.zeros(-(-n_rows // capacity) if partitioned else 1),
        np.full((epochs, meta.shape[0], HEALTH_WIDTH), np.nan),
        np.zeros((MAX_CHUNKS, meta.shape[0])),
        np.zeros((shards * SATURATION_BLOCKS, meta.shape[0]), dtype=np.int64),
        np.zeros((4, meta.shape[0])),
    )


# Shards. A batch can be cut into shards of consecutive rows whose gradients are added in shard
# order (``fit(grad_shards=...)``, and data-parallel training: a shard per process). Cutting tiny
# networks' batches automatically so that threads take whole shards was measured and dropped:
# the small benchmark (32-64-1, batch 32) ran 7.7 µs/step on two threads with two shards against
# 7.9 µs on one thread uncut (9.5 µs on one thread with two shards), the arithmetic saved being
# spent on the shards' fixed costs and on data crossing cores.
def shard_plan(meta, batch_size, shards=0):
    """How a batch of ``batch_size`` rows is cut: ``(shards, solo)``.

    ``shards`` > 0 asks for that many (``grad_shards``); 0 means one. ``solo``: threads take
    whole shards (when every product of a shard is too small for BLAS, ``config.BLAS_MIN_MACS``)
    rather than working through each shard's products together.
    """
    shards = max(1, int(shards))
    if shards == 1:
        return 1, False
    shard_rows = -(-int(batch_size) // shards)
    return shards, all(shard_rows * int(n_in) * int(n_out) < BLAS_MIN_MACS for n_in, n_out in meta[:, :2])


# A step with fewer multiply-adds than this runs on one thread: below it, barriers and data
# crossing cores cost more than the second core gives. Measured on 2 cores (Adam, best µs/step
# on one thread and on two; README "Threads"): 32-64-1 at batch 32 (67k multiply-adds) 8.5 and
# 11.2; 64-64-10 at 32 (0.15M) 24 and 27; 32-64-2 at 256 (0.56M) 111 and 104; 64-100-10 float64
# at 100 (0.74M) 149 and 99, at 200 (1.48M, scikit-learn's default batch) 297 and 170;
# 784-256-128-10 at 256 (60M) 3.8 ms and 1.97 ms.
TEAM_MIN_MACS = 1 << 19


def useful_threads(meta, batch_size, shards, solo, n_threads) -> int:
    """The team size worth starting for a step of ``batch_size`` rows: one thread for small
    steps (``TEAM_MIN_MACS``); in solo mode at most one thread per shard."""
    n_threads = max(1, int(n_threads))
    if solo:
        return min(n_threads, shards)
    macs = int(batch_size) * sum(int(n_in) * int(n_out) for n_in, n_out in meta[:, :2])
    return n_threads if macs >= TEAM_MIN_MACS else 1
