"""The training loop's optional stage, one piece per dtype: gradient clipping and gradient
health (``layout.Settings.clip_norm``, ``clip_value``, ``track``), called by every thread of the
team at the start and end of each epoch and after each step's gradient, bound only when a fit
asks for one of them (``layout.PIECE_CONDITION``), so a fit that uses neither compiles none of
this.
"""

import numpy as np
from numba import njit

from .activations import SIGMOID, TANH
from .compat import kernel
from .config import INTERNAL_OPTIONS, JIT_OPTIONS
from .layout import (
    CONDITION_EPOCH_END,
    CONDITION_EPOCH_START,
    HEALTH_GRAD_NORM,
    HEALTH_SATURATION,
    HEALTH_UPDATE_RATIO,
    HEALTH_WEIGHT_NORM,
    MAX_CHUNKS,
    META_ACTIVATION,
    META_N_IN,
    META_N_OUT,
    META_UNITS_BEFORE,
    META_W_OFFSET,
    FLAG_PARTIALS,
    SATURATION_BLOCKS,
    SATURATION_THRESHOLD,
    add_shards,
    chunk_bounds,
    chunk_count,
)
from .team import barrier, first_task, next_task

_INLINE = dict(JIT_OPTIONS, inline="always")

# Rows of ``Work.health_sums``: an epoch's sums (thread 0's) per layer; steps in [STEPS, 0].
SUM_GRAD_NORMS, SUM_SATURATED, SUM_UNITS, SUM_STEPS = 0, 1, 2, 3


@kernel(**INTERNAL_OPTIONS)
def condition(mode, tid, n_threads, control, params, meta, work, epoch, lo, local, settings):
    """The loop's optional stage: gradient clipping and gradient health (``Settings``).

    CONDITION_STEP: the shards' gradients added up into ``grads[0]`` (in shard order), its
    health recorded (``track``: per-layer squared norms per chunk, saturated units per block of
    rows ``[lo, lo + local)``, added up by thread 0 in chunk and block order), entries clamped
    to ``clip_value``, then scaled to ``clip_norm`` (its squared norm summed per chunk, the
    chunks in order); returns with ``grads[0]`` final on every thread. CONDITION_EPOCH_START:
    the epoch's sums cleared. CONDITION_EPOCH_END: the epoch's ``health`` (n_layers,
    HEALTH_WIDTH) from the sums and from ``params`` against ``start_params`` (thread 0; the
    caller waits at a barrier before changing either).

    Parameters
    ----------
    mode : int64
        CONDITION_EPOCH_START, CONDITION_STEP or CONDITION_EPOCH_END.
    tid, n_threads, control
        The team.
    params : ndarray, shape (n_params,)
    meta : ndarray of int64
    work : layout.Work
        ``grads`` (summed and clipped in place), ``acts`` (the step's activations),
        ``saved_params`` (the epoch's start), ``partials[0]``, the ``health*`` buffers.
    epoch : int64
        The epoch of this call (its row of ``work.health``).
    lo, local : int64
        This rank's rows of the batch (``[lo, lo + local)``).
    settings : layout.Settings
        ``clip_norm``, ``clip_value``, ``track``.

    Returns
    -------
    int64
        0.
    """
    sums, track = work.health_sums, settings.track
    if mode == CONDITION_EPOCH_START:
        if tid == 0:
            sums[...] = 0.0
        return np.int64(0)
    if mode == CONDITION_EPOCH_END:
        if tid == 0 and track:
            _epoch_health(params, work.saved_params, meta, sums[SUM_GRAD_NORMS], sums[SUM_SATURATED], sums[SUM_UNITS],
                          np.int64(sums[SUM_STEPS, 0]), work.health[epoch])  # fmt: skip
        return np.int64(0)
    grads, acts, partials = work.grads, work.acts, work.partials[0]
    health_partials, health_counts = work.health_partials, work.health_counts
    clip_norm, clip_value = settings.clip_norm, settings.clip_value
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
            first, stop = chunk_bounds(task, n_chunks, n_params)
            if shards > 1:
                add_shards(grads, shards, first, stop)
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
                first, stop = chunk_bounds(task, n_chunks, n_params)
                _scale(gradient, first, stop, t(factor))
                task = next_task(control, n_threads, task)
            barrier(control, n_threads)
    return np.int64(0)


@njit(**_INLINE)
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


@njit(**_INLINE)
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


@njit(**_INLINE)
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


@njit(**_INLINE)
def _clip_values(grads, first, stop, limit):
    # Clamp to [-limit, limit]; NaN stays NaN (compared, never replaced).
    for i in range(first, stop):
        if grads[i] > limit:
            grads[i] = limit
        elif grads[i] < -limit:
            grads[i] = -limit


@njit(**_INLINE)
def _squares(grads, first, stop):
    total = 0.0  # float64 whatever the dtype, as PyTorch accumulates norms on the CPU
    for i in range(first, stop):
        value = np.float64(grads[i])
        total += value * value
    return total


@njit(**_INLINE)
def _scale(grads, first, stop, factor):
    for i in range(first, stop):
        grads[i] *= factor


