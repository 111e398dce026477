# stamp: 2d51b149d2593cdaceeb1bd6e58211cf
"""The compiled training loop: whole epochs of mini-batch gradient descent in one call, run by
a team of threads (``kernels.team``), and the row shuffle it uses.

``train_epochs(state, data, work, settings, control, n_threads, end)`` is the entry point (its
NumPy twin, ``fastgd.reference.train_epochs``, takes the same bundles). The loop is compiled once
per dtype for every network and setting: the activations, the loss, the products and the
optimizer's update are pieces (``kernels.pieces``) and the optional stages (clipping and
gradient health, validation and the stopping rule, visits to Python, the exchange between
ranks) first-class functions compiled apart (``kernels.stages``), all passed in as arguments.

One step, as team phases separated by barriers: gather the batch's rows (blocks of rows), the
forward pass (a phase per layer; the output layer's phase also takes the loss and the output
local gradients), the backward pass (a phase per layer: weight and bias gradients and the local
gradients of the layer below), then the optimizer update over fixed chunks of the flat buffers.
Every thread then adds up the batch loss from the per-block partials in block order and takes
the same decisions.
"""

import numpy as np

from . import condition as stage_condition
from .dropout import GOLDEN, NO_DROPOUT, mix, step_key
from .exchange import exchange
from .jit import helper, kernel
from .layout import (
    CONTROL,
    EXCHANGE_STEP,
    EXCHANGE_WEIGHTS,
    OUTCOME_DIVERGED,
    OUTCOME_FINISHED,
    OUTCOME_INTERRUPTED,
    OUTCOME_STOPPED,
    VISIT_EPOCH,
    VISIT_HEARTBEAT,
    chunk_count,
    flag_partials,
    layer_blocks,
    make_epoch_end,
    shard_buffers,
)
from .lowlevel import monotonic_ns, pointer, view, view2
from .passes import batch_value
from .schedules import lr_at
from .team import barrier, next_task, read_flag, run_team, write_flag


@helper
def _shuffle(order, keys, seed, epoch):
    base = mix(np.uint64(seed) + np.uint64(epoch + 1) * GOLDEN)
    n = order.size
    for i in range(n):
        keys[i] = mix(base + np.uint64(i + 1) * GOLDEN)
        order[i] = i
    for i in range(n - 1, 0, -1):
        j = np.int64(keys[i] % np.uint64(i + 1))
        order[i], order[j] = order[j], order[i]


@kernel
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


@helper
def _epoch_order(order, keys, shuffle, seed, epoch):
    # The epoch's row order (thread 0's).
    if shuffle:
        _shuffle(order, keys, seed, epoch)
    else:
        for i in range(order.size):
            order[i] = i


@kernel
def train_loop(tid, n_threads, control, phases, pieces, updates, stages, architecture, state, data, work, settings, end):
    """``train_epochs``'s body, run by every thread of the team (see the module's docstring).

    A batch is cut into ``settings.shards`` shards of consecutive rows (``layout.shard_plan``),
    whose gradients are added in shard order: with ``settings.solo`` every thread takes whole
    shards (tiny layers: no barrier between layers, no data crossing cores), else the team works
    through the shards one by one, splitting each layer's products.

    Data-parallel (``settings.ranks`` > 1): this process computes its share of the batch (see
    ``layout.Settings``) as one shard; the exchange stage then sums the gradient, the loss and
    the stop request over the ranks (once per step), and every rank takes the same step with the
    same sums. Only rank 0's shard carries the weight penalty.

    After each completed epoch (checked, saved): the monitor stage (validation and the stopping
    rule, ``end``), then a visit to Python when one is due (``end.visits``); either may end
    training there (``OUTCOME_STOPPED``). Between batches, thread 0 visits Python for a heartbeat
    when ``end.visits.beat`` asks (so that a main-thread fit's Ctrl-C handler runs).

    Returns
    -------
    int64
        The number of epochs completed.
    """
    # The bundles are unpacked once, here: helpers take the arrays they use (passing a bundle
    # on costs its every array at each call boundary, at compile time above all).
    params, opt_state, step = state
    X, Y, sample_weight = data
    n, n_in, n_out, n_params = X.shape[0], X.shape[1], Y.shape[1], params.size
    batch_size, shards, solo, ranks, mean = settings.batch_size, settings.shards, settings.solo, settings.ranks, settings.mean
    order, grads, saved_params = work.order, work.grads, work.saved_params
    x_batch, y_batch, row_scale = work.x_batch, work.y_batch, work.row_scale
    state_flat, saved_state = opt_state.reshape(opt_state.size), work.saved_state.reshape(opt_state.size)
    # The arrays handed to helpers at every step, as views without a meminfo (numba.carray over
    # the same memory, which outlives the call): an array with one costs an atomic incref and
    # decref at each call that takes it (measured on xor: a fifth of a step's time).
    params, saved_params = view(pointer(params, 0), n_params), view(pointer(saved_params, 0), n_params)
    grads = view2(pointer(grads, 0), grads.shape[0], grads.shape[1])
    opt_state = view2(pointer(opt_state, 0), opt_state.shape[0], opt_state.shape[1])
    state_flat, saved_state = view(pointer(state_flat, 0), state_flat.size), view(pointer(saved_state, 0), saved_state.size)
    order, sample_weight = view(pointer(order, 0), order.size), view(pointer(sample_weight, 0), sample_weight.size)
    x_batch, y_batch = view(pointer(x_batch, 0), x_batch.size), view(pointer(y_batch, 0), y_batch.size)
    row_scale = view(pointer(row_scale, 0), row_scale.size)
    partials = view2(pointer(work.partials, 0), work.partials.shape[0], work.partials.shape[1])
    hyper, schedule = view(pointer(settings.hyper, 0), settings.hyper.size), view(pointer(settings.schedule, 0), settings.schedule.size)
    epoch_losses, keys = view(pointer(work.epoch_losses, 0), work.epoch_losses.size), view(pointer(work.keys, 0), work.keys.size)
    end_state = end.state  # (read at every step: the stopping rule changes its lr_scale)
    update = updates[settings.optimizer]
    visits = end.visits
    visiting = visits.enabled
    beat = visits.beat and visiting
    conditioned = settings.track or settings.clip_norm > 0.0 or settings.clip_value > 0.0
    validating = end.rule.validate or end.rule.mode != 0
    loss, gemm, penalty_per_weight = settings.loss, settings.gemm, settings.penalty_per_weight
    dropping = architecture.mask_units > 0
    # The penalty goes with shard 0 of rank 0 only, so that it is added once.
    l1, l2 = (settings.l1, settings.l2) if settings.rank == 0 else (0.0, 0.0)
    total_weight = 0.0
    for i in range(n):
        total_weight += sample_weight[i]
    _save(tid, n_threads, control, saved_params, params, saved_state, state_flat)
    saved_step = current_step = step[0]
    outcome, completed = OUTCOME_FINISHED, 0
    if tid == 0:
        control[CONTROL.visited] = _clock(control)
    for e in range(settings.epochs):
        if tid == 0:
            _epoch_order(order, keys, settings.shuffle, settings.seed, settings.first_epoch + e)
        if settings.partitioned:
            total_weight = exchange(EXCHANGE_WEIGHTS, tid, n_threads, control, stages.python, work.scalars, work.batch_weights,
                                    sample_weight, order, batch_size, 0.0)  # fmt: skip
        barrier(control, n_threads)
        if conditioned:
            stages.condition(stage_condition.EPOCH_START, tid, n_threads, control, params, architecture, work, e, 0, 0, settings)
        epoch_loss = 0.0
        for start in range(0, n, batch_size):
            rows = batch_size if batch_size < n - start else n - start
            if tid == 0:
                if beat and _clock(control) - control[CONTROL.visited] >= visits.interval:
                    # (the others wait at the gather's barrier meanwhile; an answer other than 0
                    # is a stop request, as a Ctrl-C is)
                    if stages.python(VISIT_HEARTBEAT, completed) != 0:
                        write_flag(control, CONTROL.stop, 1)
                    control[CONTROL.visited] = _clock(control)
                write_flag(control, CONTROL.stop_seen, read_flag(control, CONTROL.stop))
            # This rank's rows [lo, lo + local) of the batch, and the batch's weight.
            if settings.partitioned:
                batch_weight, lo, local = work.batch_weights[start // batch_size], 0, rows
            else:
                batch_weight = _batch_weight(sample_weight, order, start, rows)
                lo = settings.rank * rows // ranks
                local = (settings.rank + 1) * rows // ranks - lo
            inv = params.dtype.type(1.0 / batch_weight) if mean else params.dtype.type(1.0)
            # scikit-learn's alpha: the penalty per unit of the batch's sample weight.
            l1_step, l2_step = (l1 / batch_weight, l2 / batch_weight) if penalty_per_weight else (l1, l2)
            # Gather the rows and compute their gradient, shard by shard. Solo: each thread
            # takes whole shards (gathers and computes them alone, no barrier between layers);
            # else the team gathers the rows in blocks (as layer 0's product cuts them, so that
            # a thread multiplies the rows it gathered), then works through the shards in turn.
            if not solo:
                n_blocks = layer_blocks(architecture, 0, local)
                task = tid
                while task < n_blocks:
                    _gather(X, Y, sample_weight, order, x_batch, y_batch, row_scale, start, lo + task * local // n_blocks,
                            lo + (task + 1) * local // n_blocks, inv, mean)  # fmt: skip
                    task = next_task(n_threads, task)
                barrier(control, n_threads)
            member, team = (np.int64(0), np.int64(1)) if solo else (tid, n_threads)
            # This step's dropout masks (the step about to be taken, counted over all fits).
            key = step_key(settings.dropout_seed, current_step + 1) if dropping else NO_DROPOUT
            for shard in range(tid if solo else 0, shards, n_threads if solo else 1):
                first, stop = lo + shard * local // shards, lo + (shard + 1) * local // shards
                if solo:
                    _gather(X, Y, sample_weight, order, x_batch, y_batch, row_scale, start, first, stop, inv, mean)
                # (views over pointers, as shard_buffers's: no reference counting at each step)
                buffers = shard_buffers(work, shard)
                count = stop - first
                x = view(pointer(x_batch, first * n_in), count * n_in)
                phases.forward(member, team, control, pieces, architecture, params, x, count, view(pointer(y_batch, first * n_out), count * n_out),
                               view(pointer(row_scale, first), count), buffers, loss, gemm, key, first)  # fmt: skip
                phases.backward(member, team, control, pieces, architecture, params, view(pointer(grads, shard * n_params), n_params), x, count,
                                buffers, l1_step if shard == 0 else 0.0, l2_step if shard == 0 else 0.0, gemm, key)  # fmt: skip
            if solo:
                barrier(control, n_threads)
            value = 0.0
            for shard in range(shards):
                shard_rows = (shard + 1) * local // shards - shard * local // shards
                value += batch_value(architecture, shard_rows, partials[shard], l1_step if shard == 0 else 0.0,
                                     l2_step if shard == 0 else 0.0)  # fmt: skip
            if ranks > 1:
                value = exchange(EXCHANGE_STEP, tid, n_threads, control, stages.python, work.scalars, work.batch_weights, sample_weight,
                                 order, batch_size, value)  # fmt: skip
            if read_flag(control, CONTROL.stop_seen) != 0:
                outcome = OUTCOME_INTERRUPTED
                break
            if not np.isfinite(value):
                outcome = OUTCOME_DIVERGED
                break
            epoch_loss += value * batch_weight if mean else value
            current_step += 1
            # (the stopping rule's factor: scikit-learn's adaptive rate, 1 otherwise)
            lr = lr_at(settings.schedule_kind, settings.lr, current_step, settings.first_epoch + e, schedule) * end_state[0]["lr_scale"]
            if conditioned:
                # The summed, clipped gradient in grads[0] (its health recorded).
                stages.condition(stage_condition.STEP, tid, n_threads, control, params, architecture, work, e, lo, local, settings)
            _update(tid, n_threads, control, update, params, grads, opt_state, current_step, lr, hyper, 1 if conditioned else shards)
        if outcome != OUTCOME_FINISHED:
            break
        epoch_loss = epoch_loss / total_weight if mean else epoch_loss
        if not (_finite(tid, n_threads, control, params, state_flat, partials[0], architecture.layers.size) and np.isfinite(epoch_loss)):
            outcome = OUTCOME_DIVERGED
            break
        if tid == 0:
            epoch_losses[e] = epoch_loss
            step[0] = current_step
        # The epoch's gradient health reads saved_params (the epoch's start) before _save.
        if conditioned:
            stages.condition(stage_condition.EPOCH_END, tid, n_threads, control, params, architecture, work, e, 0, 0, settings)
        completed += 1
        _save(tid, n_threads, control, saved_params, params, saved_state, state_flat)
        saved_step = current_step
        stop = np.int64(0)
        if validating:
            stop = stages.monitor(tid, n_threads, control, phases, pieces, architecture, params, end, e, epoch_loss, loss, gemm)
        if visiting:
            stop = _visit(tid, n_threads, control, stages.python, visits.every, visits.interval, completed, stop)
        if stop != 0:
            outcome = OUTCOME_STOPPED
            break
    if outcome != OUTCOME_FINISHED and outcome != OUTCOME_STOPPED:
        barrier(control, n_threads)
        _save(tid, n_threads, control, params, saved_params, state_flat, saved_state)
    if tid == 0:
        step[0] = saved_step
        control[CONTROL.outcome] = outcome
    return np.int64(completed)


@helper
def _clock(control):
    return monotonic_ns(control[CONTROL.clock_kind], control[CONTROL.clock_address], control[CONTROL.clock_parameter],
                        control[CONTROL.clock_scratch : CONTROL.clock_scratch + 2])  # fmt: skip


@helper
def _batch_weight(sample_weight, order, start, rows):
    total = 0.0
    for r in range(rows):
        total += sample_weight[order[start + r]]
    return total


@helper
def _gather(X, Y, sample_weight, order, x_batch, y_batch, row_scale, start, first, stop, inv, is_mean):
    # Rows [first, stop) of the batch starting at ``start`` of this epoch's order into the batch
    # buffers: inputs, targets and row scales (the sample weight times ``inv``, one over the
    # batch's weight, for mean losses).
    n_in, n_out = X.shape[1], Y.shape[1]
    for r in range(first, stop):
        i = order[start + r]
        for k in range(n_in):
            x_batch[r * n_in + k] = X[i, k]
        for k in range(n_out):
            y_batch[r * n_out + k] = Y[i, k]
        row_scale[r] = sample_weight[i] * inv if is_mean else sample_weight[i]


@helper
def _update(tid, n_threads, control, update, params, grads, opt_state, current_step, lr, hyper, shards):
    # The optimizer's update over the flat buffers in fixed chunks (the gradients of ``shards``
    # shards added first, in shard order: 1 when the condition stage added them).
    n_params = params.size
    n_chunks = chunk_count(n_params)
    gradient = grads[0]
    task = tid
    while task < n_chunks:
        first, stop = task * n_params // n_chunks, (task + 1) * n_params // n_chunks
        if shards > 1:
            for shard in range(1, shards):
                part = grads[shard]
                for i in range(first, stop):
                    gradient[i] += part[i]
        update(first, stop, n_params, opt_state.shape[0], pointer(params, 0), pointer(gradient, 0), pointer(opt_state, 0), current_step,
               lr, pointer(hyper, 0))  # fmt: skip
        task = next_task(n_threads, task)
    barrier(control, n_threads)


@helper
def _save(tid, n_threads, control, params_to, params_from, state_to, state_from):
    # params_to = params_from and state_to = state_from (the flat optimizer state, a row per
    # slot), in the update's chunks, as a phase the whole team has left when this returns.
    n = params_from.size
    n_chunks = chunk_count(n)
    task = tid
    while task < n_chunks:
        first, stop = task * n // n_chunks, (task + 1) * n // n_chunks
        for i in range(first, stop):
            params_to[i] = params_from[i]
        for row in range(0, state_from.size, n):
            for i in range(row + first, row + stop):
                state_to[i] = state_from[i]
        task = next_task(n_threads, task)
    barrier(control, n_threads)


@helper
def _finite(tid, n_threads, control, params, state, partials, n_layers):
    # Are every parameter and state entry finite (the same answer on every thread)? Per chunk,
    # ``v * 0`` is 0 for finite v and NaN otherwise (the fast-math flags exclude nnan/ninf,
    # without which LLVM would fold it to 0); the chunks' flags go to partials.
    n = params.size
    n_chunks = chunk_count(n)
    flags = flag_partials(n_layers)
    zero = params.dtype.type(0.0)
    task = tid
    while task < n_chunks:
        first, stop = task * n // n_chunks, (task + 1) * n // n_chunks
        total = zero
        for i in range(first, stop):
            total += params[i] * zero
        for row in range(0, state.size, n):
            for i in range(row + first, row + stop):
                total += state[i] * zero
        partials[flags + task] = 1.0 if total == 0 else 0.0
        task = next_task(n_threads, task)
    barrier(control, n_threads)
    finite = True
    for chunk in range(n_chunks):
        finite = finite and partials[flags + chunk] != 0.0
    return finite


@helper
def _visit(tid, n_threads, control, python, every, interval, completed, stop):
    # After an epoch: thread 0 visits Python when one is due (every ``every`` epochs, when
    # ``interval`` nanoseconds have passed, or when training stops here), the others waiting;
    # every thread returns whether to stop (the rule's ``stop``, or the visit's answer).
    barrier(control, n_threads)
    if tid == 0:
        due = stop != 0 or (every > 0 and completed % every == 0)
        due = due or (interval > 0 and _clock(control) - control[CONTROL.visited] >= interval)
        halt = np.int64(0)
        if due:
            halt = python(VISIT_EPOCH, completed)
            control[CONTROL.visited] = _clock(control)
        control[CONTROL.halt] = halt
    barrier(control, n_threads)
    return np.int64(1) if stop != 0 or control[CONTROL.halt] != 0 else np.int64(0)


def train_epochs(architecture, state, data, work, settings, control, n_threads, end=None, python=None):
    """Run ``settings.epochs`` whole epochs of mini-batch gradient descent in one call.

    Each epoch: a row order (``shuffle_order`` when shuffling, else 0..n−1), then for each batch
    of ``batch_size`` consecutive rows of that order (the last one may be shorter): gather,
    forward, backprop, one optimizer step over the flat parameter buffer.

    The call ends early, with the parameters, optimizer state and step counter put back to how
    they were at the end of the last completed epoch (or at the call's start), when

    * a batch loss, or after an epoch a parameter or optimizer-state entry, is NaN or infinite
      (``control[CONTROL.outcome] = OUTCOME_DIVERGED``), or
    * ``control[CONTROL.stop]`` is set, by another thread, say (checked before every batch;
      ``OUTCOME_INTERRUPTED``).

    Otherwise ``control[CONTROL.outcome] = OUTCOME_FINISHED`` (or ``OUTCOME_STOPPED`` when the
    stopping rule or a visit ended training after an epoch).

    Parameters
    ----------
    architecture : layout.Architecture
    state : layout.TrainState
        Updated in place.
    data : layout.Data
    work : layout.Work
        ``work.epoch_losses[:settings.epochs]`` receives each completed epoch's training loss:
        the weighted mean of the batch losses over the epoch (for sse, their sum), each taken
        before its batch's update.
    settings : layout.Settings
    control : ndarray of int64, shape (CONTROL.width,)
        Stop request (read), outcome (written) and the team's synchronisation slots.
    n_threads : int
        Threads of the team.
    end : layout.EpochEnd, optional
        Validation, the stopping rule and visits to Python after each epoch; default: none.
    python : stages.PythonCall, optional
        The fit's calls into Python: visits (``end.visits``) and, for data-parallel fits, the
        exchange between ranks.

    Returns
    -------
    int
        The number of epochs completed (``settings.epochs`` unless the call ended early).
    """
    from .network import network_pieces
    from .phases import bundle as phases_bundle
    from .pieces import quiet, updates
    from .stages import bind, readonly

    dtype = state.params.dtype
    if end is None:
        end = make_epoch_end(architecture, dtype, max(int(settings.epochs), 1))
    pieces, gemm = network_pieces(architecture, settings.loss, dtype)
    if gemm != settings.gemm:
        settings = settings._replace(gemm=gemm)
    needed = []
    if settings.track or settings.clip_norm > 0.0 or settings.clip_value > 0.0:
        needed.append("condition")
    if end.rule.validate or end.rule.mode != 0:
        needed.append("monitor")
    python = None if python is None else python.for_loop()
    arguments = (phases_bundle(dtype), pieces, updates(dtype, settings.optimizer), bind(dtype, needed, python), architecture, state,
                 readonly(data), work, settings, end)  # fmt: skip
    with quiet():
        # (looked up in this module: ``build`` may have replaced it by a copy without the cache)
        return int(run_team(globals()["train_loop"], arguments, n_threads, control))
