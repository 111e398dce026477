"""Pure-NumPy reference implementation: the correctness oracle and the benchmark baseline.

Every function here is the twin of the Numba kernel of the same name and signature in
:mod:`fastgd.kernels` (see ``fastgd.kernels.KERNEL_NAMES``), written for clarity rather than
speed: whole-array NumPy expressions, tables instead of branches. Outputs are written into the
arrays passed in, exactly as the kernels do, so a test can call both on copies of the same inputs
and compare. Scalars are converted to the arrays' dtype before use (NumPy would otherwise
promote a float32 array to float64 when multiplied by a float64 scalar).
"""

from __future__ import annotations

import time

import numpy as np

from .kernels import layout
from .kernels.activations import SIGMOID, SOFTMAX, TANH
from .kernels.activations import SPECS as _ACTIVATION_SPECS
from .kernels.epoch_end import (
    EXCHANGE_STEP,
    EXCHANGE_WEIGHTS,
    MONITOR_VAL_LOSS,
    MONITOR_VAL_SCORE,
    SCORE_ARGMAX,
    SCORE_R2,
    SCORE_SUBSET,
    SCORE_THRESHOLD,
    STOP_NO_IMPROVEMENT,
    STOP_PATIENCE,
    VISIT_EPOCH,
)
from .kernels.exchange import SCALAR_LOSS, SCALAR_STOP
from .kernels.layout import (
    CONTROL,
    OUTCOME_DIVERGED,
    OUTCOME_FINISHED,
    OUTCOME_INTERRUPTED,
    OUTCOME_STOPPED,
    SATURATION_THRESHOLD,
    block_of,
    layer_view,
)
from .kernels.losses import SPECS as _LOSS_SPECS
from .kernels.optim import SCHEDULES as _SCHEDULE_SPECS
from .kernels.optim import SPECS as _OPTIMIZER_SPECS
from .kernels.optim import step as _optimizer_rule_step
from .kernels.passes import NO_DROPOUT

# f(z) for each activation code, and f'(z) from the pre-activation z and the output a = f(z) for
# each elementwise one: the twins declared with each activation (kernels.activations.SPECS).
ACTIVATIONS = {code: spec.numpy_value for code, spec in _ACTIVATION_SPECS.items()}
DERIVATIVES = {
    code: spec.numpy_derivative for code, spec in _ACTIVATION_SPECS.items() if spec.numpy_derivative is not None
}

# Per-row loss for each loss code (computed in float64), and the output delta before any output
# derivative (kernels.losses.SPECS).
ROW_LOSSES = {code: spec.numpy_row_value for code, spec in _LOSS_SPECS.items()}


def activate(z, a_out, activation):
    """``a_out = f(z)`` row by row (see :func:`fastgd.kernels.activate`)."""
    a_out[...] = ACTIVATIONS[activation](z)


def dense_linear(a_in, W, b, z_out):
    """``z_out = a_in @ W + b``."""
    z_out[...] = a_in @ W + b


def dense_forward(a_in, W, b, a_out, activation):
    """``a_out = f(a_in @ W + b)``."""
    dense_linear(a_in, W, b, a_out)
    activate(a_out, a_out, activation)


def activation_derivative(z, a, out, activation):
    """``out = f'(z)`` from ``z`` and ``a = f(z)``."""
    out[...] = DERIVATIVES[activation](z, a)


def _parameter(loss, parameter):
    return _LOSS_SPECS[int(loss)].parameter_value(parameter)


def loss_value(z, a, y, row_scale, loss, parameter=None):
    """``sum_i row_scale[i] * loss_i`` in float64."""
    f64 = np.float64
    rows = ROW_LOSSES[loss](z.astype(f64), a.astype(f64), y.astype(f64), _parameter(loss, parameter))
    return float(row_scale.astype(f64) @ rows)


def output_delta(z, a, y, row_scale, delta, activation, loss, parameter=None):
    """Output-layer local gradient ``dC/da ⊙ f'(z)``, fused for the cross-entropies."""
    spec = _LOSS_SPECS[loss]
    delta[...] = spec.numpy_delta(a, y, row_scale, _parameter(loss, parameter))
    if spec.fused:
        return
    if activation == SOFTMAX:
        delta[...] = a * (delta - (delta * a).sum(axis=1, keepdims=True))
    else:
        delta *= DERIVATIVES[activation](z, a)


def hidden_delta(delta_next, W_next, z, a, delta, activation):
    """``delta = (delta_next @ W_next.T) ⊙ f'(z)``."""
    delta[...] = (delta_next @ W_next.T) * DERIVATIVES[activation](z, a)


def dense_gradients(a_in, delta, grad_W, grad_b):
    """``grad_W = a_in.T @ delta``, ``grad_b = delta.sum(axis=0)``."""
    grad_W[...] = a_in.T @ delta
    grad_b[...] = delta.sum(axis=0)


def optimizer_step(kind, params, grads, state, step, lr, hyper):
    """One optimizer step over the flat parameter buffer (see :func:`fastgd.kernels.optimizer_step`):
    the optimizer's declared rule (``kernels.optim.SPECS``) over the whole arrays, in NumPy."""
    vector = np.zeros(max(len(spec.hyper) for spec in _OPTIMIZER_SPECS.values()))
    vector[: len(hyper)] = hyper
    _optimizer_rule_step(int(kind), params, grads, state, int(step), float(lr), vector)


def _weights(params, architecture, layer):
    return layer_view(params, architecture, layer, weights=True), layer_view(params, architecture, layer, weights=False)


def _zs(buffers, architecture, rows):
    # The output layer's pre-activations (the block its loss reads).
    n_out = int(architecture.layers[-1]["n_out"])
    return buffers.zs[: rows * n_out].reshape(rows, n_out)


def dropout_masks(key, layer, rate, row0, rows, width, dtype):
    """Inverted dropout's multipliers (0 or 1/(1 − rate)) of ``rows × width`` outputs of layer
    ``layer``, rows ``row0`` … of the batch (see :mod:`fastgd.kernels.passes`)."""
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps on purpose
        base = _mix(np.array([key], dtype=np.int64).view(np.uint64) + np.uint64(layer + 1) * np.array([_GOLDEN]))
        row_base = _mix(base + np.arange(row0 + 1, row0 + rows + 1, dtype=np.uint64) * _GOLDEN)
        draws = _mix(row_base[:, None] + np.arange(1, width + 1, dtype=np.uint64)[None, :] * _GOLDEN)
    keep = (draws >> np.uint64(11)) >= np.uint64(rate * 9007199254740992.0)
    dtype = np.dtype(dtype)
    return np.where(keep, dtype.type(1.0 / (1.0 - rate)), dtype.type(0.0))


def dropout_key(seed, step):
    """The dropout key of training step ``step`` (see :mod:`fastgd.kernels.passes`)."""
    with np.errstate(over="ignore"):
        mixed = _mix(np.array([seed], dtype=np.int64).view(np.uint64) * _GOLDEN + np.uint64(step))
    return int(mixed[0] >> np.uint64(1))


def forward(params, architecture, x, buffers, loss, n_threads=1, key=NO_DROPOUT, row0=0):
    """Forward pass of the whole network into ``buffers`` (see :func:`fastgd.kernels.forward`);
    with a dropout ``key`` >= 0 the hidden layers with dropout drop their outputs (rows ``row0``
    … of the batch). The slopes f'(z) (times the dropout multipliers) go to ``buffers.slopes``."""
    rows = x.shape[0]
    a_in = x
    last = len(architecture.layers) - 1
    for layer, record in enumerate(architecture.layers):
        W, b = _weights(params, architecture, layer)
        a_out = block_of(buffers.acts, architecture, layer, rows)
        z = _zs(buffers, architecture, rows) if layer == last else np.empty_like(a_out)
        dense_linear(a_in, W, b, z)
        code = int(record["activation"])
        activate(z, a_out, code)
        if code != SOFTMAX:
            block_of(buffers.slopes, architecture, layer, rows)[...] = DERIVATIVES[code](z, a_out)
        if key >= 0 and record["dropout"] > 0 and layer < last:
            mask = dropout_masks(key, layer, float(record["dropout"]), row0, rows, int(record["n_out"]), a_out.dtype)
            a_out *= mask
            block_of(buffers.slopes, architecture, layer, rows)[...] *= mask
        a_in = a_out


def evaluate_loss(
    params, architecture, x, y, row_scale, buffers, loss, n_threads=1, key=NO_DROPOUT, row0=0, parameter=None
):
    """Forward pass and loss of a batch (no weight penalty)."""
    forward(params, architecture, x, buffers, loss, key=key, row0=row0)
    last = len(architecture.layers) - 1
    a = block_of(buffers.acts, architecture, last, x.shape[0])
    return loss_value(_zs(buffers, architecture, x.shape[0]), a, y, row_scale, loss, parameter)


def forward_backward(
    params,
    grads,
    architecture,
    x,
    y,
    row_scale,
    buffers,
    loss,
    l1,
    l2,
    n_threads=1,
    key=NO_DROPOUT,
    row0=0,
    parameter=None,
):
    """Forward pass, loss and backprop of one batch, the L1/L2 penalty included; returns the loss
    plus the penalty and writes ``grads``."""
    rows = x.shape[0]
    layers = architecture.layers
    last = len(layers) - 1
    value = evaluate_loss(params, architecture, x, y, row_scale, buffers, loss, key=key, row0=row0, parameter=parameter)
    deltas = buffers.deltas
    out = block_of(deltas, architecture, last, rows)
    spec = _LOSS_SPECS[loss]
    a_last = block_of(buffers.acts, architecture, last, rows)
    out[...] = spec.numpy_delta(a_last, y, row_scale, _parameter(loss, parameter))
    code = int(layers[last]["activation"])
    if not spec.fused:
        if code == SOFTMAX:
            out[...] = a_last * (out - (out * a_last).sum(axis=1, keepdims=True))
        else:
            out *= block_of(buffers.slopes, architecture, last, rows)
    for layer in range(last, -1, -1):
        delta = block_of(deltas, architecture, layer, rows)
        grad_W, grad_b = _weights(grads, architecture, layer)
        a_in = x if layer == 0 else block_of(buffers.acts, architecture, layer - 1, rows)
        dense_gradients(a_in, delta, grad_W, grad_b)
        if layer > 0:
            W, _ = _weights(params, architecture, layer)
            below = block_of(deltas, architecture, layer - 1, rows)
            below[...] = (delta @ W.T) * block_of(buffers.slopes, architecture, layer - 1, rows)
    return value + weight_penalty(params, grads, architecture, l1, l2)


def _named(kind, schedule):
    # A schedule's parameters by the names of its declaration (kernels.optim.SCHEDULES).
    return dict(zip(_SCHEDULE_SPECS[kind].parameters, schedule))


# Learning rate at 1-based step t for each schedule, from (base lr, t, parameters by name).
SCHEDULES = {
    "constant": lambda lr, t, p: lr,
    "step": lambda lr, t, p: lr * p["gamma"] ** ((t - 1) // int(p["step_size"])),
    "exponential": lambda lr, t, p: lr * p["gamma"] ** (t - 1),
    "inverse_scaling": lambda lr, t, p: lr / float(t) ** p["power"],
    "cosine": lambda lr, t, p: (
        p["eta_min"]
        + (lr - p["eta_min"]) * 0.5 * (1.0 + np.cos(np.pi * min(t - 1, p["total_steps"]) / p["total_steps"]))
    ),
}
# Schedules of the epoch: lr, epoch, parameters -> lr.
EPOCH_SCHEDULES = {
    "sample_inverse_scaling": lambda lr, e, p: lr / (1.0 + (p["offset"] + p["rows"] * float(e))) ** p["power"],
}


def scheduled_lr(kind, base_lr, step, schedule, epoch=0):
    """Learning rate of the ``step``-th step in the network's ``epoch`` (see
    :func:`fastgd.kernels.scheduled_lr`)."""
    name = _SCHEDULE_SPECS[kind].name
    if name in EPOCH_SCHEDULES:
        return float(EPOCH_SCHEDULES[name](base_lr, epoch, _named(kind, schedule)))
    return float(SCHEDULES[name](base_lr, step, _named(kind, schedule)))


def weight_penalty(params, grads, architecture, l1, l2):
    """Add ``l1·sign(W) + l2·W`` to the weight gradients; return ``l1·Σ|W| + (l2/2)·ΣW²``."""
    if l1 == 0.0 and l2 == 0.0:
        return 0.0
    t = params.dtype.type
    total = 0.0
    for layer in range(len(architecture.layers)):
        W, _ = _weights(params, architecture, layer)
        grad_W, _ = _weights(grads, architecture, layer)
        grad_W += t(l1) * np.sign(W) + t(l2) * W
        W64 = W.astype(np.float64)
        total += l1 * np.abs(W64).sum() + 0.5 * l2 * (W64 * W64).sum()
    return float(total)


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(z):
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def shuffle_order(order, keys, seed, epoch):
    """Fisher-Yates with counter-based draws (see :func:`fastgd.kernels.shuffle_order`)."""
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps on purpose
        base = _mix(np.array([seed], dtype=np.int64).view(np.uint64) + np.uint64(epoch + 1) * np.array([_GOLDEN]))
        keys[...] = _mix(base + np.arange(1, keys.size + 1, dtype=np.uint64) * _GOLDEN)
    swap_with = (keys % np.arange(1, keys.size + 1, dtype=np.uint64)).astype(np.int64)
    order[...] = np.arange(order.size)
    for i in range(order.size - 1, 0, -1):
        j = swap_with[i]
        order[i], order[j] = order[j], order[i]


def _buffers(work, shard):
    # Shard ``shard``'s buffers of a Work bundle.
    return layout.Buffers(
        work.acts[shard],
        work.slopes[shard],
        work.zs[shard],
        work.deltas[shard],
        work.losses[shard],
        work.penalties[shard],
        work.transposed[shard],
    )


# Divergence is detected and reported by the loop itself, not warned about step by step (one
# errstate for the whole call: entering one per step costs microseconds on every step).
@np.errstate(all="ignore")
def count_saturated(acts, activation):
    """Units of ``acts`` (rows, units) of a sigmoid or tanh layer whose derivative is below
    ``SATURATION_THRESHOLD``."""
    a = acts.astype(np.float64)
    slope = a * (1.0 - a) if activation == SIGMOID else 1.0 - a * a
    return int(np.count_nonzero(slope < SATURATION_THRESHOLD))


def epoch_health(params, start_params, architecture, grad_norms, saturated, units_seen, steps, health):
    """One epoch's gradient health per layer into ``health`` (layout.HEALTH records, (n_layers,))."""
    for layer, record in enumerate(architecture.layers):
        now = layer_view(params, architecture, layer).astype(np.float64)
        then = layer_view(start_params, architecture, layer).astype(np.float64)
        before = np.sqrt(np.sum(then * then))
        health[layer]["grad_norm"] = grad_norms[layer] / steps if steps > 0 else np.nan
        health[layer]["weight_norm"] = np.sqrt(np.sum(now * now))
        health[layer]["update_ratio"] = np.sqrt(np.sum((now - then) ** 2)) / before if before > 0 else np.nan
        tracked = record["activation"] in (SIGMOID, TANH) and units_seen[layer] > 0
        health[layer]["saturation"] = saturated[layer] / units_seen[layer] if tracked else np.nan


def clip_gradients(grads, clip_norm, clip_value):
    """Clip the flat gradient ``grads`` (n_params,) in place (0 = off): entries clamped to
    [−clip_value, clip_value], then, with ``clip_norm``, scaled by clip_norm / (‖g‖₂ + 1e-6)
    when that is below 1 (PyTorch's ``clip_grad_value_``, then ``clip_grad_norm_``; the norm
    accumulated in float64)."""
    t = grads.dtype.type
    if clip_value > 0.0:
        np.clip(grads, t(-clip_value), t(clip_value), out=grads)
    if clip_norm > 0.0:
        wide = grads.astype(np.float64)
        factor = clip_norm / (np.sqrt(np.dot(wide, wide)) + 1e-6)
        if factor < 1.0:
            grads *= t(factor)


def validation_score(out, Y, kind) -> float:
    """The validation score of ``kind`` (``layout.SCORE_*``) of outputs ``out`` for targets
    ``Y`` (both (rows, n_out)), as the compiled monitor computes it; NaN for SCORE_NONE."""
    if kind == SCORE_ARGMAX:
        return float(np.mean(out.argmax(axis=1) == Y.argmax(axis=1)))
    if kind == SCORE_THRESHOLD:
        return float(np.mean((out >= 0.5) == (Y >= 0.5)))
    if kind == SCORE_SUBSET:
        return float(np.mean(((out >= 0.5) == (Y >= 0.5)).all(axis=1)))
    if kind == SCORE_R2:
        Y64 = Y.astype(np.float64)
        residual = ((Y64 - out.astype(np.float64)) ** 2).sum(axis=0)
        spread = ((Y64 - Y64.mean(axis=0)) ** 2).sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            scores = np.where(
                spread != 0, 1.0 - residual / np.where(spread != 0, spread, 1.0), np.where(residual == 0, 1.0, 0.0)
            )
        return float(np.mean(scores))
    return np.nan


def stopping_rule(rule, best, waited, lr_scale, value):
    """The stopping rule's decision (see :func:`fastgd.kernels.stopping_rule`): returns
    ``(stop, better, waited, lr_scale)``."""
    higher = rule.monitor == MONITOR_VAL_SCORE
    if rule.mode == STOP_PATIENCE:
        better = value > best + rule.delta if higher else value < best - rule.delta
        waited = 0.0 if better else waited + 1.0
        stop = waited >= rule.patience
    elif rule.mode == STOP_NO_IMPROVEMENT:
        counts = value < best + rule.delta if higher else value > best - rule.delta
        better = value > best if higher else value < best
        waited = waited + 1.0 if counts else 0.0
        stop = waited > rule.patience
    else:
        return False, False, waited, lr_scale
    if stop and rule.lr_factor > 0.0 and lr_scale > rule.min_lr_scale:
        lr_scale, waited, stop = lr_scale / rule.lr_factor, 0.0, False
    return bool(stop), bool(better), float(waited), float(lr_scale)


def monitor(params, architecture, loss, end, epoch, train_loss):  # loss: (code, parameter)
    """The epoch's validation and stopping rule (see :mod:`fastgd.kernels.epoch_end`): the
    validation loss and score into ``end.records[epoch]``, ``end.state`` updated, the parameters
    into ``end.best_params`` when the epoch is the best (with ``rule.restore``); returns True
    when the rule stops training."""
    rule, state = end.rule, end.state[0]
    value = train_loss
    if rule.validate:
        rows = end.row_scale.size
        n_in, n_out = int(architecture.layers[0]["n_in"]), int(architecture.layers[-1]["n_out"])
        Y = end.Y.reshape(rows, n_out)
        val_loss = evaluate_loss(
            params, architecture, end.X.reshape(rows, n_in), Y, end.row_scale, end.buffers, loss[0], parameter=loss[1]
        )
        score = validation_score(
            block_of(end.buffers.acts, architecture, len(architecture.layers) - 1, rows), Y, rule.score
        )
        end.records[epoch] = (val_loss, score)
        value = {MONITOR_VAL_LOSS: val_loss, MONITOR_VAL_SCORE: score}.get(rule.monitor, value)
    if rule.mode not in (STOP_PATIENCE, STOP_NO_IMPROVEMENT):
        return False
    stop, better, waited, lr_scale = stopping_rule(
        rule, float(state["best"]), float(state["waited"]), float(state["lr_scale"]), value
    )
    state["waited"], state["lr_scale"] = waited, lr_scale
    if better:
        state["best"], state["best_epoch"] = value, rule.offset + epoch + 1.0
        if rule.restore:
            end.best_params[...] = params
            state["snapshot"] = 1.0
    return stop


def _visit_due(visits, completed, stop, last):
    # As the kernel's: every ``every`` epochs, when ``interval`` has passed, or at a stop.
    return (
        stop
        or (visits.every > 0 and completed % visits.every == 0)
        or (visits.interval > 0 and time.monotonic_ns() - last >= visits.interval)
    )


def train_epochs(architecture, state, data, work, settings, control, n_threads, end=None, python=None):
    """Whole epochs of mini-batch gradient descent, ending early on divergence, a stop request,
    the stopping rule or a visit's answer (see :func:`fastgd.kernels.train_epochs`); returns the
    number of epochs completed."""
    params, opt_state, step = state
    X, Y, sample_weight = data
    loss, batch_size, shards = settings.loss, settings.batch_size, settings.shards
    rank, ranks, partitioned = settings.rank, settings.ranks, settings.partitioned
    n, n_in = X.shape
    n_out = Y.shape[1]
    t = params.dtype.type
    is_mean = settings.mean
    layers = architecture.layers
    total_weight = float(np.sum(sample_weight, dtype=np.float64))
    work.saved_params[...] = params
    work.saved_state[...] = opt_state
    saved_step = int(step[0])
    outcome = OUTCOME_FINISHED
    completed = 0
    visited = time.monotonic_ns()
    order, grads = work.order[:n], work.grads  # the buffers may hold more rows than X (streamed chunks)
    n_layers = len(layers)
    lr_scale = 1.0 if end is None else float(end.state[0]["lr_scale"])
    for e in range(settings.epochs):
        grad_norms, saturated, units_seen, steps_seen = np.zeros(n_layers), np.zeros(n_layers), np.zeros(n_layers), 0
        if settings.shuffle:
            shuffle_order(order, work.keys[:n], settings.seed, settings.first_epoch + e)
        else:
            order[...] = np.arange(n)
        if partitioned:
            for k, start in enumerate(range(0, n, batch_size)):
                work.batch_weights[k] = float(
                    np.sum(sample_weight[order[start : start + batch_size]], dtype=np.float64)
                )
            python(EXCHANGE_WEIGHTS, 0)
            total_weight = float(np.sum(work.batch_weights[: -(-n // batch_size)]))
        epoch_loss = 0.0
        for start in range(0, n, batch_size):
            rows = min(batch_size, n - start)
            if partitioned:
                batch_weight, lo, hi = float(work.batch_weights[start // batch_size]), 0, rows
            else:
                batch_weight = float(np.sum(sample_weight[order[start : start + rows]], dtype=np.float64))
                lo, hi = rank * rows // ranks, (rank + 1) * rows // ranks
            stop_requested = control[CONTROL.stop] != 0
            if ranks == 1 and stop_requested:
                outcome = OUTCOME_INTERRUPTED
                break
            index = order[start + lo : start + hi]
            local = hi - lo
            xb = work.x_batch[: local * n_in].reshape(local, n_in)
            yb = work.y_batch[: local * n_out].reshape(local, n_out)
            xb[...] = X[index]
            yb[...] = Y[index]
            scale = work.row_scale[:local]
            scale[...] = sample_weight[index]
            if is_mean:
                scale *= t(1.0 / batch_weight)
            value = 0.0
            for shard in range(shards):
                first, stop = shard * local // shards, (shard + 1) * local // shards
                l1, l2 = (settings.l1, settings.l2) if shard == 0 and rank == 0 else (0.0, 0.0)
                if settings.penalty_per_weight:
                    l1, l2 = l1 / batch_weight, l2 / batch_weight
                dropping = bool((architecture.layers["dropout"] > 0).any())
                key = dropout_key(settings.dropout_seed, int(step[0]) + 1) if dropping else NO_DROPOUT
                value += forward_backward(
                    params,
                    grads[shard],
                    architecture,
                    xb[first:stop],
                    yb[first:stop],
                    scale[first:stop],
                    _buffers(work, shard),
                    loss,
                    l1,
                    l2,
                    key=key,
                    row0=lo + first,
                    parameter=settings.loss_parameter,
                )
                if settings.track:
                    for layer in range(n_layers):
                        if layers[layer]["activation"] in (SIGMOID, TANH):
                            saturated[layer] += count_saturated(
                                block_of(work.acts[shard], architecture, layer, stop - first),
                                layers[layer]["activation"],
                            )
            if ranks > 1:
                work.scalars[SCALAR_LOSS], work.scalars[SCALAR_STOP] = value, float(stop_requested)
                python(EXCHANGE_STEP, 0)
                value = float(work.scalars[SCALAR_LOSS])
                if work.scalars[SCALAR_STOP] != 0:
                    outcome = OUTCOME_INTERRUPTED
                    break
            if not np.isfinite(value):
                outcome = OUTCOME_DIVERGED
                break
            for shard in range(1, shards):
                grads[0] += grads[shard]
            if settings.track:
                for layer in range(n_layers):
                    weight_grad = layer_view(grads[0], architecture, layer).astype(np.float64)
                    grad_norms[layer] += np.sqrt(np.sum(weight_grad * weight_grad))
                    units_seen[layer] += local * layers[layer]["n_out"]
                steps_seen += 1
            clip_gradients(grads[0], settings.clip_norm, settings.clip_value)
            epoch_loss += value * batch_weight if is_mean else value
            step[0] += 1
            lr = scheduled_lr(
                settings.schedule_kind, settings.lr, int(step[0]), settings.schedule, settings.first_epoch + e
            )
            lr_scale = 1.0 if end is None else float(end.state[0]["lr_scale"])
            optimizer_step(settings.optimizer, params, grads[0], opt_state, int(step[0]), lr * lr_scale, settings.hyper)
        if outcome != OUTCOME_FINISHED:
            break
        epoch_loss = epoch_loss / total_weight if is_mean else epoch_loss
        if not (np.isfinite(epoch_loss) and np.isfinite(params).all() and np.isfinite(opt_state).all()):
            outcome = OUTCOME_DIVERGED
            break
        work.epoch_losses[e] = epoch_loss
        if settings.track:
            epoch_health(
                params, work.saved_params, architecture, grad_norms, saturated, units_seen, steps_seen, work.health[e]
            )
        completed += 1
        work.saved_params[...] = params
        work.saved_state[...] = opt_state
        saved_step = int(step[0])
        if end is not None:
            stop = monitor(params, architecture, (loss, settings.loss_parameter), end, e, epoch_loss)
            if end.visits.enabled and _visit_due(end.visits, completed, stop, visited):
                stop = bool(python(VISIT_EPOCH, completed)) or stop
                visited = time.monotonic_ns()
            if stop:
                outcome = OUTCOME_STOPPED
                break
    if outcome not in (OUTCOME_FINISHED, OUTCOME_STOPPED):
        params[...] = work.saved_params
        opt_state[...] = work.saved_state
        step[0] = saved_step
    control[CONTROL.outcome] = outcome
    return completed
