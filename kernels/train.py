"""The compiled training loop: whole epochs of mini-batch gradient descent in one call, run by
a team of threads (``team``), and the row shuffle it uses.

``train_epochs(state, data, work, settings, control, n_threads)`` is the entry point (its NumPy
twin, ``fastgd.reference.train_epochs``, takes the same bundles). The loop is compiled once per
dtype for every network and setting: it calls the passes, the optimizer's update and the
optional stages by address, from the fit's ``pieces`` table (``kernels.pieces``).

One step, as team phases separated by barriers: gather the batch's rows (blocks of rows), the
forward pass (a phase per layer; the output layer's phase also takes the loss and the output
local gradients), the backward pass (a phase per layer: weight and bias gradients and the local
gradients of the layer below), then the optimizer update over fixed chunks of the flat buffers.
Every thread then adds up the batch loss from the per-block partials in block order and takes
the same decisions.
"""

import numpy as np
from numba import njit, types

from .compat import array_type, call_piece, compile_exact, kernel, monotonic_ns, typeof
from .config import JIT_OPTIONS
from .layout import (
    CONDITION_EPOCH_END,
    CONDITION_EPOCH_START,
    CONDITION_STEP,
    CONTROL_OUTCOME,
    CONTROL_STOP,
    CONTROL_CLOCK,
    CONTROL_HALT,
    CONTROL_STOP_SEEN,
    CONTROL_VISITED,
    EXCHANGE_STEP,
    EXCHANGE_WEIGHTS,
    OUTCOME_DIVERGED,
    OUTCOME_FINISHED,
    OUTCOME_INTERRUPTED,
    OUTCOME_STOPPED,
    PIECE_BACKWARD,
    PIECE_CONDITION,
    PIECE_EXCHANGE,
    PIECE_FINITE,
    PIECE_FORWARD,
    PIECE_GATHER,
    PIECE_MONITOR,
    PIECE_SAVE,
    PIECE_UPDATE,
    PIECE_VALUE,
    PIECE_VISIT,
    STATE_LR_SCALE,
    VISIT_BEAT,
    VISIT_CHANNEL,
    VISIT_EPOCH,
    VISIT_EVERY,
    VISIT_HEARTBEAT,
    VISIT_INTERVAL,
    add_shards,
    chunk_bounds,
    chunk_count,
    layer_blocks,
    make_epoch_end,
)
from .schedules import lr_at
from .team import barrier, first_task, next_task, read_flag, run_team, write_flag

_INLINE = dict(JIT_OPTIONS, inline="always")
_DONE = np.int64(0)

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


@njit(**_INLINE)
def _mix(z):
    # splitmix64's finaliser: a bijection on uint64 with good avalanche.
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@njit(**_INLINE)
def _shuffle(order, keys, seed, epoch):
    base = _mix(np.uint64(seed) + np.uint64(epoch + 1) * _GOLDEN)
    n = order.size
    for i in range(n):
        keys[i] = _mix(base + np.uint64(i + 1) * _GOLDEN)
        order[i] = i
    for i in range(n - 1, 0, -1):
        j = np.int64(keys[i] % np.uint64(i + 1))
        order[i], order[j] = order[j], order[i]


@kernel(**JIT_OPTIONS)
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
    _shuffle(order, keys, seed, epoch)


def train_epochs(state, data, work, settings, control, n_threads, end=None):
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
    end : layout.EpochEnd, optional
        Validation, the stopping rule and visits to Python after each epoch (``OUTCOME_STOPPED``
        when they end training); default: none of them.

    Returns
    -------
    int
        The number of epochs completed (``settings.epochs`` unless the call ended early).
    """
    if end is None:
        end = make_epoch_end(settings.meta, state.params.dtype, max(int(settings.epochs), 1))
    data = readonly(data)
    loop, pieces = bound_loop(state, data, work, settings, end)
    return run_team(loop, (pieces, state, data, work, settings, end), n_threads, control)


@kernel(**JIT_OPTIONS)
def train_loop(tid, n_threads, control, pieces, state, data, work, settings, end):
    """``train_epochs``'s body, run by every thread of the team: the passes, the optimizer's
    update and the optional stages are the pieces at their slots of ``pieces``
    (``layout.PIECE_*``).

    A batch is cut into ``settings.shards`` shards of consecutive rows (``layout.shard_plan``),
    whose gradients are added in shard order: with ``settings.solo`` every thread takes whole
    shards (tiny layers: no barrier between layers, no data crossing cores), else the team
    works through the shards one by one, splitting each layer's products.

    Data-parallel (``settings.ranks`` > 1): this process computes its share of the batch (see
    ``layout.Settings``) as one shard; the exchange piece then sums the gradient, the loss and
    the stop request over the ranks (once per step), and every rank takes the same step with
    the same sums. Only rank 0's shard carries the weight penalty.

    After each completed epoch (checked, saved): the monitor piece (validation and the stopping
    rule, ``end``), then a visit to Python when one is due (``end.visits``); either may end
    training there (``OUTCOME_STOPPED``). Between batches, thread 0 visits Python for a heartbeat
    when ``VISIT_BEAT`` asks (so that a main-thread fit's Ctrl-C handler runs).

    Returns
    -------
    int64
        The number of epochs completed.
    """
    # The bundles are unpacked once, here: helpers take the arrays they use (a bundle passed on
    # is every one of its arrays to reference-count and lower in every helper).
    params, opt_state, step = state
    sample_weight = data.sample_weight
    n, n_params = data.X.shape[0], params.size
    meta, batch_size, shards, ranks = settings.meta, settings.batch_size, settings.shards, settings.ranks
    order, partials, grads, saved_params = work.order, work.partials[0], work.grads, work.saved_params
    is_mean = settings.mean
    # The penalty goes with shard 0 of rank 0 only, so that it is added once.
    l1, l2 = (settings.l1, settings.l2) if settings.rank == 0 else (0.0, 0.0)
    stage, exchange, n_chunks = pieces[PIECE_CONDITION], pieces[PIECE_EXCHANGE], chunk_count(n_params)
    batch = (order, work.x_batch, work.y_batch, work.row_scale)
    buffers = (work.acts, work.z_out, work.deltas, work.partials, work.transposed, grads)
    per_weight = settings.penalty_per_weight
    state_flat, saved_state = opt_state.reshape(opt_state.size), work.saved_state.reshape(opt_state.size)
    total_weight = 0.0
    for i in range(n):
        total_weight += sample_weight[i]
    call_piece(_DONE, pieces[PIECE_SAVE], (tid, n_threads, control, saved_params, params, saved_state, state_flat))
    saved_step = current_step = step[0]
    outcome, completed = OUTCOME_FINISHED, 0
    visit, beat = pieces[PIECE_VISIT], end.visits[VISIT_BEAT] != 0 and pieces[PIECE_VISIT] != 0
    if tid == 0:
        control[CONTROL_VISITED] = monotonic_ns(control, CONTROL_CLOCK)
    for e in range(settings.epochs):
        if tid == 0:
            _epoch_order(order, work.keys, settings.shuffle, settings.seed, settings.first_epoch + e)
        if settings.partitioned:
            total_weight = call_piece(0.0, exchange, (np.int64(EXCHANGE_WEIGHTS), tid, n_threads, control, settings.channel, grads,
                                                      work.batch_weights, sample_weight, order, batch_size, 0.0))  # fmt: skip
        barrier(control, n_threads)
        _condition(stage, CONDITION_EPOCH_START, tid, n_threads, control, params, meta, work, e, 0, 0, settings)
        epoch_loss = 0.0
        for start in range(0, n, batch_size):
            rows = batch_size if batch_size < n - start else n - start
            if tid == 0:
                if beat and monotonic_ns(control, CONTROL_CLOCK) - control[CONTROL_VISITED] >= end.visits[VISIT_INTERVAL]:
                    # (the others wait at the gather's barrier meanwhile)
                    call_piece(_DONE, visit, (end.visits[VISIT_CHANNEL], np.int64(VISIT_HEARTBEAT), np.int64(completed)))
                    control[CONTROL_VISITED] = monotonic_ns(control, CONTROL_CLOCK)
                write_flag(control, CONTROL_STOP_SEEN, read_flag(control, CONTROL_STOP))
            if settings.partitioned:
                batch_weight, lo, hi = work.batch_weights[start // batch_size], 0, rows
            else:
                batch_weight = 0.0
                for r in range(rows):
                    batch_weight += sample_weight[order[start + r]]
                lo, hi = settings.rank * rows // ranks, (settings.rank + 1) * rows // ranks
            local = hi - lo
            inv = params.dtype.type(1.0 / batch_weight) if is_mean else params.dtype.type(1.0)
            # scikit-learn's alpha: the penalty per unit of the batch's sample weight.
            l1_step, l2_step = (l1 / batch_weight, l2 / batch_weight) if per_weight else (l1, l2)
            options = (settings.solo, shards, is_mean, l1_step, l2_step)
            _gradient(tid, n_threads, control, pieces, params, meta, data, batch, buffers, options, start, lo, local, inv)
            value = 0.0
            for shard in range(shards):
                shard_rows = lo + (shard + 1) * local // shards - (lo + shard * local // shards)
                value += call_piece(0.0, pieces[PIECE_VALUE], (meta, shard_rows, work.partials[shard], l1_step if shard == 0 else 0.0,
                                                              l2_step if shard == 0 else 0.0))  # fmt: skip
            if ranks > 1:
                value = call_piece(0.0, exchange, (np.int64(EXCHANGE_STEP), tid, n_threads, control, settings.channel, grads, work.scalars,
                                                   sample_weight, order, batch_size, value))  # fmt: skip
            if read_flag(control, CONTROL_STOP_SEEN) != 0:
                outcome = OUTCOME_INTERRUPTED
                break
            if not np.isfinite(value):
                outcome = OUTCOME_DIVERGED
                break
            epoch_loss += value * batch_weight if is_mean else value
            current_step += 1
            # (the stopping rule's factor: scikit-learn's adaptive rate, 1 otherwise)
            lr = lr_at(settings.schedule_kind, settings.lr, current_step, settings.first_epoch + e, settings.schedule) * end.state[STATE_LR_SCALE]
            # With a condition stage: the summed, clipped gradient in grads (its health recorded).
            _condition(stage, CONDITION_STEP, tid, n_threads, control, params, meta, work, e, lo, local, settings)
            task = first_task(control, tid, n_threads)
            while task < n_chunks:
                first, stop = chunk_bounds(task, n_chunks, n_params)
                if shards > 1 and stage == 0:
                    add_shards(grads, shards, first, stop)
                call_piece(_DONE, pieces[PIECE_UPDATE], (params, grads[0], opt_state, current_step, lr, settings.hyper, first, stop))
                task = next_task(control, n_threads, task)
            barrier(control, n_threads)
        if outcome != OUTCOME_FINISHED:
            break
        epoch_loss = epoch_loss / total_weight if is_mean else epoch_loss
        if not (call_piece(True, pieces[PIECE_FINITE], (tid, n_threads, control, params, state_flat, partials)) and np.isfinite(epoch_loss)):
            outcome = OUTCOME_DIVERGED
            break
        if tid == 0:
            work.epoch_losses[e] = epoch_loss
            step[0] = current_step
        # The epoch's gradient health reads saved_params (the epoch's start) before _save.
        _condition(stage, CONDITION_EPOCH_END, tid, n_threads, control, params, meta, work, e, 0, 0, settings)
        completed += 1
        call_piece(_DONE, pieces[PIECE_SAVE], (tid, n_threads, control, saved_params, params, saved_state, state_flat))
        saved_step = current_step
        stop = _DONE
        if pieces[PIECE_MONITOR] != 0:
            stop = call_piece(_DONE, pieces[PIECE_MONITOR], (tid, n_threads, control, pieces, params, meta, end, np.int64(e), epoch_loss))
        if visit != 0:
            stop = _visit(tid, n_threads, control, visit, end.visits, completed, stop)
        if stop != 0:
            outcome = OUTCOME_STOPPED
            break
    if outcome != OUTCOME_FINISHED and outcome != OUTCOME_STOPPED:
        barrier(control, n_threads)
        call_piece(_DONE, pieces[PIECE_SAVE], (tid, n_threads, control, params, saved_params, state_flat, saved_state))
    if tid == 0:
        step[0] = saved_step
        control[CONTROL_OUTCOME] = outcome
    return np.int64(completed)


@njit(**_INLINE)
def _condition(stage, mode, tid, n_threads, control, params, meta, work, e, lo, local, settings):
    # The condition stage's call at one of its points (none without the stage); every thread
    # has left it (a barrier) when this returns.
    if stage != 0:
        call_piece(_DONE, stage, (np.int64(mode), tid, n_threads, control, params, meta, work, np.int64(e), np.int64(lo), np.int64(local),
                                  settings))  # fmt: skip
        if mode == CONDITION_EPOCH_END:
            barrier(control, n_threads)


@njit(**_INLINE)
def _visit(tid, n_threads, control, visit, visits, completed, stop):
    # After an epoch: thread 0 visits Python when one is due (every VISIT_EVERY epochs, when
    # VISIT_INTERVAL has passed, or when training stops here), the others waiting; every thread
    # returns whether to stop (the rule's ``stop``, or the visit's answer).
    barrier(control, n_threads)
    if tid == 0:
        every, interval = visits[VISIT_EVERY], visits[VISIT_INTERVAL]
        due = stop != 0 or (every > 0 and completed % every == 0)
        due = due or (interval > 0 and monotonic_ns(control, CONTROL_CLOCK) - control[CONTROL_VISITED] >= interval)
        halt = np.int64(0)
        if due:
            halt = call_piece(_DONE, visit, (visits[VISIT_CHANNEL], np.int64(VISIT_EPOCH), np.int64(completed)))
            control[CONTROL_VISITED] = monotonic_ns(control, CONTROL_CLOCK)
        control[CONTROL_HALT] = halt
    barrier(control, n_threads)
    return np.int64(1) if stop != 0 or control[CONTROL_HALT] != 0 else _DONE


@njit(**_INLINE)
def _epoch_order(order, keys, shuffle, seed, epoch):
    # The epoch's row order (thread 0's).
    if shuffle:
        _shuffle(order, keys, seed, epoch)
    else:
        for i in range(order.size):
            order[i] = i


@njit(**_INLINE)
def _gradient(tid, n_threads, control, pieces, params, meta, data, batch, buffers, options, start, lo, local, inv):
    # Gather rows [lo, lo + local) of the batch starting at ``start`` and compute their gradient,
    # shard by shard, into the shards' gradients (shard 0 with the penalty). ``batch``: (order,
    # x_batch, y_batch, row_scale); ``buffers``: the shards' (acts, z_out, deltas, partials,
    # transposed, grads); ``options``: (solo, shards, is_mean, l1, l2). Solo: each thread takes
    # whole shards (gathers and computes them alone, no barrier between layers); else the team
    # gathers the rows in blocks, then works through the shards one by one.
    X, Y, sample_weight = data
    order, x_batch, y_batch, row_scale = batch
    acts, z_out, deltas, partials, transposed, grads = buffers
    solo, shards, is_mean, l1, l2 = options
    if not solo:
        # As layer 0's product is cut, so that each thread multiplies the rows it gathered.
        n_blocks = layer_blocks(meta, 0, local)
        task = first_task(control, tid, n_threads)
        while task < n_blocks:
            call_piece(_DONE, pieces[PIECE_GATHER], (X, Y, sample_weight, order, x_batch, y_batch, row_scale, start,
                                                     lo + task * local // n_blocks, lo + (task + 1) * local // n_blocks, inv, is_mean))  # fmt: skip
            task = next_task(control, n_threads, task)
        barrier(control, n_threads)
    member, team = (np.int64(0), np.int64(1)) if solo else (tid, n_threads)
    n_in, n_out = meta[0, 0], meta[meta.shape[0] - 1, 1]
    for shard in range(tid if solo else 0, shards, n_threads if solo else 1):
        first, stop = lo + shard * local // shards, lo + (shard + 1) * local // shards
        if solo:
            call_piece(_DONE, pieces[PIECE_GATHER], (X, Y, sample_weight, order, x_batch, y_batch, row_scale, start, first, stop, inv,
                                                     is_mean))  # fmt: skip
        x, rows = x_batch[first * n_in : stop * n_in], stop - first
        call_piece(_DONE, pieces[PIECE_FORWARD], (member, team, control, pieces, params, meta, x, rows, y_batch[first * n_out : stop * n_out],
                                                  row_scale[first:stop], acts[shard], z_out[shard], deltas[shard], partials[shard],
                                                  transposed[shard], True))  # fmt: skip
        call_piece(_DONE, pieces[PIECE_BACKWARD], (member, team, control, pieces, params, grads[shard], meta, x, rows, acts[shard], deltas[shard],
                                                   partials[shard], transposed[shard], l1 if shard == 0 else 0.0, l2 if shard == 0 else 0.0))  # fmt: skip
    if solo:
        barrier(control, n_threads)


_LOOPS = {}


def readonly(data):
    """``data`` with read-only views of its arrays: the loop is compiled for read-only inputs
    (it never writes them), so that read-only arrays (memory maps, broadcasts) and writable ones
    share one compiled loop."""
    views = []
    for array in data:
        if array.flags.writeable:
            array = array.view()
            array.setflags(write=False)
        views.append(array)
    return type(data)(*views)


def loop_types(state, data, work, settings, end) -> tuple:
    """The argument types ``train_loop`` is compiled for, given a fit's bundles (``data``
    through ``readonly``)."""
    return (types.int64, types.int64, array_type(np.int64), array_type(np.int64), typeof(state), typeof(data), typeof(work),
            typeof(settings), typeof(end))  # fmt: skip


def bound_loop(state, data, work, settings, end):
    """``train_loop`` compiled for these bundles' types (its inputs read-only: ``readonly``),
    and the fit's ``pieces`` table, with its optional stages bound: clipping and gradient
    health (``settings``), validation and the stopping rule, and visits to Python (``end``).

    The loop is compiled once per dtype for every network and setting; the pieces are compiled
    once per dtype each (``kernels.build`` compiles what is missing, with a helper process
    beside this one when there is much).

    Returns
    -------
    (dispatcher, pieces)
    """
    from . import build
    from . import pieces as piece_table

    dtype = state.params.dtype
    optimizer = int(settings.optimizer)
    if optimizer not in piece_table.optim.SPECS:
        raise ValueError(f"optimizer must be an optimizer code ({sorted(piece_table.optim.SPECS)}), got {settings.optimizer!r}")
    key = loop_types(state, readonly(data), work, settings, end)
    stages = piece_table.stages_of(settings, end)
    if key not in _LOOPS:
        names = piece_table.needed(settings.meta, settings.loss, optimizer, dtype, settings.ranks > 1)
        names += [stage for stage in stages if stage in piece_table.PIECES]
        build.prepare(dtype, names, loop=True, stages=[stage for stage in stages if stage not in piece_table.PIECES])
        compile_exact(train_loop, key)
        _LOOPS[key] = True
    pieces = piece_table.table(settings.meta, settings.loss, optimizer, dtype, settings.ranks > 1).copy()
    piece_table.bind_stages(pieces, stages, dtype, typeof(work), typeof(settings), typeof(end))
    return train_loop, pieces
