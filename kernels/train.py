# stamp: 05223ad5e50c2b34221d1b18de459543
"""The compiled training loop: whole epochs of mini-batch gradient descent in one call, run by a
team of threads (``kernels.team``), and the row shuffle it uses.

``train_epochs(architecture, state, data, work, settings, control, n_threads, end, python)`` is
the entry point (its NumPy twin, ``fastgd.reference.train_epochs``, takes the same bundles). The
loop is compiled once per dtype for every network and setting: activations, losses and
optimizers are branches chosen by code, clipping, validation and the stopping rule run only when
the settings ask, and Python is reached through one C callback (``PythonCall``).

The loop reads top-down as its stages:

* ``_start`` (the epoch: its row order, its batch weights);
* per batch: ``_gather`` (the batch's rows into the batch buffers), ``_gradient`` (forward and
  backward pass of each shard, ``kernels.passes``; the batch loss, summed over ranks with MPI),
  ``_check`` (a stop request, a loss that is not finite), ``_step`` (the learning rate, clipping
  and health, ``_update``: the optimizer's update);
* after the epoch: ``_finite`` and ``_save`` (the epoch checked and kept), ``monitor``
  (validation and the stopping rule, ``kernels.epoch_end``) and ``_visit`` (Python's callbacks).

Every thread runs every stage and takes the same decisions, from values read after a barrier.
"""

import ctypes

import numpy as np

from . import health
from .epoch_end import (
    EXCHANGE_STEP,
    EXCHANGE_WEIGHTS,
    VISIT_EPOCH,
    VISIT_HEARTBEAT,
    EpochEnd,
    make_epoch_end,
    monitor,
)
from .exchange import exchange
from .jit import current, first_call, helper, kernel, subroutine
from .layout import (
    CONTROL,
    OUTCOME_DIVERGED,
    OUTCOME_FINISHED,
    OUTCOME_INTERRUPTED,
    OUTCOME_STOPPED,
    Architecture,
    Buffers,
    Data,
    TrainState,
    Work,
    chunk_count,
    layer_blocks,
    shard_buffers,
)
from .lowlevel import CALLBACKS, address, call_piece, call_python, monotonic_ns, span, unowned, unowned2
from .optim import lr_at, update
from .passes import GOLDEN, NO_DROPOUT, Batch, Pass, batch_value, fill, mix, piece_addresses, step_key
from .products import gemm_address
from .team import barrier, next_task, read_flag, run_team, write_flag

# --------------------------------------------------------------------------- the shuffle


@subroutine
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


# --------------------------------------------------------------------------- the loop


@kernel
def train_loop(tid, n_threads, control, architecture, state, data, work, settings, end):
    """``train_epochs``'s body, run by every thread of the team (see the module's docstring).

    A batch is cut into ``settings.shards`` shards of consecutive rows (``layout.shard_plan``),
    whose gradients are added in shard order: with ``settings.solo`` every thread takes whole
    shards (tiny layers: no barrier between layers, no data crossing cores), else the team works
    through the shards one by one, splitting each layer's products.

    Data-parallel (``settings.ranks`` > 1): this process computes its share of the batch (see
    ``layout.Settings``) as one shard; the exchange then sums the gradient, the loss and the stop
    request over the ranks (once per step), and every rank takes the same step with the same
    sums. Only rank 0's shard carries the weight penalty.

    The larger functions (the passes, the update, the condition and monitor stages, the
    exchange) are called from here only: Numba optimises a compiled function together with
    everything it calls, so a large function called from several small ones would be optimised
    again in each.

    Returns
    -------
    int64
        The number of epochs completed.
    """
    team = (tid, n_threads, control)
    # Views that hold no reference count: the stages pass these and slices of them at every
    # step, and a counted array costs an atomic increment and decrement at each (measured on xor:
    # a fifth of a step's time).
    state, data, work = _unowned_state(state), _unowned_data(data), _unowned_work(work)
    architecture, end = _unowned_architecture(architecture), _unowned_end(end)
    conditioned = settings.track or settings.clip_norm > 0.0 or settings.clip_value > 0.0
    _save(team, work.saved_params, state.params, work.saved_state, state.opt_state)
    saved_step = current_step = state.step[0]
    outcome, completed = OUTCOME_FINISHED, 0
    if tid == 0:
        control[CONTROL.visited] = _clock(control)
    for epoch in range(settings.epochs):
        total_weight = _start(team, epoch, data, work, settings)
        if settings.partitioned:
            total_weight = exchange(
                EXCHANGE_WEIGHTS, team, settings.python, work, data.sample_weight, settings.batch_size, 0.0
            )
        if conditioned:
            health.condition(health.EPOCH_START, team, state.params, architecture, work, epoch, (0, 0), settings)
        epoch_loss = 0.0
        for start in range(0, data.sample_weight.size, settings.batch_size):
            batch = _gather(team, start, completed, architecture, data, work, settings, end)
            value = _gradient(team, current_step, batch, architecture, state, data, work, settings)
            if settings.ranks > 1:
                value = exchange(
                    EXCHANGE_STEP, team, settings.python, work, data.sample_weight, settings.batch_size, value
                )
            outcome = _check(control, value)
            if outcome != OUTCOME_FINISHED:
                break
            epoch_loss += value * batch[4] if settings.mean else value
            current_step += 1
            _step(team, current_step, epoch, batch, architecture, state, work, settings, end, conditioned)
        if outcome != OUTCOME_FINISHED:
            break
        epoch_loss = epoch_loss / total_weight if settings.mean else epoch_loss
        if not (_finite(team, state.params, state.opt_state, work.chunks) and np.isfinite(epoch_loss)):
            outcome = OUTCOME_DIVERGED
            break
        if tid == 0:
            work.epoch_losses[epoch] = epoch_loss
            state.step[0] = current_step
        # The epoch's gradient health reads saved_params (the epoch's start) before _save.
        if conditioned:
            health.condition(health.EPOCH_END, team, state.params, architecture, work, epoch, (0, 0), settings)
        _save(team, work.saved_params, state.params, work.saved_state, state.opt_state)
        completed += 1
        saved_step = current_step
        stop = np.int64(0)
        if end.rule.validate or end.rule.mode != 0:
            stop = monitor(
                team,
                architecture,
                state.params,
                end,
                epoch,
                epoch_loss,
                (settings.loss, settings.loss_parameter),
                settings.gemm,
                settings.forward,
            )
        if end.visits.enabled:
            stop = _visit(team, settings.python, end.visits, completed, stop)
        if stop != 0:
            outcome = OUTCOME_STOPPED
            break
    if outcome != OUTCOME_FINISHED and outcome != OUTCOME_STOPPED:
        # Back to the end of the last completed epoch.
        barrier(control, n_threads)
        _save(team, state.params, work.saved_params, state.opt_state, work.saved_state)
    if tid == 0:
        state.step[0] = saved_step
        control[CONTROL.outcome] = outcome
    return np.int64(completed)


@helper
def _start(team, epoch, data, work, settings):
    # The epoch's row order (thread 0's); returns the epoch's total sample weight (the ranks'
    # sum, partitioned data, comes from the exchange).
    tid, n_threads, control = team
    if tid == 0:
        if settings.shuffle:
            _shuffle(work.order, work.keys, settings.seed, settings.first_epoch + epoch)
        else:
            for i in range(work.order.size):
                work.order[i] = i
    total = 0.0
    for i in range(data.sample_weight.size):
        total += data.sample_weight[i]
    barrier(control, n_threads)
    return total


@helper
def _gather(team, start, completed, architecture, data, work, settings, end):
    # The batch at ``start`` of the epoch's order: thread 0's heartbeat visit and its reading of
    # the stop request, then this rank's rows of the batch into the batch buffers (by the team,
    # in blocks as layer 0's product cuts them, unless threads take whole shards). Returns the
    # batch: (start, lo, local, inv, weight), this rank's rows [lo, lo + local), the row scale's
    # factor and the batch's weight.
    tid, n_threads, control = team
    n = data.sample_weight.size
    rows = settings.batch_size if settings.batch_size < n - start else n - start
    if tid == 0:
        visits = end.visits
        if visits.enabled and visits.beat and _clock(control) - control[CONTROL.visited] >= visits.interval:
            # (the others wait at the next barrier meanwhile; an answer other than 0 is a stop
            # request, as a Ctrl-C is)
            if call_python(settings.python, VISIT_HEARTBEAT, completed) != 0:
                write_flag(control, CONTROL.stop, 1)
            control[CONTROL.visited] = _clock(control)
        write_flag(control, CONTROL.stop_seen, read_flag(control, CONTROL.stop))
    if settings.partitioned:
        weight, lo, local = work.batch_weights[start // settings.batch_size], 0, rows
    else:
        weight = 0.0
        for r in range(rows):
            weight += data.sample_weight[work.order[start + r]]
        lo = settings.rank * rows // settings.ranks
        local = (settings.rank + 1) * rows // settings.ranks - lo
    t = work.x_batch.dtype.type
    inv = t(1.0 / weight) if settings.mean else t(1.0)
    if not settings.solo:
        n_blocks = layer_blocks(architecture, 0, local)
        task = tid
        while task < n_blocks:
            _copy_rows(
                data,
                work,
                start,
                lo + task * local // n_blocks,
                lo + (task + 1) * local // n_blocks,
                inv,
                settings.mean,
            )
            task = next_task(n_threads, task)
        barrier(control, n_threads)
    return start, lo, local, inv, weight


@subroutine
def _copy_rows(data, work, start, first, stop, inv, mean):
    # Rows [first, stop) of the batch starting at ``start`` of this epoch's order into the batch
    # buffers: inputs, targets and row scales (the sample weight times ``inv``, one over the
    # batch's weight, for mean losses).
    X, Y, sample_weight = data
    n_in, n_out = np.uint64(X.shape[1]), np.uint64(Y.shape[1])
    for r in span(first, stop - first):
        i = work.order[np.uint64(start) + r]
        for k in span(0, n_in):
            work.x_batch[r * n_in + k] = X[i, k]
        for k in span(0, n_out):
            work.y_batch[r * n_out + k] = Y[i, k]
        work.row_scale[r] = sample_weight[i] * inv if mean else sample_weight[i]


@helper
def _gradient(team, current_step, batch, architecture, state, data, work, settings):
    # The batch's gradient, shard by shard (solo: each thread takes whole shards and gathers
    # their rows itself), and this rank's share of its loss with the weight penalty.
    tid, n_threads, control = team
    start, lo, local, inv, weight = batch
    solo, shards = settings.solo, settings.shards
    l1, l2 = _penalties(settings, weight)
    key = step_key(settings.dropout_seed, current_step + 1) if _dropping(architecture) else NO_DROPOUT
    options = Pass(settings.loss, settings.loss_parameter, True, key, settings.gemm)
    member = (np.int64(0), np.int64(1), control) if solo else team
    n_in, n_out = data.X.shape[1], data.Y.shape[1]
    for shard in range(tid if solo else 0, shards, n_threads if solo else 1):
        first, stop = lo + shard * local // shards, lo + (shard + 1) * local // shards
        if solo:
            _copy_rows(data, work, start, first, stop, inv, settings.mean)
        if solo or tid == 0:
            x = work.x_batch[first * n_in : stop * n_in]
            rows = Batch(x, work.y_batch[first * n_out : stop * n_out], work.row_scale[first:stop], stop - first, first)
            penalties = (l1, l2) if shard == 0 else (0.0, 0.0)
            fill(
                work.passes[shard],
                control,
                architecture,
                state.params,
                work.grads[shard],
                rows,
                shard_buffers(work, shard),
                options,
                penalties,
            )
        if not solo:
            barrier(control, n_threads)
        args = address(work.passes, shard)
        call_piece(settings.forward, member[0], member[1], args)
        call_piece(settings.backward, member[0], member[1], args)
    if solo:
        barrier(control, n_threads)
    value = 0.0
    for shard in range(shards):
        rows = (shard + 1) * local // shards - shard * local // shards
        value += batch_value(
            architecture, rows, shard_buffers(work, shard), l1 if shard == 0 else 0.0, l2 if shard == 0 else 0.0
        )
    return value


@helper
def _step(team, current_step, epoch, batch, architecture, state, work, settings, end, conditioned):
    # The optimizer step at this step's learning rate (the schedule's, times the stopping rule's
    # scale), after the gradient's clipping and health when the fit asks for them.
    lr = lr_at(settings.schedule_kind, settings.lr, current_step, settings.first_epoch + epoch, settings.schedule)
    if conditioned:
        span = (batch[1], batch[2])
        health.condition(health.STEP, team, state.params, architecture, work, epoch, span, settings)
    shards = 1 if conditioned else settings.shards
    _update(team, state, work, settings, shards, current_step, lr * end.state[0]["lr_scale"])


@helper
def _check(control, value):
    # After a batch's gradient: a stop request (thread 0's reading, or any rank's), or a loss
    # that is not finite, ends the call.
    if read_flag(control, CONTROL.stop_seen) != 0:
        return OUTCOME_INTERRUPTED
    if not np.isfinite(value):
        return OUTCOME_DIVERGED
    return OUTCOME_FINISHED


@helper
def _update(team, state, work, settings, shards, current_step, lr):
    # The optimizer's update over fixed chunks of the flat buffers, the shards' gradients added
    # first, in shard order (``shards``: 1 when the condition stage added them).
    tid, n_threads, control = team
    params, grads = state.params, work.grads
    n_params = params.size
    n_chunks = chunk_count(n_params)
    task = tid
    while task < n_chunks:
        first, stop = task * n_params // n_chunks, (task + 1) * n_params // n_chunks
        if shards > 1:
            health.add_shards(grads, shards, first, stop)
        update(settings.optimizer, params, grads[0], state.opt_state, first, stop, current_step, lr, settings.hyper)
        task = next_task(n_threads, task)
    barrier(control, n_threads)


@helper
def _penalties(settings, batch_weight):
    # This rank's weight penalties for a batch: only rank 0 carries them (added once); scikit-
    # learn's alpha is a penalty per unit of the batch's sample weight.
    l1 = settings.l1 if settings.rank == 0 else 0.0
    l2 = settings.l2 if settings.rank == 0 else 0.0
    if settings.penalty_per_weight:
        return l1 / batch_weight, l2 / batch_weight
    return l1, l2


@helper
def _dropping(architecture):
    layers = architecture.layers
    for layer in range(layers.size):
        if layers[layer]["dropout"] > 0.0:
            return True
    return False


@subroutine
def _clock(control):
    return monotonic_ns(
        control[CONTROL.clock_kind],
        control[CONTROL.clock_address],
        control[CONTROL.clock_parameter],
        control[CONTROL.clock_scratch : CONTROL.clock_scratch + 2],
    )


@subroutine
def _save(team, params_to, params_from, state_to, state_from):
    # params_to = params_from and state_to = state_from (row by row), in the update's chunks,
    # as a phase the whole team has left when this returns.
    tid, n_threads, control = team
    n = params_from.size
    n_chunks = chunk_count(n)
    task = tid
    while task < n_chunks:
        first, stop = task * n // n_chunks, (task + 1) * n // n_chunks
        _copy(params_to[first:stop], params_from[first:stop])
        for row in range(state_from.shape[0]):
            _copy(state_to[row, first:stop], state_from[row, first:stop])
        task = next_task(n_threads, task)
    barrier(control, n_threads)


@subroutine
def _finite(team, params, state, chunks):
    # Are every parameter and state entry finite (the same answer on every thread)? Per chunk,
    # ``v * 0`` is 0 for finite v and NaN otherwise (the fast-math flags exclude nnan/ninf,
    # without which LLVM would fold it to 0); the chunks' flags go to ``chunks``.
    tid, n_threads, control = team
    n = params.size
    n_chunks = chunk_count(n)
    zero = params.dtype.type(0.0)
    task = tid
    while task < n_chunks:
        first, stop = task * n // n_chunks, (task + 1) * n // n_chunks
        total = _zeroed_sum(params[first:stop], zero)
        for row in range(state.shape[0]):
            total += _zeroed_sum(state[row, first:stop], zero)
        chunks[task] = 1.0 if total == 0 else 0.0
        task = next_task(n_threads, task)
    barrier(control, n_threads)
    finite = True
    for chunk in range(n_chunks):
        finite = finite and chunks[chunk] != 0.0
    return finite


@subroutine
def _copy(target, source):
    for i in range(source.size):
        target[i] = source[i]


@subroutine
def _zeroed_sum(values, zero):
    # Σ v·0: 0 for finite values, NaN otherwise.
    total = zero
    for i in range(values.size):
        total += values[i] * zero
    return total


@subroutine
def _visit(team, python, visits, completed, stop):
    # After an epoch: thread 0 visits Python when one is due (every ``visits.every`` epochs, when
    # ``visits.interval`` nanoseconds have passed, or when training stops here), the others
    # waiting; every thread returns whether to stop (the rule's ``stop``, or the visit's answer).
    tid, n_threads, control = team
    barrier(control, n_threads)
    if tid == 0:
        due = stop != 0 or (visits.every > 0 and completed % visits.every == 0)
        due = due or (visits.interval > 0 and _clock(control) - control[CONTROL.visited] >= visits.interval)
        halt = np.int64(0)
        if due:
            halt = call_python(python, VISIT_EPOCH, completed)
            control[CONTROL.visited] = _clock(control)
        control[CONTROL.halt] = halt
    barrier(control, n_threads)
    return np.int64(1) if stop != 0 or control[CONTROL.halt] != 0 else np.int64(0)


# --------------------------------------------------------------------------- views


@subroutine
def _unowned_state(state):
    return TrainState(unowned(state.params), unowned2(state.opt_state), unowned(state.step))


@subroutine
def _unowned_architecture(architecture):
    return Architecture(unowned(architecture.layers), architecture.n_params, architecture.units, architecture.blas)


@subroutine
def _unowned_end(end):
    buffers = end.buffers
    return EpochEnd(
        unowned(end.X),
        unowned(end.Y),
        unowned(end.row_scale),
        Buffers(
            unowned(buffers.acts),
            unowned(buffers.slopes),
            unowned(buffers.zs),
            unowned(buffers.deltas),
            unowned(buffers.losses),
            unowned(buffers.penalties),
            unowned(buffers.transposed),
        ),
        unowned(end.best_params),
        unowned(end.records),
        unowned(end.state),
        end.rule,
        end.visits,
        unowned(end.passes),
    )


@subroutine
def _unowned_data(data):
    return Data(unowned2(data.X), unowned2(data.Y), unowned(data.sample_weight))


@subroutine
def _unowned_work(work):
    return Work(
        unowned2(work.grads),
        unowned(work.order),
        unowned(work.keys),
        unowned(work.x_batch),
        unowned(work.y_batch),
        unowned(work.row_scale),
        unowned2(work.acts),
        unowned2(work.slopes),
        unowned2(work.zs),
        unowned2(work.deltas),
        unowned2(work.losses),
        unowned2(work.penalties),
        unowned2(work.transposed),
        unowned(work.chunks),
        unowned(work.saved_params),
        unowned2(work.saved_state),
        unowned(work.epoch_losses),
        unowned(work.scalars),
        unowned(work.batch_weights),
        unowned2(work.health),
        unowned2(work.health_partials),
        unowned2(work.health_counts),
        unowned2(work.health_sums),
        unowned(work.passes),
    )


# --------------------------------------------------------------------------- from Python

_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_int64, ctypes.c_int64)


class PythonCall:
    """A Python function ``function(kind, argument) -> int`` that compiled code calls: a ctypes
    callback (which takes the GIL for the call), whose address the loop receives
    (``Settings.python``) and calls through ``lowlevel.call_python``.

    An exception the function raises cannot cross compiled code: it is kept in ``error`` (the
    first one), the call answers ``failed`` (1: stop training after this epoch), and the caller
    raises it once the compiled call has returned (``raise_error``).
    """

    def __init__(self, function, failed=1):
        self.function, self.failed, self.error = function, int(failed), None

        def trampoline(kind, argument):
            if self.error is not None:
                return self.failed
            try:
                return int(function(int(kind), int(argument)))
            except BaseException as error:  # handed to the caller by raise_error
                self.error = error
                return self.failed

        self._python = trampoline
        self._callback = _CALLBACK(trampoline)
        CALLBACKS[self.address] = self

    @property
    def address(self) -> int:
        """The callback's address (what ``Settings.python`` carries)."""
        return ctypes.cast(self._callback, ctypes.c_void_p).value

    def __call__(self, kind, argument):
        return self._python(kind, argument)

    def raise_error(self):
        """Raise the exception the function raised, if any (once)."""
        error, self.error = self.error, None
        if error is not None:
            raise error


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
    end : epoch_end.EpochEnd, optional
        Validation, the stopping rule and visits to Python after each epoch; default: none.
    python : PythonCall, optional
        The fit's calls into Python: visits (``end.visits``) and, for data-parallel fits, the
        exchange between ranks.

    Returns
    -------
    int
        The number of epochs completed (``settings.epochs`` unless the call ended early).
    """
    dtype = state.params.dtype
    if end is None:
        end = make_epoch_end(architecture, dtype, max(int(settings.epochs), 1))
    if python is not None:
        settings = settings._replace(python=python.address)
    forward, backward = piece_addresses(dtype)
    settings = settings._replace(
        forward=forward, backward=backward, gemm=gemm_address(dtype) if architecture.blas else 0
    )
    arguments = (architecture, state, _readonly(data), work, settings, end)
    # The first call in a process compiles or loads the loop on this thread, running no epoch.
    first_call(train_loop, 0, 1, control, *arguments[:4], settings._replace(epochs=0), end)
    return int(run_team(current(train_loop), arguments, n_threads, control))


def _readonly(data):
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
