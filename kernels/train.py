"""Whole-network kernels: forward pass, loss, backprop, shuffling and the compiled training loop.

The network's parameters live in one flat buffer ``params``; ``meta`` (int64, shape
(n_layers, 5)) says where each layer's weights and bias sit in it (see
:mod:`fastgd.kernels.codes`). Activations and local gradients live in flat work buffers holding
``capacity`` rows per layer, layer after layer: layer l's block starts at
``capacity * sum(n_out of the layers before l)``. Every array is owned by the caller, so
``train_epochs`` allocates nothing.
"""

import types

import numpy as np
from numba import njit

from .._config import JIT_OPTIONS
from .codes import (
    CONTROL_OUTCOME,
    CONTROL_STOP,
    META_ACTIVATION,
    META_B_OFFSET,
    META_N_IN,
    META_N_OUT,
    META_W_OFFSET,
    OPT_SGD,
    OUTCOME_DIVERGED,
    OUTCOME_FINISHED,
    OUTCOME_INTERRUPTED,
    SSE,
)
from .dense import (
    activate,
    dense_forward,
    dense_gradients,
    dense_linear,
    hidden_delta,
    loss_value,
    output_delta,
)
from .extras import scheduled_lr, weight_penalty
from .guard import all_finite, copy_into, read_flag
from .optim import UPDATES
from .small import forward_backward_small, is_small

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


@njit(inline="always", **JIT_OPTIONS)
def _weights(params, meta, layer):
    n_in, n_out = meta[layer, META_N_IN], meta[layer, META_N_OUT]
    w_offset, b_offset = meta[layer, META_W_OFFSET], meta[layer, META_B_OFFSET]
    return params[w_offset : w_offset + n_in * n_out].reshape((n_in, n_out)), params[b_offset : b_offset + n_out]


@njit(inline="always", **JIT_OPTIONS)
def _block(buffer, meta, layer, rows):
    # Rows [0, rows) of layer `layer`'s block in a flat per-layer work buffer.
    width = 0
    for k in range(meta.shape[0]):
        width += meta[k, META_N_OUT]
    capacity = buffer.size // width
    offset = 0
    for k in range(layer):
        offset += capacity * meta[k, META_N_OUT]
    n_out = meta[layer, META_N_OUT]
    return buffer[offset : offset + rows * n_out].reshape((rows, n_out))


@njit(**JIT_OPTIONS)
def forward(params, meta, x, acts, z_out):
    """Forward pass of the whole network.

    Parameters
    ----------
    params : ndarray, shape (n_params,)
    meta : ndarray of int64, shape (n_layers, 5)
    x : ndarray, shape (rows, n_in)
    acts : ndarray, shape (capacity * sum(n_out),)
        Work buffer; layer outputs are written into it (the last block is the prediction).
    z_out : ndarray, shape (capacity * n_out_last,)
        Written with the output layer's pre-activations.
    """
    rows = x.shape[0]
    last = meta.shape[0] - 1
    a_in = x
    for layer in range(last + 1):
        W, b = _weights(params, meta, layer)
        a_out = _block(acts, meta, layer, rows)
        if layer == last:
            z = z_out[: a_out.size].reshape(a_out.shape)
            dense_linear(a_in, W, b, z)
            activate(z, a_out, meta[layer, META_ACTIVATION])
        else:
            dense_forward(a_in, W, b, a_out, meta[layer, META_ACTIVATION])
        a_in = a_out


@njit(**JIT_OPTIONS)
def evaluate_loss(params, meta, x, y, row_scale, acts, z_out, loss):
    """Forward pass and loss of a batch (see ``loss_value``); returns the loss as a float."""
    forward(params, meta, x, acts, z_out)
    last = meta.shape[0] - 1
    a = _block(acts, meta, last, x.shape[0])
    return loss_value(z_out[: a.size].reshape(a.shape), a, y, row_scale, loss)


@njit(**JIT_OPTIONS)
def forward_backward(params, grads, meta, x, y, row_scale, acts, deltas, z_out, loss):
    """Forward pass, loss and backprop of one batch; writes every gradient into ``grads``.

    Parameters
    ----------
    params, grads : ndarray, shape (n_params,)
        ``grads`` has the layout of ``params`` and is overwritten.
    meta : ndarray of int64, shape (n_layers, 5)
    x : ndarray, shape (rows, n_in)
    y : ndarray, shape (rows, n_out_last)
    row_scale : ndarray, shape (rows,)
        1/n (mean losses) or 1 (sse), times sample weights.
    acts, deltas : ndarray, shape (capacity * sum(n_out),)
        Work buffers for layer outputs and local gradients.
    z_out : ndarray, shape (capacity * n_out_last,)
    loss : int
        Loss code.

    Returns
    -------
    float
        The batch loss at the parameters before any update.
    """
    rows = x.shape[0]
    last = meta.shape[0] - 1
    # evaluate_loss's two steps, called directly: one level less of nested compiled functions
    # is ~1 s less compilation (each level re-optimises the code of the levels below it).
    forward(params, meta, x, acts, z_out)
    a = _block(acts, meta, last, rows)
    value = loss_value(z_out[: a.size].reshape(a.shape), a, y, row_scale, loss)
    output_delta(_block(acts, meta, last, rows), y, row_scale, _block(deltas, meta, last, rows), meta[last, META_ACTIVATION], loss)
    for layer in range(last, -1, -1):
        delta = _block(deltas, meta, layer, rows)
        grad_W, grad_b = _weights(grads, meta, layer)
        if layer == 0:
            dense_gradients(x, delta, grad_W, grad_b)
        else:
            a_in = _block(acts, meta, layer - 1, rows)
            dense_gradients(a_in, delta, grad_W, grad_b)
            W, _ = _weights(params, meta, layer)
            hidden_delta(delta, W, a_in, _block(deltas, meta, layer - 1, rows), meta[layer - 1, META_ACTIVATION])
    return value


@njit(inline="always", **JIT_OPTIONS)
def _mix(z):
    # splitmix64's finaliser: a bijection on uint64 with good avalanche.
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@njit(inline="always", **JIT_OPTIONS)
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


@njit(inline="always", **JIT_OPTIONS)
def _gather(X, Y, rows, xb, yb):
    # Serial on purpose: a parallel gather saved ~2 % of a `mid` step and cost 1 s of compilation.
    for r in range(rows.size):
        i = rows[r]
        for k in range(X.shape[1]):
            xb[r, k] = X[i, k]
        for k in range(Y.shape[1]):
            yb[r, k] = Y[i, k]


def train_epochs(
    params,
    grads,
    opt_state,
    X,
    Y,
    sample_weight,
    order,
    keys,
    x_batch,
    y_batch,
    row_scale,
    acts,
    deltas,
    z_out,
    saved_params,
    saved_state,
    epoch_losses,
    step,
    control,
    meta,
    loss,
    opt_kind,
    lr,
    hyper,
    batch_size,
    shuffle,
    seed,
    first_epoch,
    schedule_kind,
    schedule,
    l1,
    l2,
):
    """Run up to ``epoch_losses.size`` whole epochs of mini-batch gradient descent in one call.

    Each epoch: a row order (``shuffle_order`` when shuffling, else 0..n−1), then for each batch
    of ``batch_size`` consecutive rows of that order (the last one may be shorter): gather,
    forward, backprop (``forward_backward_small`` when every product is tiny), one optimizer
    step over the flat parameter buffer.

    The call ends early, with the parameters, optimizer state and step counter put back to how
    they were at the end of the last completed epoch (or at the call's start), when

    * a batch loss, or after an epoch a parameter or optimizer-state entry, is NaN or infinite
      (``control[CONTROL_OUTCOME] = OUTCOME_DIVERGED``), or
    * ``control[CONTROL_STOP]`` is set, by another thread, say (checked before every batch;
      ``OUTCOME_INTERRUPTED``).

    Otherwise ``control[CONTROL_OUTCOME] = OUTCOME_FINISHED``.

    Parameters
    ----------
    params, grads : ndarray, shape (n_params,)
    opt_state : ndarray, shape (n_slots, n_params)
    X : ndarray, shape (n, n_in)
    Y : ndarray, shape (n, n_out)
    sample_weight : ndarray, shape (n,)
        Row weights (ones for the plain mean).
    order : ndarray of int64, shape (n,); keys : ndarray of uint64, shape (n,)
        Work buffers for the row order.
    x_batch : ndarray, shape (capacity * n_in,); y_batch : ndarray, shape (capacity * n_out,)
    row_scale : ndarray, shape (capacity,)
    acts, deltas : ndarray, shape (capacity * sum(n_out),)
    z_out : ndarray, shape (capacity * n_out,)
        Work buffers, ``capacity >= batch_size``.
    saved_params : ndarray, shape (n_params,); saved_state : ndarray, shaped like opt_state
        Work buffers for the state at the end of the last completed epoch.
    epoch_losses : ndarray of float64, shape (n_epochs,)
        Written with each completed epoch's training loss: the weighted mean of the batch losses
        over the epoch (for sse, their sum), each taken before its batch's update.
    step : ndarray of int64, shape (1,)
        The optimizer's step counter, advanced once per batch.
    control : ndarray of int64, shape (CONTROL_WIDTH,)
        Stop request (read) and outcome (written); see above.
    meta : ndarray of int64, shape (n_layers, 5)
    loss, opt_kind : int
    lr : float
    hyper : ndarray of float64
    batch_size : int
    shuffle : bool
    seed : int
        Shuffle seed.
    first_epoch : int
        Number of epochs trained before this call, which selects the shuffle permutations.
    schedule_kind : int; schedule : ndarray of float64, shape (2,)
        Learning-rate schedule (see ``scheduled_lr``), applied per step from ``lr``.
    l1, l2 : float
        Weight penalties (see ``weight_penalty``), added to each batch's loss and gradient.

    Returns
    -------
    int
        The number of epochs completed (``epoch_losses.size`` unless the call ended early).
    """
    loop = training_loop(bool(is_small(meta, batch_size)), int(opt_kind))
    return loop(
        params,
        grads,
        opt_state,
        X,
        Y,
        sample_weight,
        order,
        keys,
        x_batch,
        y_batch,
        row_scale,
        acts,
        deltas,
        z_out,
        saved_params,
        saved_state,
        epoch_losses,
        step,
        control,
        meta,
        loss,
        lr,
        hyper,
        batch_size,
        shuffle,
        seed,
        first_epoch,
        schedule_kind,
        schedule,
        l1,
        l2,
    )


# The loop's two inner calls, named here and rebound in each specialisation (``training_loop``):
# the forward and backward pass of a batch, and the optimizer's update (one of optim.UPDATES).
batch_pass = forward_backward
optimizer_update = UPDATES[OPT_SGD]


def _train_loop(
    params,
    grads,
    opt_state,
    X,
    Y,
    sample_weight,
    order,
    keys,
    x_batch,
    y_batch,
    row_scale,
    acts,
    deltas,
    z_out,
    saved_params,
    saved_state,
    epoch_losses,
    step,
    control,
    meta,
    loss,
    lr,
    hyper,
    batch_size,
    shuffle,
    seed,
    first_epoch,
    schedule_kind,
    schedule,
    l1,
    l2,
):
    # ``train_epochs``'s body, compiled once per (batch pass, optimizer) by ``training_loop``.
    n, n_in = X.shape
    n_out = Y.shape[1]
    t = params.dtype.type
    is_mean = loss != SSE
    total_weight = 0.0
    for i in range(n):
        total_weight += sample_weight[i]
    copy_into(saved_params, params)
    copy_into(saved_state, opt_state)
    saved_step = step[0]
    outcome = OUTCOME_FINISHED
    completed = 0
    for e in range(epoch_losses.size):
        if shuffle:
            shuffle_order(order, keys, seed, first_epoch + e)
        else:
            for i in range(n):
                order[i] = i
        epoch_loss = 0.0
        for start in range(0, n, batch_size):
            if read_flag(control, CONTROL_STOP) != 0:
                outcome = OUTCOME_INTERRUPTED
                break
            rows = min(batch_size, n - start)
            xb = x_batch[: rows * n_in].reshape((rows, n_in))
            yb = y_batch[: rows * n_out].reshape((rows, n_out))
            _gather(X, Y, order[start : start + rows], xb, yb)
            batch_weight = 0.0
            for r in range(rows):
                i = order[start + r]
                row_scale[r] = sample_weight[i]
                batch_weight += sample_weight[i]
            if is_mean:
                inv = t(1.0 / batch_weight)
                for r in range(rows):
                    row_scale[r] *= inv
            value = batch_pass(params, grads, meta, xb, yb, row_scale[:rows], acts, deltas, z_out, loss)
            value += weight_penalty(params, grads, meta, l1, l2)
            if not np.isfinite(value):
                outcome = OUTCOME_DIVERGED
                break
            epoch_loss += value * batch_weight if is_mean else value
            step[0] += 1
            optimizer_update(params, grads, opt_state, step[0], scheduled_lr(schedule_kind, lr, step[0], schedule), hyper)
        if outcome != OUTCOME_FINISHED:
            break
        epoch_loss = epoch_loss / total_weight if is_mean else epoch_loss
        if not (np.isfinite(epoch_loss) and all_finite(params) and all_finite(opt_state)):
            outcome = OUTCOME_DIVERGED
            break
        epoch_losses[e] = epoch_loss
        completed += 1
        copy_into(saved_params, params)
        copy_into(saved_state, opt_state)
        saved_step = step[0]
    if outcome != OUTCOME_FINISHED:
        copy_into(params, saved_params)
        copy_into(opt_state, saved_state)
        step[0] = saved_step
    control[CONTROL_OUTCOME] = outcome
    return completed


_LOOPS = {}


def training_loop(small, opt_kind):
    """The compiled loop behind ``train_epochs`` for one batch pass and one optimizer.

    One loop that branched on both at run time compiled every optimizer and both batch passes
    into every fit's first call (28.7 s cold for XOR here); a loop specialised on them compiles
    only what the fit uses. Each specialisation is ``_train_loop``'s code with ``batch_pass``
    and ``optimizer_update`` bound to its own functions and its own name, so that Numba caches it
    on disk under that name (a jitted function passed as an argument would miss the cache in
    every new process: Numba keys it by object identity).

    Parameters
    ----------
    small : bool
        ``forward_backward_small`` (every product tiny; see ``is_small``) or ``forward_backward``.
    opt_kind : int
        Optimizer code, a key of ``optim.UPDATES``.

    Returns
    -------
    numba dispatcher
        Called with ``train_epochs``'s arguments less ``opt_kind``.
    """
    key = (bool(small), int(opt_kind))
    loop = _LOOPS.get(key)
    if loop is None:
        update = UPDATES.get(key[1])
        if update is None:
            raise ValueError(f"opt_kind must be an optimizer code ({sorted(UPDATES)}), got {opt_kind!r}")
        namespace = dict(_train_loop.__globals__)
        namespace["batch_pass"] = forward_backward_small if key[0] else forward_backward
        namespace["optimizer_update"] = update
        name = f"train_loop_{'small' if key[0] else 'dense'}_{update.__name__.removesuffix('_update')}"
        function = types.FunctionType(_train_loop.__code__, namespace, name)
        function.__qualname__ = name
        function.__module__ = _train_loop.__module__
        loop = _LOOPS.setdefault(key, njit(**JIT_OPTIONS)(function))
    return loop
