# stamp: 0e084be2ff3cf380b00149123915d874
"""The one owner of fastgd's buffer layout: the per-layer records of a network
(``Architecture``), the flat work buffers, the ``control`` array, the partition of work into
fixed blocks, and the named bundles the compiled entry points take.

Everything here is plain data and arithmetic on sizes; :mod:`fastgd` builds every buffer through
the ``make_*`` functions here, so the layout is written down once.

Flat buffers
------------
``params`` (and ``grads``, laid out alike) holds layer after layer the weights ``(n_in, n_out)``
row-major and then the bias ``(n_out,)``. ``acts``, ``slopes`` and ``deltas`` hold, layer after
layer, a block of ``capacity`` rows by ``n_out`` columns (row-major); layer l's block starts at
``capacity * layers[l].acts``: its outputs a = f(z), while training the slopes f'(z) (times the
dropout multipliers of a layer with dropout), and its local gradients. ``zs`` holds the output
layer's pre-activations, which its loss reads.

Blocks
------
Work inside a batch is split into blocks whose boundaries depend on the sizes only, never on
the number of threads, and every reduction adds block results in block order: results are
bitwise the same with any number of threads.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .config import BLAS_MIN_MACS, BLAS_MIN_WEIGHTS
from .jit import subroutine
from .products import uses_blas

# --------------------------------------------------------------------------- the network
# One record per layer, input side first.
LAYER = np.dtype(
    [
        ("n_in", np.int64),
        ("n_out", np.int64),
        ("weights", np.int64),  # where its weights start in params
        ("bias", np.int64),  # where its bias starts
        ("activation", np.int64),  # activation code (kernels.activations)
        ("acts", np.int64),  # Σ n_out of the layers before it: its block in acts, slopes and deltas
        ("dropout", np.float64),  # the share of its outputs dropped while training (0: none)
    ],
    align=True,
)


class Architecture(NamedTuple):
    """A network as the kernels see it.

    layers : LAYER records, shape (n_layers,); n_params : parameters; units : Σ n_out, the
    columns of a row of acts, slopes and deltas; blas : whether the network may call BLAS at
    all (a weight matrix of at least BLAS_MIN_WEIGHTS elements: smaller ones stay in a core's
    cache, where the compiled paths are faster at any batch size).
    """

    layers: np.ndarray
    n_params: int
    units: int
    blas: bool


def make_architecture(layer_sizes, activation_codes, dropout=None) -> Architecture:
    """The ``Architecture`` of a network with these sizes (input first), one activation code per
    layer and ``dropout`` (one rate per hidden layer, or None)."""
    n_layers = len(layer_sizes) - 1
    rates = [0.0] * n_layers if dropout is None else [float(rate) for rate in dropout] + [0.0]
    layers = np.zeros(n_layers, dtype=LAYER)
    offset = units = 0
    for index in range(n_layers):
        n_in, n_out = int(layer_sizes[index]), int(layer_sizes[index + 1])
        layer = layers[index]
        layer["n_in"], layer["n_out"], layer["weights"], layer["bias"] = n_in, n_out, offset, offset + n_in * n_out
        layer["activation"], layer["acts"], layer["dropout"] = int(activation_codes[index]), units, rates[index]
        offset += n_in * n_out + n_out
        units += n_out
    blas = any(int(n_in) * int(n_out) >= BLAS_MIN_WEIGHTS for n_in, n_out in zip(layer_sizes[:-1], layer_sizes[1:]))
    return Architecture(layers, offset, units, bool(blas))


def layer_view(flat, architecture, layer, weights=True):
    """A layer's weights ``(n_in, n_out)`` (or bias ``(n_out,)``) as a view into ``flat``."""
    record = architecture.layers[layer]
    n_in, n_out = int(record["n_in"]), int(record["n_out"])
    if weights:
        start = int(record["weights"])
        return flat[start : start + n_in * n_out].reshape(n_in, n_out)
    start = int(record["bias"])
    return flat[start : start + n_out]


def block_of(buffer, architecture, layer, rows):
    """Rows ``[0, rows)`` of a layer's block in ``acts``, ``slopes`` or ``deltas`` as a
    ``(rows, n_out)`` view."""
    record = architecture.layers[layer]
    capacity = buffer.size // max(architecture.units, 1)
    start = capacity * int(record["acts"])
    n_out = int(record["n_out"])
    return buffer[start : start + rows * n_out].reshape(rows, n_out)


# --------------------------------------------------------------------------- control
class ControlSlots(NamedTuple):
    """Slots of the ``control`` array (int64): flags read and written across threads. Slots that
    threads spin on sit on cache lines of their own (8 int64 = 64 bytes)."""

    stop: int = 0  # set (by another thread: fit's Ctrl-C handler) to ask the loop to stop
    outcome: int = 1  # how the call ended (OUTCOME_*), written by the loop
    stop_seen: int = 2  # thread 0's reading of ``stop``, which every thread then acts on
    halt: int = 3  # a visit's answer (1: stop after this epoch), shared with the whole team
    visited: int = 4  # when the loop last visited Python (monotonic nanoseconds)
    clock_kind: int = 5  # the clock compiled code reads (lowlevel.clock_source)
    clock_address: int = 6
    clock_parameter: int = 7
    arrived: int = 8  # team barrier: threads arrived
    generation: int = 16  # team barrier: generation, advanced by the last to arrive
    abort: int = 24  # a thread failed: the others leave their barriers
    clock_scratch: int = 32  # two slots of room for the clock
    yield_address: int = 34  # the C library's "yield" (lowlevel.yield_address), or 0
    width: int = 40


CONTROL = ControlSlots()

OUTCOME_FINISHED = 0
OUTCOME_DIVERGED = 1  # a loss or a parameter became NaN or infinite
OUTCOME_INTERRUPTED = 2  # a stop was requested
OUTCOME_STOPPED = 3  # the stopping rule or a visit (a Python callback) ended training after an epoch


_CONTROL = []


def make_control() -> np.ndarray:
    """A fresh ``control`` array, with the clock and the yield call of this process."""
    if not _CONTROL:
        from .lowlevel import clock_source, yield_address

        template = np.zeros(CONTROL.width, dtype=np.int64)
        template[CONTROL.clock_kind], template[CONTROL.clock_address], template[CONTROL.clock_parameter] = (
            clock_source()
        )
        template[CONTROL.yield_address] = yield_address()
        _CONTROL.append(template)
    return _CONTROL[0].copy()


# --------------------------------------------------------------------------- blocks
# A matrix product with fewer multiply-adds than PARALLEL_MIN_MACS is one block; a larger one is
# split into blocks of output rows that threads take in turn, at most MAX_BLOCKS, of at least
# MIN_BLOCK_ROWS rows (four tiles of the micro-kernel). A product that goes to BLAS is split less:
# each BLAS call packs the whole of its other operand again, so BLAS is fastest on few, tall
# blocks (the 'large' workload, 2 threads: 1.06 s a step with blocks of 128 rows, 0.53 s with
# 1024), into blocks of MIN_BLOCK_ROWS_BLAS rows (MIN_BLOCK_ROWS_BLAS_WEIGHTS for the weight
# gradient, whose rows are a layer's inputs), yet into at least BLAS_TEAM_BLOCKS blocks of at
# least MIN_BLOCK_ROWS_BLAS_TEAM rows, so that a team of threads shares a mid-sized product (the 'mid'
# workload, batch 256, 2 threads: 2.5 ms a step in one block, 1.9 in four, 1.7 in two). Elementwise work over the
# parameters is split into
# chunks of at least MIN_CHUNK elements, at most MAX_CHUNKS.
PARALLEL_MIN_MACS = 1 << 15
MIN_BLOCK_ROWS = 16
MIN_BLOCK_ROWS_BLAS = 1024
MIN_BLOCK_ROWS_BLAS_WEIGHTS = 512
BLAS_TEAM_BLOCKS = 2
MIN_BLOCK_ROWS_BLAS_TEAM = 64
MAX_BLOCKS = 16
MIN_CHUNK = 1 << 14
MAX_CHUNKS = 64


@subroutine
def block_count(rows, macs_per_row, blas, blas_rows=MIN_BLOCK_ROWS_BLAS):
    """Blocks of rows for a product producing ``rows`` rows of ``macs_per_row`` multiply-adds;
    ``blas``: whether the product goes to BLAS (then blocks of ``blas_rows`` rows, but at least
    BLAS_TEAM_BLOCKS blocks where they have MIN_BLOCK_ROWS_BLAS_TEAM rows)."""
    if rows * macs_per_row < PARALLEL_MIN_MACS:
        return 1
    if blas:
        team = rows // MIN_BLOCK_ROWS_BLAS_TEAM
        team = BLAS_TEAM_BLOCKS if team > BLAS_TEAM_BLOCKS else team
        blocks = rows // blas_rows
        blocks = team if team > blocks else blocks
    else:
        blocks = rows // MIN_BLOCK_ROWS
    blocks = MAX_BLOCKS if blocks > MAX_BLOCKS else blocks
    return 1 if blocks < 1 else blocks


@subroutine
def layer_blocks(architecture, layer, rows):
    """Blocks of rows of layer ``layer``'s forward product ``a_in @ W`` for ``rows`` rows (the
    gather cuts a batch as layer 0 does, so that a thread multiplies the rows it gathered)."""
    record = architecture.layers[layer]
    n_in, n_out = record["n_in"], record["n_out"]
    return block_count(rows, n_in * n_out, uses_blas(architecture.blas, rows, n_out, n_in))


@subroutine
def weight_blocks(architecture, layer, rows):
    """Blocks of rows of layer ``layer``'s weight gradient (one penalty partial each)."""
    record = architecture.layers[layer]
    n_in, n_out = record["n_in"], record["n_out"]
    return block_count(n_in, rows * n_out, uses_blas(architecture.blas, n_in, n_out, rows), MIN_BLOCK_ROWS_BLAS_WEIGHTS)


@subroutine
def delta_blocks(architecture, layer, rows):
    """Blocks of rows of the local gradient below layer ``layer`` (δ @ Wᵀ; none for layer 0)."""
    if layer == 0:
        return 0
    record = architecture.layers[layer]
    n_in, n_out = record["n_in"], record["n_out"]
    return block_count(rows, n_out * n_in, uses_blas(architecture.blas, rows, n_in, n_out))


@subroutine
def block_start(block, n_blocks, rows):
    return block * rows // n_blocks


@subroutine
def chunk_count(n):
    chunks = n // MIN_CHUNK
    chunks = MAX_CHUNKS if chunks > MAX_CHUNKS else chunks
    return 1 if chunks < 1 else chunks


# --------------------------------------------------------------------------- a pass's arguments
# The forward and backward passes are compiled apart, as C functions called by address
# (``kernels.passes``: Numba optimises a function together with all it calls, so a pass linked
# into each of its callers would be compiled again in each). A caller hands a pass one record
# of its arguments: the arrays by address, the sizes and the scalars, by name.
PASS = np.dtype(
    [
        ("control", np.int64),  # the team's control array (CONTROL.width int64)
        ("layers", np.int64),  # the LAYER records
        ("n_layers", np.int64),
        ("n_params", np.int64),
        ("units", np.int64),
        ("blas", np.int64),  # Architecture.blas
        ("params", np.int64),
        ("grads", np.int64),  # (n_params,), backward only
        ("x", np.int64),  # rows × n_in
        ("y", np.int64),  # rows × n_out (with a loss)
        ("row_scale", np.int64),  # (rows,) (with a loss)
        ("rows", np.int64),
        ("row0", np.int64),  # x's first row in its batch (dropout's masks)
        ("capacity", np.int64),  # rows the buffers below hold
        ("acts", np.int64),  # Buffers, by address
        ("slopes", np.int64),
        ("zs", np.int64),
        ("deltas", np.int64),
        ("losses", np.int64),
        ("penalties", np.int64),
        ("transposed", np.int64),
        ("loss", np.int64),  # Pass
        ("parameter", np.float64),
        ("with_slopes", np.int64),
        ("key", np.int64),
        ("gemm", np.int64),
        ("l1", np.float64),  # the weight penalties (backward)
        ("l2", np.float64),
    ],
    align=True,
)


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


class Buffers(NamedTuple):
    """The buffers of a forward and backward pass over up to ``capacity`` rows (see the module's
    docstring): acts, slopes, deltas (capacity * units,); zs (capacity * n_out of the output
    layer,); losses float64 (MAX_BLOCKS,), the row losses summed per block of rows; penalties
    float64 (n_layers * MAX_BLOCKS,), the weight penalty per layer and block; transposed
    (n_params,), the weights transposed for the backward pass."""

    acts: np.ndarray
    slopes: np.ndarray
    zs: np.ndarray
    deltas: np.ndarray
    losses: np.ndarray
    penalties: np.ndarray
    transposed: np.ndarray


def make_buffers(architecture, rows, dtype) -> Buffers:
    """``Buffers`` for passes over up to ``rows`` rows."""
    n_layers, n_out = len(architecture.layers), int(architecture.layers[-1]["n_out"])
    acts = np.empty(rows * architecture.units, dtype=dtype)
    return Buffers(
        acts,
        np.empty_like(acts),
        np.empty(rows * n_out, dtype=dtype),
        np.empty_like(acts),
        np.zeros(MAX_BLOCKS),
        np.zeros(n_layers * MAX_BLOCKS),
        np.empty(architecture.n_params, dtype=dtype),
    )


# Gradient health (``Settings.track``), per epoch and layer, in ``Work.health``: the weight
# gradient's 2-norm (mean over the epoch's steps, before clipping), the weights' 2-norm at the
# end of the epoch, the epoch's update over the weights (‖W_end − W_start‖ / ‖W_start‖), and for
# sigmoid and tanh layers the share of units (over the epoch's rows) whose derivative is below
# SATURATION_THRESHOLD (NaN for other layers).
HEALTH = np.dtype(
    [("grad_norm", np.float64), ("weight_norm", np.float64), ("update_ratio", np.float64), ("saturation", np.float64)],
    align=True,
)
SATURATION_THRESHOLD = 1e-3
# Blocks of rows per shard whose saturated units are counted as separate tasks.
SATURATION_BLOCKS = 8


class Work(NamedTuple):
    """Buffers of one fit, allocated once (``make_work``); nothing is allocated per step.

    A batch is cut into ``shards`` shards of rows (``shard_plan``), each with its own buffers
    (the rows of the 2-D arrays below, as in ``Buffers``) and gradient; the gradients are added
    in shard order.

    grads : (shards, n_params); order : int64 (n,); keys : uint64 (n,); x_batch : (capacity *
    n_in,); y_batch : (capacity * n_out,); row_scale : (capacity,); acts, slopes, zs, deltas,
    losses, penalties, transposed : per shard, as ``Buffers``; chunks : float64 (MAX_CHUNKS,),
    per chunk of the parameters, a finiteness flag or a squared norm; saved_params, saved_state
    : like params and opt_state (the state at the end of the last completed epoch);
    epoch_losses : float64 (max epochs per call,); scalars : float64 (STEP_SCALARS,), what a
    step exchanges besides the gradient (data-parallel); batch_weights : float64 (steps per
    epoch,), each step's batch weight summed over the ranks (partitioned data; else size 1);
    health : HEALTH records (max epochs per call, n_layers); health_partials : float64
    (MAX_CHUNKS, n_layers), a step's squared weight-gradient sums per chunk and layer;
    health_counts : int64 (shards * SATURATION_BLOCKS, n_layers), a step's saturated units per
    block of rows and layer; health_sums : float64 (4, n_layers), an epoch's running sums
    (``kernels.health``); passes : PASS records (shards,), each shard's passes' arguments.
    """

    grads: np.ndarray
    order: np.ndarray
    keys: np.ndarray
    x_batch: np.ndarray
    y_batch: np.ndarray
    row_scale: np.ndarray
    acts: np.ndarray
    slopes: np.ndarray
    zs: np.ndarray
    deltas: np.ndarray
    losses: np.ndarray
    penalties: np.ndarray
    transposed: np.ndarray
    chunks: np.ndarray
    saved_params: np.ndarray
    saved_state: np.ndarray
    epoch_losses: np.ndarray
    scalars: np.ndarray
    batch_weights: np.ndarray
    health: np.ndarray
    health_partials: np.ndarray
    health_counts: np.ndarray
    health_sums: np.ndarray
    passes: np.ndarray


STEP_SCALARS = 2  # kernels.exchange: the step's loss and stop request


def make_work(architecture, n_rows, capacity, n_slots, epochs, dtype, shards=1, partitioned=False) -> Work:
    """The buffers of a fit over ``n_rows`` rows in batches of at most ``capacity`` rows, cut
    into ``shards`` shards (``partitioned``: data-parallel training on partitioned data), for
    calls of at most ``epochs`` epochs."""
    n_params, n_layers = architecture.n_params, len(architecture.layers)
    shard_capacity = -(-capacity // shards)
    first, last = architecture.layers[0], architecture.layers[-1]

    def per_shard(width, kind=dtype):
        return np.zeros((shards, shard_capacity * max(width, 1)), dtype=kind)

    return Work(
        grads=np.zeros((shards, n_params), dtype=dtype),
        order=np.empty(n_rows, dtype=np.int64),
        keys=np.empty(n_rows, dtype=np.uint64),
        x_batch=np.empty(capacity * int(first["n_in"]), dtype=dtype),
        y_batch=np.empty(capacity * int(last["n_out"]), dtype=dtype),
        row_scale=np.empty(capacity, dtype=dtype),
        acts=per_shard(architecture.units),
        slopes=per_shard(architecture.units),
        zs=per_shard(int(last["n_out"])),
        deltas=per_shard(architecture.units),
        losses=np.zeros((shards, MAX_BLOCKS)),
        penalties=np.zeros((shards, n_layers * MAX_BLOCKS)),
        transposed=np.zeros((shards, n_params), dtype=dtype),
        chunks=np.zeros(MAX_CHUNKS),
        saved_params=np.empty(n_params, dtype=dtype),
        saved_state=np.empty((n_slots, n_params), dtype=dtype),
        epoch_losses=np.zeros(epochs, dtype=np.float64),
        scalars=np.zeros(STEP_SCALARS),
        batch_weights=np.zeros(-(-n_rows // capacity) if partitioned else 1),
        health=np.full((epochs, n_layers), np.nan, dtype=HEALTH),
        health_partials=np.zeros((MAX_CHUNKS, n_layers)),
        health_counts=np.zeros((shards * SATURATION_BLOCKS, n_layers), dtype=np.int64),
        health_sums=np.zeros((4, n_layers)),
        passes=np.zeros(shards, dtype=PASS),
    )


@subroutine
def shard_buffers(work, shard):
    """Shard ``shard``'s buffers of a ``Work``: rows of its 2-D arrays."""
    return Buffers(
        work.acts[shard],
        work.slopes[shard],
        work.zs[shard],
        work.deltas[shard],
        work.losses[shard],
        work.penalties[shard],
        work.transposed[shard],
    )


class Settings(NamedTuple):
    """How to train: every hyper-parameter of the loop (``make_settings`` builds it by keyword).

    loss, optimizer : codes; batch_size : rows per step; shuffle : bool; seed : shuffle seed;
    first_epoch : epochs trained before (selects the shuffle permutations and the dropout masks);
    epochs : epochs this call runs (<= Work.epoch_losses.size); lr : base learning rate; hyper :
    tuple of optim.HYPER_WIDTH floats, the optimizer's hyper-parameters; schedule_kind, schedule :
    learning-rate schedule (``optim.lr_at``; a tuple of SCHEDULE_WIDTH floats); l1, l2 : weight penalties;
    penalty_per_weight :
    each step's penalty divided by the batch's total sample weight (scikit-learn's ``alpha``);
    mean : the loss is averaged over the rows, not summed; shards, solo : how batches are cut
    (``shard_plan``); gemm : the address of BLAS's ``?gemm`` (``products.gemm_address``), 0 when
    the network never calls BLAS; dropout_seed : the dropout masks' seed; loss_parameter : the
    loss's own parameter (Huber's δ); python : the address of the fit's way into Python (a
    ``kernels.train.PythonCall``), 0 for none; forward, backward : the addresses of the compiled
    passes (``kernels.passes.piece_addresses``; ``train_epochs`` sets them).

    Data-parallel training (``fastgd.distributed``): ``ranks`` processes, this one being
    ``rank``, each computing the gradient of its share of every batch and adding them up
    through ``kernels.exchange.CHANNELS[channel]``. With ``partitioned`` False every rank holds
    all the rows, and its share is rows ``[rank·B/ranks, (rank+1)·B/ranks)`` of each batch of B;
    with True each rank holds its own rows, takes batches of ``batch_size`` of them, and the
    batch is the union of the ranks' batches. One process: rank 0 of 1.

    Gradient clipping, after the penalty and the sum over ranks, before the optimizer step
    (0 = off): ``clip_value`` clamps every entry to [−clip_value, clip_value]; then with
    ``clip_norm`` the gradient is scaled by clip_norm / (‖g‖₂ + 1e-6) when that is below 1
    (PyTorch's ``clip_grad_value_`` and ``clip_grad_norm_``). ``track``: record each epoch's
    gradient health per layer in ``Work.health``.
    """

    loss: int
    optimizer: int
    batch_size: int
    shuffle: bool
    seed: int
    first_epoch: int
    epochs: int
    lr: float
    hyper: tuple
    schedule_kind: int
    schedule: tuple
    l1: float
    l2: float
    penalty_per_weight: bool
    mean: bool
    shards: int
    solo: bool
    rank: int
    ranks: int
    partitioned: bool
    channel: int
    clip_norm: float
    clip_value: float
    track: bool
    gemm: int
    dropout_seed: int
    loss_parameter: float
    python: int
    forward: int
    backward: int


def make_settings(
    *,
    loss,
    optimizer,
    batch_size,
    lr,
    hyper,
    schedule_kind=0,
    schedule=None,
    shuffle=False,
    seed=0,
    first_epoch=0,
    epochs=1,
    l1=0.0,
    l2=0.0,
    penalty_per_weight=False,
    shards=1,
    solo=False,
    rank=0,
    ranks=1,
    partitioned=False,
    channel=0,
    clip_norm=0.0,
    clip_value=0.0,
    track=False,
    gemm=0,
    dropout_seed=0,
    loss_parameter=0.0,
    python=0,
) -> Settings:
    """``Settings`` by keyword, every scalar converted to the one type the compiled loop is
    compiled for (a Python int here and a NumPy int there would compile it twice)."""
    from .losses import SPECS
    from .optim import HYPER_WIDTH, SCHEDULE_WIDTH

    vector = np.zeros(HYPER_WIDTH)
    vector[: len(hyper)] = np.asarray(hyper, dtype=np.float64)
    parameters = np.zeros(SCHEDULE_WIDTH)
    if schedule is not None:
        parameters[: len(schedule)] = np.asarray(schedule, dtype=np.float64)
    # (tuples, not arrays: values the compiled loop copies, with no reference count to keep)
    return Settings(
        loss=int(loss),
        optimizer=int(optimizer),
        batch_size=int(batch_size),
        shuffle=bool(shuffle),
        seed=_int64(seed),
        first_epoch=int(first_epoch),
        epochs=int(epochs),
        lr=float(lr),
        hyper=tuple(float(v) for v in vector),
        schedule_kind=int(schedule_kind),
        schedule=tuple(float(v) for v in parameters),
        l1=float(l1),
        l2=float(l2),
        penalty_per_weight=bool(penalty_per_weight),
        mean=bool(SPECS[int(loss)].mean),
        shards=int(shards),
        solo=bool(solo),
        rank=int(rank),
        ranks=int(ranks),
        partitioned=bool(partitioned),
        channel=int(channel),
        clip_norm=float(clip_norm),
        clip_value=float(clip_value),
        track=bool(track),
        gemm=int(gemm),
        dropout_seed=_int64(dropout_seed),
        loss_parameter=float(loss_parameter),
        python=int(python),
        forward=0,
        backward=0,
    )


def _int64(seed) -> int:
    # A seed of up to 64 bits as the int64 with the same bits.
    return int(np.uint64(int(seed) % (1 << 64)).astype(np.int64))


# --------------------------------------------------------------------------- shards and threads
# Shards. A batch can be cut into shards of consecutive rows whose gradients are added in shard
# order (``fit(grad_shards=...)``, and data-parallel training: a shard per process).
def shard_plan(architecture, batch_size, shards=0):
    """How a batch of ``batch_size`` rows is cut: ``(shards, solo)``.

    ``shards`` > 0 asks for that many (``grad_shards``); 0 means one. ``solo``: threads take
    whole shards (when every product of a shard is too small for BLAS) rather than working
    through each shard's products together.
    """
    shards = max(1, int(shards))
    if shards == 1:
        return 1, False
    shard_rows = -(-int(batch_size) // shards)
    return shards, all(
        shard_rows * int(layer["n_in"]) * int(layer["n_out"]) < BLAS_MIN_MACS for layer in architecture.layers
    )


# A step with fewer multiply-adds than this runs on one thread: below it, barriers and data
# crossing cores cost more than the second core gives (measured on 2 cores, Adam, µs/step on one
# thread and on two: 32-64-1 at batch 32 (67k multiply-adds) 8.5 and 11.2; 64-64-10 at 32
# (0.15M) 24 and 27; 32-64-2 at 256 (0.56M) 111 and 104; 64-100-10 float64 at 200 (1.48M) 297
# and 170).
TEAM_MIN_MACS = 1 << 19


def useful_threads(architecture, batch_size, shards, solo, n_threads) -> int:
    """The team size worth starting for a step of ``batch_size`` rows: one thread for small
    steps (``TEAM_MIN_MACS``); in solo mode at most one thread per shard."""
    n_threads = max(1, int(n_threads))
    if solo:
        return min(n_threads, shards)
    macs = int(batch_size) * sum(int(layer["n_in"]) * int(layer["n_out"]) for layer in architecture.layers)
    return n_threads if macs >= TEAM_MIN_MACS else 1
