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

import numpy as np
from numba import njit, types

from .compat import array_type, compile_exact, function_pointer, kernel, typeof, unsigned
from .config import JIT_OPTIONS
from .layout import (
    CONTROL_OUTCOME,
    CONTROL_STOP,
    CONTROL_STOP_SEEN,
    MAX_BLOCKS,
    MAX_CHUNKS,
    HEALTH_GRAD_NORM,
    HEALTH_SATURATION,
    HEALTH_UPDATE_RATIO,
    HEALTH_WEIGHT_NORM,
    META_ACTIVATION,
    META_N_IN,
    META_N_OUT,
    META_UNITS_BEFORE,
    META_W_OFFSET,
    OUTCOME_DIVERGED,
    OUTCOME_FINISHED,
    OUTCOME_INTERRUPTED,
    SATURATION_BLOCKS,
    SATURATION_THRESHOLD,
    block_count,
    block_start,
    chunk_count,
)
from .activations import SIGMOID, TANH
from .exchange import EXCHANGE_STEP, EXCHANGE_WEIGHTS, SCALAR_LOSS, SCALAR_STOP, no_exchange
from .exchange import exchange as exchange_kernel
from .losses import SSE
from .optim import UPDATES
from .passes import PENALTY_PARTIALS, backward_kernel, batch_value, configuration, forward_kernel
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
def _copy_chunks(tid, n_threads, control, destination, source, n):
    # destination[k·n + i] = source[k·n + i] for every row k of the flat buffers, in chunks of i
    # (the chunks of the optimizer update), as a phase.
    n_chunks = chunk_count(n)
    task = first_task(control, tid, n_threads)
    while task < n_chunks:
        first, stop = unsigned(task * n // n_chunks), unsigned((task + 1) * n // n_chunks)
        for row in range(unsigned(0), unsigned(source.size), unsigned(n)):
            for i in range(row + first, row + stop):
                destination[i] = source[i]
        task = next_task(control, n_threads, task)


@njit(**JIT_OPTIONS)
def _finite_chunks(tid, n_threads, control, params, state, partials):
    # Per chunk: are its parameters and state entries all finite? (1.0/0.0 into partials.)
    # ``v * 0`` is 0 for finite v and NaN otherwise (the fast-math flags exclude nnan/ninf,
    # without which LLVM would fold it to 0).
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
    loop, stages = bound_loop(state, data, work, settings)
    return run_team(loop, (*stages, state, data, work, settings), n_threads, control)


@kernel(**JIT_OPTIONS)
def train_loop(tid, n_threads, control, forward, backward, update, exchange, condition, state, data, work, settings):
    """``train_epochs``'s body, run by every thread of the team; ``forward``, ``backward``,
    ``update`` and ``exchange`` are ``passes.forward_pass``, ``passes.backward_pass``, the
    optimizer's update and ``kernels.exchange.exchange`` (or ``no_exchange``), called through
    function pointers (``bound_loop``).

    A batch is cut into ``settings.shards`` shards of consecutive rows (``layout.shard_plan``),
    whose gradients are added in shard order: with ``settings.solo`` every thread takes whole
    shards (tiny layers: no barrier between layers, no data crossing cores), else the team
    works through the shards one by one, splitting each layer's products.

    Data-parallel (``settings.ranks`` > 1): this process computes its share of the batch (see
    ``layout.Settings``) as one shard; thread 0 then exchanges the gradient, the loss and the
    stop request with the other ranks (one ``EXCHANGE_STEP`` per step), and every rank takes
    the same step with the same sums. Only rank 0's shard carries the weight penalty.
    """
    params, opt_state, step = state
    X, Y, sample_weight = data
    meta = settings.meta
    n, n_in = X.shape
    n_out = Y.shape[1]
    t = params.dtype.type
    is_mean = settings.loss != SSE
    batch_size, shards, solo = settings.batch_size, settings.shards, settings.solo
    rank, ranks, partitioned = settings.rank, settings.ranks, settings.partitioned
    distributed = ranks > 1
    partials = work.partials[0]  # shard 0's: the penalty and the epoch's finiteness flags
    order, x_batch, y_batch, row_scale = work.order, work.x_batch, work.y_batch, work.row_scale
    scalars, batch_weights = work.scalars, work.batch_weights
    # The penalty goes with shard 0 of rank 0 only, so that it is added once.
    l1, l2 = (settings.l1, settings.l2) if rank == 0 else (0.0, 0.0)
    grads = work.grads[0]
    n_params = params.size
    n_chunks = chunk_count(n_params)
    total_weight = 0.0
    for i in range(n):
        total_weight += sample_weight[i]
    # Clipping and gradient health run in the ``condition`` stage, bound only when asked for
    # (``no_condition`` otherwise): a fit that uses neither compiles none of their code.
    conditioned = settings.track or settings.clip_norm > 0.0 or settings.clip_value > 0.0
    state_flat, saved_state = opt_state.reshape(opt_state.size), work.saved_state.reshape(opt_state.size)
    _copy_chunks(tid, n_threads, control, work.saved_params, params, n_params)
    _copy_chunks(tid, n_threads, control, saved_state, state_flat, n_params)
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
            if partitioned:
                _local_batch_weights(sample_weight, order, n, batch_size, batch_weights)
                exchange(settings.channel, np.int64(EXCHANGE_WEIGHTS), grads, batch_weights)
        barrier(control, n_threads)
        if partitioned:
            total_weight = 0.0
            for k in range((n + batch_size - 1) // batch_size):
                total_weight += batch_weights[k]
        epoch_loss = 0.0
        if conditioned:
            condition(np.int64(CONDITION_EPOCH_START), tid, n_threads, control, params, work.saved_params, work.grads, work.acts,
                      meta, partials, work.health_partials, work.health_counts, work.health_sums, work.health[0], np.int64(0),
                      np.int64(0), settings.clip_norm, settings.clip_value, settings.track)  # fmt: skip
        for start in range(0, n, batch_size):
            rows = batch_size if batch_size < n - start else n - start
            if tid == 0:
                write_flag(control, CONTROL_STOP_SEEN, read_flag(control, CONTROL_STOP))
            if partitioned:
                batch_weight = batch_weights[start // batch_size]
                lo, hi = 0, rows
            else:
                batch_weight = 0.0
                for r in range(rows):
                    batch_weight += sample_weight[work.order[start + r]]
                lo, hi = rank * rows // ranks, (rank + 1) * rows // ranks
            local = hi - lo
            inv = t(1.0 / batch_weight) if is_mean else t(1.0)
            if solo:
                # Each thread its own shards: gather, forward and backward with no barrier.
                shard = tid
                while shard < shards:
                    first, stop = lo + shard * local // shards, lo + (shard + 1) * local // shards
                    _gather(X, Y, sample_weight, order, x_batch, y_batch, row_scale, start, first, stop, inv, is_mean)
                    _shard_passes(np.int64(0), np.int64(1), control, forward, backward, params, meta, x_batch, y_batch, row_scale,
                                  work.acts[shard], work.z_out[shard], work.deltas[shard], work.partials[shard],
                                  work.transposed[shard], work.grads[shard], first, stop, l1 if shard == 0 else 0.0,
                                  l2 if shard == 0 else 0.0)  # fmt: skip
                    shard += n_threads
                barrier(control, n_threads)
            else:
                n_blocks = block_count(local, (n_in + n_out) * 16)
                task = first_task(control, tid, n_threads)
                while task < n_blocks:
                    _gather(X, Y, sample_weight, order, x_batch, y_batch, row_scale, start, lo + task * local // n_blocks,
                            lo + (task + 1) * local // n_blocks, inv, is_mean)  # fmt: skip
                    task = next_task(control, n_threads, task)
                barrier(control, n_threads)
                for shard in range(shards):
                    first, stop = lo + shard * local // shards, lo + (shard + 1) * local // shards
                    _shard_passes(tid, n_threads, control, forward, backward, params, meta, x_batch, y_batch, row_scale,
                                  work.acts[shard], work.z_out[shard], work.deltas[shard], work.partials[shard],
                                  work.transposed[shard], work.grads[shard], first, stop, l1 if shard == 0 else 0.0,
                                  l2 if shard == 0 else 0.0)  # fmt: skip
            value = 0.0
            for shard in range(shards):
                shard_rows = lo + (shard + 1) * local // shards - (lo + shard * local // shards)
                value += batch_value(meta, shard_rows, work.partials[shard], l1 if shard == 0 else 0.0, l2 if shard == 0 else 0.0)
            if distributed:
                # One exchange per step: the gradient, the loss and the stop request, summed
                # over the ranks in rank order; every rank then decides alike.
                barrier(control, n_threads)
                if tid == 0:
                    scalars[SCALAR_LOSS] = value
                    scalars[SCALAR_STOP] = read_flag(control, CONTROL_STOP_SEEN)
                    exchange(settings.channel, np.int64(EXCHANGE_STEP), grads, scalars)
                    write_flag(control, CONTROL_STOP_SEEN, 1 if scalars[SCALAR_STOP] != 0.0 else 0)
                barrier(control, n_threads)
                value = scalars[SCALAR_LOSS]
            if read_flag(control, CONTROL_STOP_SEEN) != 0:
                outcome = OUTCOME_INTERRUPTED
                break
            if not np.isfinite(value):
                outcome = OUTCOME_DIVERGED
                break
            epoch_loss += value * batch_weight if is_mean else value
            current_step += 1
            lr = scheduled_lr(settings.schedule_kind, settings.lr, current_step, settings.schedule)
            if conditioned:
                # The summed, clipped gradient in grads (and its health recorded); then the update.
                condition(np.int64(CONDITION_STEP), tid, n_threads, control, params, work.saved_params, work.grads, work.acts,
                          meta, partials, work.health_partials, work.health_counts, work.health_sums, work.health[0], lo, local,
                          settings.clip_norm, settings.clip_value, settings.track)  # fmt: skip
            task = first_task(control, tid, n_threads)
            while task < n_chunks:
                first, stop = _chunk(task, n_chunks, n_params)
                if shards > 1 and not conditioned:
                    _add_shards(work.grads, shards, first, stop)
                update(params, grads, opt_state, current_step, lr, settings.hyper, first, stop)
                task = next_task(control, n_threads, task)
            barrier(control, n_threads)
        if outcome != OUTCOME_FINISHED:
            break
        epoch_loss = epoch_loss / total_weight if is_mean else epoch_loss
        _finite_chunks(tid, n_threads, control, params, state_flat, partials)
        barrier(control, n_threads)
        finite = np.isfinite(epoch_loss)
        for chunk in range(n_chunks):
            finite = finite and partials[FLAG_PARTIALS + chunk] != 0.0
        if not finite:
            outcome = OUTCOME_DIVERGED
            break
        if tid == 0:
            work.epoch_losses[e] = epoch_loss
            step[0] = current_step
        if conditioned:
            condition(np.int64(CONDITION_EPOCH_END), tid, n_threads, control, params, work.saved_params, work.grads, work.acts,
                      meta, partials, work.health_partials, work.health_counts, work.health_sums, work.health[e], np.int64(0),
                      np.int64(0), settings.clip_norm, settings.clip_value, settings.track)  # fmt: skip
            barrier(control, n_threads)  # work.saved_params (the epoch's start) was read
        completed += 1
        _copy_chunks(tid, n_threads, control, work.saved_params, params, n_params)
        _copy_chunks(tid, n_threads, control, saved_state, state_flat, n_params)
        saved_step = current_step
        barrier(control, n_threads)
    if outcome != OUTCOME_FINISHED:
        barrier(control, n_threads)
        _copy_chunks(tid, n_threads, control, params, work.saved_params, n_params)
        _copy_chunks(tid, n_threads, control, state_flat, saved_state, n_params)
        barrier(control, n_threads)
    if tid == 0:
        step[0] = saved_step
        control[CONTROL_OUTCOME] = outcome
    return completed


# ``condition``'s modes, called by every thread of the team at these points of the loop.
CONDITION_EPOCH_START = 0
CONDITION_STEP = 1
CONDITION_EPOCH_END = 2
# Rows of ``Work.health_sums``: an epoch's sums (thread 0's) per layer; steps in [STEPS, 0].
SUM_GRAD_NORMS, SUM_SATURATED, SUM_UNITS, SUM_STEPS = 0, 1, 2, 3


@kernel(**JIT_OPTIONS)
def condition(mode, tid, n_threads, control, params, start_params, grads, acts, meta, partials, health_partials, health_counts,
              sums, health, lo, local, clip_norm, clip_value, track):  # fmt: skip
    """The loop's optional stage: gradient clipping and gradient health (``Settings``).

    CONDITION_STEP: the shards' gradients added up into ``grads[0]`` (in shard order), its
    health recorded (``track``: per-layer squared norms per chunk, saturated units per block of
    rows ``[lo, lo + local)``, added up by thread 0 in chunk and block order), entries clamped
    to ``clip_value``, then scaled to ``clip_norm`` (its squared norm summed per chunk, the
    chunks in order); returns with ``grads[0]`` final on every thread. CONDITION_EPOCH_START:
    the epoch's sums cleared. CONDITION_EPOCH_END: the epoch's ``health`` (n_layers,
    HEALTH_WIDTH) from the sums and from ``params`` against ``start_params`` (thread 0; the
    caller waits at a barrier before changing either).
    """
    if mode == CONDITION_EPOCH_START:
        if tid == 0:
            sums[...] = 0.0
        return
    if mode == CONDITION_EPOCH_END:
        if tid == 0 and track:
            _epoch_health(params, start_params, meta, sums[SUM_GRAD_NORMS], sums[SUM_SATURATED], sums[SUM_UNITS],
                          np.int64(sums[SUM_STEPS, 0]), health)  # fmt: skip
        return
    t = grads.dtype.type
    shards, n_params = grads.shape[0], grads.shape[1]
    n_chunks = chunk_count(n_params)
    gradient = grads[0]
    n_saturation = 0
    if track:
        # Blocks of at least ~64 rows per count task (a task per handful of rows costs more than
        # it counts); the counts are integers, so the blocks change no result.
        blocks = local // shards // 64
        blocks = 1 if blocks < 1 else (SATURATION_BLOCKS if blocks > SATURATION_BLOCKS else blocks)
        n_saturation = shards * blocks
    task = first_task(control, tid, n_threads)
    while task < n_chunks + n_saturation:
        if task >= n_chunks:
            # Saturated units of one block of one shard's rows (this step's activations).
            block = task - n_chunks
            blocks = n_saturation // shards
            shard = block // blocks
            shard_rows = lo + (shard + 1) * local // shards - (lo + shard * local // shards)
            part = block % blocks
            _count_saturated(acts[shard], meta, part * shard_rows // blocks, (part + 1) * shard_rows // blocks,
                             health_counts[block])  # fmt: skip
        else:
            first, stop = _chunk(task, n_chunks, n_params)
            if shards > 1:
                _add_shards(grads, shards, first, stop)
            if track:
                _layer_squares(gradient, meta, first, stop, health_partials[task])
            if clip_value > 0.0:
                _clip_values(gradient, first, stop, t(clip_value))
            if clip_norm > 0.0:
                partials[FLAG_PARTIALS + task] = _squares(gradient, first, stop)
        task = next_task(control, n_threads, task)
    barrier(control, n_threads)
    if track and tid == 0:
        # Added up in chunk and block order: the same on any number of threads. (The other
        # threads go on; nothing before the next step's stage writes these buffers.)
        for layer in range(meta.shape[0]):
            squares = 0.0
            for chunk in range(n_chunks):
                squares += health_partials[chunk, layer]
            sums[SUM_GRAD_NORMS, layer] += np.sqrt(squares)
            count = 0
            for block in range(n_saturation):
                count += health_counts[block, layer]
            sums[SUM_SATURATED, layer] += count
            sums[SUM_UNITS, layer] += local * meta[layer, META_N_OUT]
        sums[SUM_STEPS, 0] += 1.0
    if clip_norm > 0.0:
        squares = 0.0
        for chunk in range(n_chunks):
            squares += partials[FLAG_PARTIALS + chunk]
        factor = clip_norm / (np.sqrt(squares) + 1e-6)
        if factor < 1.0:
            task = first_task(control, tid, n_threads)
            while task < n_chunks:
                first, stop = _chunk(task, n_chunks, n_params)
                _scale(gradient, first, stop, t(factor))
                task = next_task(control, n_threads, task)
            barrier(control, n_threads)


@kernel(**JIT_OPTIONS)
def no_condition(mode, tid, n_threads, control, params, start_params, grads, acts, meta, partials, health_partials, health_counts,
                 sums, health, lo, local, clip_norm, clip_value, track):  # fmt: skip
    """``condition``'s stand-in when a fit neither clips nor tracks (never called)."""
    return


@njit(**JIT_OPTIONS)
def _layer_squares(grads, meta, first, stop, sums):
    """``sums[layer]`` = the squared weight gradients of ``layer`` within ``[first, stop)``."""
    for layer in range(meta.shape[0]):
        low = meta[layer, META_W_OFFSET]
        high = low + meta[layer, META_N_IN] * meta[layer, META_N_OUT]
        low = first if first > low else low
        high = stop if stop < high else high
        total = 0.0
        for i in range(low, high):
            value = np.float64(grads[i])
            total += value * value
        sums[layer] = total


@njit(**JIT_OPTIONS)
def _count_saturated(acts, meta, first_row, stop_row, counts):
    """``counts[layer]`` = units of rows ``[first_row, stop_row)`` of a sigmoid or tanh layer
    whose derivative (a(1 − a), 1 − a²) is below SATURATION_THRESHOLD; 0 for other layers."""
    capacity = acts.size // (meta[-1, META_UNITS_BEFORE] + meta[-1, META_N_OUT])
    for layer in range(meta.shape[0]):
        activation = meta[layer, META_ACTIVATION]
        count = 0
        if activation == SIGMOID or activation == TANH:
            n_out = meta[layer, META_N_OUT]
            base = capacity * meta[layer, META_UNITS_BEFORE]
            # Branch-free loops (each vectorises): a comparison added as 0 or 1.
            if activation == SIGMOID:
                for i in range(base + first_row * n_out, base + stop_row * n_out):
                    a = np.float64(acts[i])
                    count += np.int64(a * (1.0 - a) < SATURATION_THRESHOLD)
            else:
                for i in range(base + first_row * n_out, base + stop_row * n_out):
                    a = np.float64(acts[i])
                    count += np.int64(1.0 - a * a < SATURATION_THRESHOLD)
        counts[layer] = count


@njit(**JIT_OPTIONS)
def _epoch_health(params, start_params, meta, grad_norms, saturated, units_seen, steps, health):
    """One epoch's ``health`` (n_layers, HEALTH_WIDTH) from its accumulated sums and its start
    and end parameters (see ``layout.HEALTH_*``)."""
    for layer in range(meta.shape[0]):
        low = meta[layer, META_W_OFFSET]
        high = low + meta[layer, META_N_IN] * meta[layer, META_N_OUT]
        weights, moved, before = 0.0, 0.0, 0.0
        for i in range(low, high):
            now, then = np.float64(params[i]), np.float64(start_params[i])
            weights += now * now
            moved += (now - then) * (now - then)
            before += then * then
        health[layer, HEALTH_GRAD_NORM] = grad_norms[layer] / steps if steps > 0 else np.nan
        health[layer, HEALTH_WEIGHT_NORM] = np.sqrt(weights)
        health[layer, HEALTH_UPDATE_RATIO] = np.sqrt(moved) / np.sqrt(before) if before > 0.0 else np.nan
        activation = meta[layer, META_ACTIVATION]
        tracked = (activation == SIGMOID or activation == TANH) and units_seen[layer] > 0.0
        health[layer, HEALTH_SATURATION] = saturated[layer] / units_seen[layer] if tracked else np.nan


@njit(**JIT_OPTIONS)
def _clip_values(grads, first, stop, limit):
    # Clamp to [-limit, limit]; NaN stays NaN (compared, never replaced).
    for i in range(first, stop):
        if grads[i] > limit:
            grads[i] = limit
        elif grads[i] < -limit:
            grads[i] = -limit


@njit(**JIT_OPTIONS)
def _squares(grads, first, stop):
    total = 0.0  # float64 whatever the dtype, as PyTorch accumulates norms on the CPU
    for i in range(first, stop):
        value = np.float64(grads[i])
        total += value * value
    return total


@njit(**JIT_OPTIONS)
def _scale(grads, first, stop, factor):
    for i in range(first, stop):
        grads[i] *= factor


@njit(**JIT_OPTIONS)
def _local_batch_weights(sample_weight, order, n, batch_size, batch_weights):
    # This rank's weight of each batch of the epoch's n rows (partitioned data), in step order.
    for start in range(0, n, batch_size):
        stop = start + batch_size if batch_size < n - start else n
        weight = 0.0
        for r in range(start, stop):
            weight += sample_weight[order[r]]
        batch_weights[start // batch_size] = weight


@njit(**JIT_OPTIONS)
def _gather(X, Y, sample_weight, order, x_batch, y_batch, row_scale, start, first, stop, inv, is_mean):
    # Rows [first, stop) of the batch starting at ``start`` of this epoch's order: inputs,
    # targets and row scales (sample weight over the batch's weight for mean losses). Helpers
    # take arrays, not the bundles: a bundle argument is every one of its arrays to pass, count
    # references of and lower, in every function that takes it.
    n_in, n_out = unsigned(X.shape[1]), unsigned(Y.shape[1])
    for r in range(unsigned(first), unsigned(stop)):
        i = order[unsigned(start) + r]
        for k in range(n_in):
            x_batch[r * n_in + k] = X[i, k]
        for k in range(n_out):
            y_batch[r * n_out + k] = Y[i, k]
        row_scale[r] = sample_weight[i] * inv if is_mean else sample_weight[i]


@njit(**JIT_OPTIONS)
def _shard_passes(tid, n_threads, control, forward, backward, params, meta, x_batch, y_batch, row_scale, acts, z_out, deltas,
                  partials, transposed, grads, first, stop, l1, l2):  # fmt: skip
    # Forward and backward over batch rows [first, stop) into one shard's buffers and gradient,
    # by the team (tid, n_threads): (0, 1) for a thread working alone. Only shard 0 is given
    # the weight penalty, so that it is added once.
    n_in, n_out = meta[0, 0], meta[meta.shape[0] - 1, 1]
    x = x_batch[first * n_in : stop * n_in]
    forward(tid, n_threads, control, params, meta, x, stop - first, y_batch[first * n_out : stop * n_out], row_scale[first:stop],
            acts, z_out, deltas, partials, transposed, np.bool_(True))  # fmt: skip
    backward(tid, n_threads, control, params, grads, meta, x, stop - first, acts, deltas, partials, transposed, l1, l2)


@njit(**JIT_OPTIONS)
def _add_shards(grads, shards, first, stop):
    # grads[0] += grads[1] + ... in shard order, over [first, stop).
    total = grads[0]
    for shard in range(1, shards):
        part = grads[shard]
        for i in range(unsigned(first), unsigned(stop)):
            total[i] += part[i]


_BOUND = {}


def _stage_types(params, x_batch):
    # The argument types train_loop calls its stages with.
    i64, flag = types.int64, types.boolean
    values, values_2d = typeof(params), array_type(params.dtype, 2)
    batch, control, meta, partials = typeof(x_batch), array_type(np.int64), array_type(np.int64, 2), array_type(np.float64)
    team = (i64, i64, control)
    forward = (*team, values, meta, batch, i64, batch, batch, batch, batch, batch, partials, values, flag)
    backward = (*team, values, values, meta, batch, i64, batch, batch, partials, values, types.float64, types.float64)
    update = (values, values, values_2d, i64, types.float64, array_type(np.float64), i64, i64)
    exchange = (i64, i64, values, array_type(np.float64))
    f64_2d = array_type(np.float64, 2)
    condition = (i64, *team, values, values, values_2d, values_2d, meta, partials, f64_2d, array_type(np.int64, 2), f64_2d, f64_2d,
                 i64, i64, types.float64, types.float64, flag)  # fmt: skip
    return forward, backward, update, exchange, condition


def bound_loop(state, data, work, settings):
    """``train_loop`` compiled for these bundles' types, with its stages: the forward and
    backward passes, ``settings.optimizer``'s update (``optim.UPDATES``) and the exchange
    between ranks (``kernels.exchange``; a stand-in in one process) as function pointers.
    Each stage is compiled once per dtype and shared by every loop and every other caller; the
    loop is compiled once per dtype for every optimizer.

    Returns
    -------
    (dispatcher, (forward, backward, update, exchange, condition))
    """
    update = UPDATES.get(int(settings.optimizer))
    if update is None:
        raise ValueError(f"optimizer must be an optimizer code ({sorted(UPDATES)}), got {settings.optimizer!r}")
    hidden, output, loss, tiles, blas = configuration(settings.meta, settings.loss, state.params.dtype)
    data_types = tuple(typeof(array) for array in data)  # read-only inputs (memory maps) compile a variant
    distributed = settings.ranks > 1
    conditioned = bool(settings.track or settings.clip_norm > 0.0 or settings.clip_value > 0.0)
    key = (state.params.dtype, data_types, hidden, output, loss, tiles, blas, int(settings.optimizer), distributed, conditioned)
    bound = _BOUND.get(key)
    if bound is None:
        stage_types = _stage_types(state.params, work.x_batch)
        stages = (forward_kernel(hidden, output, loss, tiles, blas), backward_kernel(hidden, tiles, blas), update,
                  exchange_kernel if distributed else no_exchange, condition if conditioned else no_condition)  # fmt: skip
        pointers = tuple(function_pointer(stage, argtypes) for stage, argtypes in zip(stages, stage_types))
        loop_types = (types.int64, types.int64, array_type(np.int64), *(typeof(p) for p in pointers), typeof(state), typeof(data),
                      typeof(work), typeof(settings))  # fmt: skip
        compile_exact(train_loop, loop_types)
        bound = _BOUND.setdefault(key, (train_loop, pointers))
    return bound


def training_loop(optimizer):
    """The update kernel the loop calls for ``optimizer`` (a code of ``optim.UPDATES``)."""
    update = UPDATES.get(int(optimizer))
    if update is None:
        raise ValueError(f"optimizer must be an optimizer code ({sorted(UPDATES)}), got {optimizer!r}")
    return update
