# stamp: 2598c48477967c849dd82a2e6447ab9b
"""Gradient clipping and gradient health (``layout.Settings.clip_norm``, ``clip_value``,
``track``): the training loop's ``condition`` stage, called by every thread of the team at the
start and end of each epoch and after each step's gradient, for fits that ask for one of them.
"""

import numpy as np

from .activations import SIGMOID, TANH
from .jit import helper, subroutine
from .layout import SATURATION_BLOCKS, SATURATION_THRESHOLD, chunk_count
from .team import barrier, next_task

# The points of the loop the stage is called at (its first argument).
EPOCH_START = 0
STEP = 1
EPOCH_END = 2

# Rows of ``Work.health_sums``: an epoch's sums (thread 0's) per layer; steps in [STEPS, 0].
SUM_GRAD_NORMS, SUM_SATURATED, SUM_UNITS, SUM_STEPS = 0, 1, 2, 3


@subroutine
def condition(mode, team, params, architecture, work, epoch, rows, settings):
    """Gradient clipping and gradient health (``Settings``).

    STEP: the shards' gradients added up into ``grads[0]`` (in shard order), its
    health recorded (``track``: per-layer squared norms per chunk, saturated units per block of
    rows ``[lo, lo + local)``, added up by thread 0 in chunk and block order), entries clamped
    to ``clip_value``, then scaled to ``clip_norm`` (its squared norm summed per chunk, the
    chunks in order); returns with ``grads[0]`` final on every thread. EPOCH_START: the epoch's
    sums cleared. EPOCH_END: the epoch's ``health`` records (n_layers,) from the sums and from
    ``params`` against ``work.saved_params`` (thread 0; then a barrier).

    Parameters
    ----------
    mode : int64
        EPOCH_START, STEP or EPOCH_END.
    team : (tid, n_threads, control)
        The team.
    params : ndarray, shape (n_params,)
    architecture : layout.Architecture
    work : layout.Work
        ``grads`` (summed and clipped in place), ``acts`` (the step's activations),
        ``saved_params`` (the epoch's start), ``chunks``, the ``health*`` buffers.
    epoch : int64
        The epoch of this call (its row of ``work.health``).
    rows : (int64, int64)
        This rank's rows of the batch, ``(lo, local)``: ``[lo, lo + local)``.
    settings : layout.Settings
        ``clip_norm``, ``clip_value``, ``track``.

    Returns
    -------
    int64
        0.
    """
    tid, n_threads, control = team
    if mode == EPOCH_START:
        if tid == 0:
            work.health_sums[...] = 0.0
        return np.int64(0)
    if mode == EPOCH_END:
        if tid == 0 and settings.track:
            sums = work.health_sums
            _epoch_health(
                params,
                work.saved_params,
                architecture.layers,
                sums[SUM_GRAD_NORMS],
                sums[SUM_SATURATED],
                sums[SUM_UNITS],
                np.int64(sums[SUM_STEPS, 0]),
                work.health[epoch],
            )
        barrier(control, n_threads)
        return np.int64(0)
    n_saturation = _saturation_tasks(rows[1], work.grads.shape[0]) if settings.track else 0
    _step_tasks(team, architecture, work, rows, settings, n_saturation)
    barrier(control, n_threads)
    if settings.track and tid == 0:
        # (the other threads go on: nothing before the next step's stage writes these buffers)
        _add_step_health(architecture, work, rows[1], n_saturation)
    if settings.clip_norm > 0.0:
        _clip_norm(team, work, settings.clip_norm)
    return np.int64(0)


@helper
def _saturation_tasks(local, shards):
    # Blocks of at least ~64 rows per count task (a task per handful of rows costs more than it
    # counts); the counts are integers, so the blocks change no result.
    blocks = local // shards // 64
    blocks = 1 if blocks < 1 else (SATURATION_BLOCKS if blocks > SATURATION_BLOCKS else blocks)
    return shards * blocks


@helper
def _step_tasks(team, architecture, work, rows, settings, n_saturation):
    # A step's tasks: per chunk of the parameters, the shards added up, the layers' squared norms,
    # the entries clamped and the chunk's squared norm; then per block of a shard's rows, its
    # saturated units (this step's activations).
    tid, n_threads, control = team
    lo, local = rows
    grads, chunks = work.grads, work.chunks
    shards, n_params = grads.shape[0], grads.shape[1]
    n_chunks = chunk_count(n_params)
    gradient = grads[0]
    task = tid
    while task < n_chunks + n_saturation:
        if task >= n_chunks:
            block = task - n_chunks
            blocks = n_saturation // shards
            shard = block // blocks
            shard_rows = lo + (shard + 1) * local // shards - (lo + shard * local // shards)
            part = block % blocks
            first, stop = part * shard_rows // blocks, (part + 1) * shard_rows // blocks
            _count_saturated(work.acts[shard], architecture, first, stop, work.health_counts[block])
        else:
            first, stop = task * n_params // n_chunks, (task + 1) * n_params // n_chunks
            if shards > 1:
                add_shards(grads, shards, first, stop)
            if settings.track:
                _layer_squares(gradient, architecture.layers, first, stop, work.health_partials[task])
            if settings.clip_value > 0.0:
                _clip_values(gradient, first, stop, gradient.dtype.type(settings.clip_value))
            if settings.clip_norm > 0.0:
                chunks[task] = _squares(gradient, first, stop)
        task = next_task(n_threads, task)


@helper
def _add_step_health(architecture, work, local, n_saturation):
    # The step's health into the epoch's sums (thread 0), added up in chunk and block order: the
    # same on any number of threads.
    sums, meta = work.health_sums, architecture.layers
    n_chunks = chunk_count(work.grads.shape[1])
    for layer in range(meta.size):
        squares = 0.0
        for chunk in range(n_chunks):
            squares += work.health_partials[chunk, layer]
        sums[SUM_GRAD_NORMS, layer] += np.sqrt(squares)
        count = 0
        for block in range(n_saturation):
            count += work.health_counts[block, layer]
        sums[SUM_SATURATED, layer] += count
        sums[SUM_UNITS, layer] += local * meta[layer]["n_out"]
    sums[SUM_STEPS, 0] += 1.0


@helper
def _clip_norm(team, work, clip_norm):
    # The gradient scaled to norm ``clip_norm`` when above it, its squared norm summed in chunk
    # order (the chunks' sums from _step_tasks).
    tid, n_threads, control = team
    gradient, chunks = work.grads[0], work.chunks
    n_params = gradient.size
    n_chunks = chunk_count(n_params)
    squares = 0.0
    for chunk in range(n_chunks):
        squares += chunks[chunk]
    factor = clip_norm / (np.sqrt(squares) + 1e-6)
    if factor < 1.0:
        task = tid
        while task < n_chunks:
            first, stop = task * n_params // n_chunks, (task + 1) * n_params // n_chunks
            _scale(gradient, first, stop, gradient.dtype.type(factor))
            task = next_task(n_threads, task)
        barrier(control, n_threads)


@subroutine
def add_shards(grads, shards, first, stop):
    """``grads[0] += grads[1] + ...`` in shard order, over ``[first, stop)``."""
    total = grads[0]
    for shard in range(1, shards):
        part = grads[shard]
        for i in range(first, stop):
            total[i] += part[i]


@subroutine
def _layer_squares(grads, meta, first, stop, sums):
    """``sums[layer]`` = the squared weight gradients of ``layer`` within ``[first, stop)``."""
    for layer in range(meta.size):
        low = meta[layer]["weights"]
        high = low + meta[layer]["n_in"] * meta[layer]["n_out"]
        low = first if first > low else low
        high = stop if stop < high else high
        total = 0.0
        for i in range(low, high):
            value = np.float64(grads[i])
            total += value * value
        sums[layer] = total


@subroutine
def _count_saturated(acts, architecture, first_row, stop_row, counts):
    """``counts[layer]`` = units of rows ``[first_row, stop_row)`` of a sigmoid or tanh layer
    whose derivative (a(1 − a), 1 − a²) is below SATURATION_THRESHOLD; 0 for other layers."""
    meta = architecture.layers
    capacity = acts.size // architecture.units
    for layer in range(meta.size):
        activation = meta[layer]["activation"]
        count = 0
        if activation == SIGMOID or activation == TANH:
            n_out = meta[layer]["n_out"]
            base = capacity * meta[layer]["acts"]
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


@subroutine
def _epoch_health(params, start_params, meta, grad_norms, saturated, units_seen, steps, health):
    """One epoch's ``health`` records (n_layers,) from its accumulated sums and its start and end
    parameters (see ``layout.HEALTH``)."""
    for layer in range(meta.size):
        low = meta[layer]["weights"]
        high = low + meta[layer]["n_in"] * meta[layer]["n_out"]
        weights, moved, before = 0.0, 0.0, 0.0
        for i in range(low, high):
            now, then = np.float64(params[i]), np.float64(start_params[i])
            weights += now * now
            moved += (now - then) * (now - then)
            before += then * then
        record = health[layer]
        record["grad_norm"] = grad_norms[layer] / steps if steps > 0 else np.nan
        record["weight_norm"] = np.sqrt(weights)
        record["update_ratio"] = np.sqrt(moved) / np.sqrt(before) if before > 0.0 else np.nan
        activation = meta[layer]["activation"]
        tracked = (activation == SIGMOID or activation == TANH) and units_seen[layer] > 0.0
        record["saturation"] = saturated[layer] / units_seen[layer] if tracked else np.nan


@subroutine
def _clip_values(grads, first, stop, limit):
    # Clamp to [-limit, limit]; NaN stays NaN (compared, never replaced).
    for i in range(first, stop):
        if grads[i] > limit:
            grads[i] = limit
        elif grads[i] < -limit:
            grads[i] = -limit


@subroutine
def _squares(grads, first, stop):
    total = 0.0  # float64 whatever the dtype, as PyTorch accumulates norms on the CPU
    for i in range(first, stop):
        value = np.float64(grads[i])
        total += value * value
    return total


@subroutine
def _scale(grads, first, stop, factor):
    for i in range(first, stop):
        grads[i] *= factor
