"""The compiled training loop: whole epochs of mini-batch gradient descent in one call, run by
a team of threads (``team``), and the row shuffle it uses.

``train_epochs(state, data, work, settings, control, n_threads)`` is the entry point (its NumPy
twin, ``fastgd.reference.train_epochs``, takes the same bundles). It picks the loop compiled for
the fit's optimizer (``training_loop``) and runs it on ``n_threads`` threads.

One step, as team phases separated by barriers: gather the batch's rows (blocks of rows), the
forward pass (a phase per layer; the output layer's phase also takes the loss and the output
local gradients), the backward pass (a phase per layer: weight and bias gradients and the local
gradients of the layer below), then the optimizer update over fixed chunks of the flat buffers.
Every thread then adds up the batch loss from the per-block partials in block order and takes
the same decisions.
"""

import types as pytypes

import numpy as np
from numba import njit

from .compat import kernel
from .config import JIT_OPTIONS
from .layout import (
    CONTROL_OUTCOME,
    CONTROL_STOP,
    CONTROL_STOP_SEEN,
    MAX_BLOCKS,
    MAX_CHUNKS,
    META_N_IN,
    META_N_OUT,
    OUTCOME_DIVERGED,
    OUTCOME_FINISHED,
    OUTCOME_INTERRUPTED,
    block_count,
    block_start,
    chunk_count,
)
from .losses import SSE
from .optim import OPT_SGD, UPDATES
from .passes import PENALTY_PARTIALS, backward_pass, batch_value, forward_pass
from .schedules import scheduled_lr
from .team import barrier, first_task, next_task, read_flag, run_team, write_flag

_INLINE = dict(JIT_OPTIONS, inline="always")

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)

# Where the per-chunk finiteness flags go in ``partials``.
FLAG_PARTIALS = PENALTY_PARTIALS  # reused: the penalty partials are dead at the end of an epoch


@njit(**_INLINE)
def _mix(z):
    # splitmix64's finaliser: a bijection on uint64 with good avalanche.
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@njit(**JIT_OPTIONS)
def shuffle_order(order, keys, seed, epoch):
    """Write into ``order`` the row permutation used in ``epoch`` (0-based, counted over all fits).

    A Fisher-Yates shuffle whose random draws are counter-based: for i = n−1 … 1, row i swaps with
    row ``keys[i] mod (i + 1)``, where ``keys[i] = mix(mix(seed + (epoch + 1)·φ) + (i + 1)·φ)``
    (splitmix64). The draws depend only on (seed, epoch, i), so the permutation is the same in
    both backends and on any thread count, and no sort is needed.

    Parameters
    ----------
    order : ndarray of int64, shape (n,)
    keys : ndarray of uint64, shape (n,)
        Work buffer.
    seed, epoch : int
    """
    base = _mix(np.uint64(seed) + np.uint64(epoch + 1) * _GOLDEN)
    n = order.size
    for i in range(n):
        keys[i] = _mix(base + np.uint64(i + 1) * _GOLDEN)
        order[i] = i
    for i in range(n - 1, 0, -1):
        j = np.int64(keys[i] % np.uint64(i + 1))
        order[i], order[j] = order[j], order[i]


@njit(**_INLINE)
def _chunk(task, n_chunks, n):
    return block_start(task, n_chunks, n), block_start(task + 1, n_chunks, n)


@njit(**JIT_OPTIONS)
def _copy_chunks(tid, n_threads, control, destination, source):
    # destination[...] = source (same shape, contiguous) in chunks, as a phase.
    to, frm = destination.reshape(destination.size), source.reshape(source.size)
    n_chunks = chunk_count(frm.size)
    task = first_task(control, n_threads)
    while task < n_chunks:
        first, stop = _chunk(task, n_chunks, frm.size)
        for i in range(first, stop):
            to[i] = frm[i]
        task = next_task(control, n_threads, task)


@njit(**JIT_OPTIONS)
def _finite_chunks(tid, n_threads, control, params, opt_state, partials):
    # Per chunk: are its parameters and state entries all finite? (1.0/0.0 into partials.)
    n = params.size
    n_chunks = chunk_count(n)
    task = first_task(control, n_threads)
    while task < n_chunks:
        first, stop = _chunk(task, n_chunks, n)
        total = params.dtype.type(0.0)
        for i in range(first, stop):
            total += params[i] * params.dtype.type(0.0)  # 0 for finite values, NaN otherwise
        for k in range(opt_state.shape[0]):
            row = opt_state[k]
            for i in range(first, stop):
                total += row[i] * params.dtype.type(0.0)
        partials[FLAG_PARTIALS + task] = 1.0 if total == 0 else 0.0
        task = next_task(control, n_threads, task)


def train_epochs(state, data, work, settings, control, n_threads):
    """Run ``settings.epochs`` whole epochs of mini-batch gradient descent in one call.

    Each epoch: a row order (``shuffle_order`` when shuffling, else 0..n−1), then for each batch
    of ``batch_size`` consecutive rows of that order (the last one may be shorter): gather,
    forward, backprop, one optimizer step over the flat parameter buffer.

    The call ends early, with the parameters, optimizer state and step counter put back to how
    they were at the end of the last completed epoch (or at the call's start), when

    * a batch loss, or after an epoch a parameter or optimizer-state entry, is NaN or infinite
      (``control[CONTROL_OUTCOME] = OUTCOME_DIVERGED``), or
    * ``control[CONTROL_STOP]`` is set, by another thread, say (checked before every batch;
      ``OUTCOME_INTERRUPTED``).

    Otherwise ``control[CONTROL_OUTCOME] = OUTCOME_FINISHED``.

    Parameters
    ----------
    state : layout.TrainState
        Updated in place.
    data : layout.Data
    work : layout.Work
        ``work.epoch_losses[:settings.epochs]`` receives each completed epoch's training loss:
        the weighted mean of the batch losses over the epoch (for sse, their sum), each taken
        before its batch's update.
    settings : layout.Settings
    control : ndarray of int64, shape (CONTROL_WIDTH,)
        Stop request (read), outcome (written) and the team's synchronisation slots.
    n_threads : int
        Threads of the team.

    Returns
    -------
    int
        The number of epochs completed (``settings.epochs`` unless the call ended early).
    """
    loop = training_loop(settings.optimizer)
    return run_team(loop, (state, data, work, settings), n_threads, control)


# The loop's optimizer update, named here and rebound in each specialisation (training_loop).
optimizer_update = UPDATES[OPT_SGD]


def _train_loop(tid, n_threads, control, state, data, work, settings):
    # ``train_epochs``'s body, compiled once per optimizer by ``training_loop``.
    params, opt_state, step = state
    X, Y, sample_weight = data
    meta = settings.meta
    n, n_in = X.shape
    n_out = Y.shape[1]
    t = params.dtype.type
    is_mean = settings.loss != SSE
    batch_size = settings.batch_size
    partials = work.partials
    n_params = params.size
    total_weight = 0.0
    for i in range(n):
        total_weight += sample_weight[i]
    _copy_chunks(tid, n_threads, control, work.saved_params, params)
    _copy_chunks(tid, n_threads, control, work.saved_state, opt_state)
    saved_step = step[0]
    current_step = step[0]
    barrier(control, n_threads)
    outcome = OUTCOME_FINISHED
    completed = 0
    for e in range(settings.epochs):
        if tid == 0:
            order = work.order
            if settings.shuffle:
                shuffle_order(order, work.keys, settings.seed, settings.first_epoch + e)
            else:
                for i in range(n):
                    order[i] = i
        barrier(control, n_threads)
        epoch_loss = 0.0
        for start in range(0, n, batch_size):
            rows = min(batch_size, n - start)
            if tid == 0:
                write_flag(control, CONTROL_STOP_SEEN, read_flag(control, CONTROL_STOP))
            # Gather the batch (blocks of rows) and its row scales.
            batch_weight = 0.0
            for r in range(rows):
                batch_weight += sample_weight[work.order[start + r]]
            inv = t(1.0 / batch_weight) if is_mean else t(1.0)
            n_blocks = block_count(rows, (n_in + n_out) * 16)
            task = first_task(control, n_threads)
            while task < n_blocks:
                first, stop = block_start(task, n_blocks, rows), block_start(task + 1, n_blocks, rows)
                for r in range(first, stop):
                    i = work.order[start + r]
                    for k in range(n_in):
                        work.x_batch[r * n_in + k] = X[i, k]
                    for k in range(n_out):
                        work.y_batch[r * n_out + k] = Y[i, k]
                    work.row_scale[r] = sample_weight[i] * inv if is_mean else sample_weight[i]
                task = next_task(control, n_threads, task)
            barrier(control, n_threads)
            if read_flag(control, CONTROL_STOP_SEEN) != 0:
                outcome = OUTCOME_INTERRUPTED
                break
            forward_pass(tid, n_threads, control, params, meta, work.x_batch, rows, work.y_batch, work.row_scale,
                         work.acts, work.z_out, work.deltas, partials, settings.loss, np.bool_(True))  # fmt: skip
            backward_pass(tid, n_threads, control, params, work.grads, meta, work.x_batch, rows, work.acts, work.deltas,
                          partials, settings.l1, settings.l2)  # fmt: skip
            value = batch_value(meta, rows, partials, settings.l1, settings.l2)
            if not np.isfinite(value):
                outcome = OUTCOME_DIVERGED
                break
            epoch_loss += value * batch_weight if is_mean else value
            current_step += 1
            lr = scheduled_lr(settings.schedule_kind, settings.lr, current_step, settings.schedule)
            n_chunks = chunk_count(n_params)
            task = first_task(control, n_threads)
            while task < n_chunks:
                first, stop = _chunk(task, n_chunks, n_params)
                optimizer_update(params, work.grads, opt_state, current_step, lr, settings.hyper, first, stop)
                task = next_task(control, n_threads, task)
            barrier(control, n_threads)
        if outcome != OUTCOME_FINISHED:
            break
        epoch_loss = epoch_loss / total_weight if is_mean else epoch_loss
        _finite_chunks(tid, n_threads, control, params, opt_state, partials)
        barrier(control, n_threads)
        finite = np.isfinite(epoch_loss)
        for chunk in range(chunk_count(n_params)):
            finite = finite and partials[FLAG_PARTIALS + chunk] != 0.0
        if not finite:
            outcome = OUTCOME_DIVERGED
            break
        if tid == 0:
            work.epoch_losses[e] = epoch_loss
            step[0] = current_step
        completed += 1
        _copy_chunks(tid, n_threads, control, work.saved_params, params)
        _copy_chunks(tid, n_threads, control, work.saved_state, opt_state)
        saved_step = current_step
        barrier(control, n_threads)
    if outcome != OUTCOME_FINISHED:
        barrier(control, n_threads)
        _copy_chunks(tid, n_threads, control, params, work.saved_params)
        _copy_chunks(tid, n_threads, control, opt_state, work.saved_state)
        barrier(control, n_threads)
    if tid == 0:
        step[0] = saved_step
        control[CONTROL_OUTCOME] = outcome
    return completed


_LOOPS = {}


def training_loop(optimizer):
    """The compiled loop behind ``train_epochs`` for one optimizer.

    Each specialisation is ``_train_loop``'s code with ``optimizer_update`` bound to that
    optimizer's update (``optim.UPDATES``) and a name of its own, ``train_loop_<optimizer>``, so
    that it is cached on disk under that name and a fit compiles only the optimizer it uses (a
    jitted function passed as an argument would miss the cache in every new process: Numba keys
    it by object identity).

    Returns
    -------
    numba dispatcher
        Called as ``loop(tid, n_threads, control, state, data, work, settings)``.
    """
    key = int(optimizer)
    loop = _LOOPS.get(key)
    if loop is None:
        update = UPDATES.get(key)
        if update is None:
            raise ValueError(f"optimizer must be an optimizer code ({sorted(UPDATES)}), got {optimizer!r}")
        namespace = dict(_train_loop.__globals__)
        namespace["optimizer_update"] = update
        name = f"train_loop_{update.__name__.removesuffix('_update')}"
        function = pytypes.FunctionType(_train_loop.__code__, namespace, name)
        function.__qualname__ = name
        function.__module__ = _train_loop.__module__
        loop = _LOOPS.setdefault(key, kernel(**JIT_OPTIONS)(function))
    return loop
