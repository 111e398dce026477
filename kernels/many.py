# stamp: d3ab4012c7082987fa7913e63e6dfbbf
"""Many models in one compiled call: ``train_models`` trains networks of one architecture, each
with its own rows of a shared ``X``, its own weights, optimizer (any kind), schedule, batch
size, seed, penalties, clipping, validation rows and stopping rule, for up to ``epochs`` epochs
each (``fastgd.fit_many``).

A model is trained by one thread from start to end: models share nothing but the read-only data,
so each one's result depends only on its own arguments, never on how many models a call holds,
how they are grouped or how many threads share them (Python hands each thread a range of models:
the kernel releases the GIL). A model that stops (its rule, divergence) costs nothing more.

Per model a training step is ``train_epochs``'s (``fastgd.reference.train_epochs``) on one shard:
its rows in the order of the same counter-based shuffle (``train._shuffle``), the same dropout
masks (``passes.drop_rows``), the same tables (``activations.apply``, ``losses.loss_rows``,
``optim.update``, ``optim.lr_at``) and the same stopping rule (``epoch_end._rule``); the products
are plain loops (the small networks this is for fit a core's cache; sums may be ordered
differently from the single fit's products, so results agree to rounding, not bitwise).

Every model's arrays carry a leading model axis (``Models``); its scalars are ``MODEL`` records.
"""

from typing import NamedTuple

import numpy as np

from .activations import SOFTMAX, apply, softmax_backward
from .epoch_end import Rule, _rule, _score
from .jit import helper, kernel, subroutine
from .layout import CONTROL, OUTCOME_DIVERGED, OUTCOME_FINISHED, OUTCOME_INTERRUPTED, OUTCOME_STOPPED
from .losses import loss_rows
from .optim import lr_at, update
from .passes import NO_DROPOUT, drop_rows, step_key
from .products import NN, TN, VECTOR_BYTES, path, product, transpose
from .train import _shuffle

# One model's scalars: its optimizer and schedule, batching, seeds, penalties, clipping (0: off),
# and its stopping rule (the fields of ``epoch_end.Rule``).
MODEL = np.dtype(
    [
        ("optimizer", np.int64),  # optimizer code (optim.SPECS)
        ("lr", np.float64),  # the base rate (hyper[0])
        ("schedule_kind", np.int64),  # optim.SCHEDULES code
        ("batch", np.int64),  # rows per step (its rows' count: full batch)
        ("shuffle", np.int64),  # 1: a fresh order each epoch (mini-batches only)
        ("seed", np.int64),  # the shuffle's and dropout's seed (Network.shuffle_seed)
        ("first_epoch", np.int64),  # epochs the network trained before (its shuffles' numbers)
        ("offset", np.int64),  # epochs of this fit before this call (best_epoch counts from the fit's start)
        ("active", np.int64),  # 0: skipped (stopped in an earlier call of the fit)
        ("l1", np.float64),
        ("l2", np.float64),
        ("clip_norm", np.float64),
        ("clip_value", np.float64),
        ("mode", np.int64),  # the stopping rule: epoch_end.Rule's fields
        ("monitor", np.int64),
        ("patience", np.float64),
        ("delta", np.float64),
        ("restore", np.int64),
        ("score", np.int64),
        ("lr_factor", np.float64),
        ("min_lr_scale", np.float64),
    ],
    align=True,
)

# What a model's training ended with (``Models.outcome``): layout.OUTCOME_*; NOT_RUN: a stop came
# before its first step.
NOT_RUN = -1

# Offsets and loop counters of the inner loops are unsigned: Numba wraps a negative signed index
# around, a test per element that keeps LLVM from vectorising the loop.
U = np.uint64


class Shared(NamedTuple):
    """What every model of a call shares: ``X`` (n, n_in), ``Y`` (n, n_out) in the networks'
    dtype; the loss (code, parameter, ``fused``: its delta is dC/dz, ``mean``: a weighted mean
    over rows); ``penalty_per_weight``: L1/L2 divided by each batch's total weight."""

    X: np.ndarray
    Y: np.ndarray
    loss: int
    loss_parameter: float
    fused: bool
    mean: bool
    penalty_per_weight: bool


class Models(NamedTuple):
    """M models of one architecture (P parameters, S optimizer state rows).

    spec : MODEL (M,); hyper : float64 (M, HYPER_WIDTH); schedule : float64 (M, SCHEDULE_WIDTH);
    params : (M, P); state : (M, S, P); steps : int64 (M,) optimizer steps so far;
    rows : int64 (R,) every model's training rows of X, model after model, model m's in
    ``rows[row_start[m]:row_start[m + 1]]``; weight : (R,) their weights (a mean loss's divided by
    the model's largest, as ``Network.check_inputs``); val_rows, val_start : validation rows
    likewise (none: an empty range); rule_state : RULE_STATE (M,); best : (M, P) the best
    epoch's parameters (with a rule that restores them); losses : float64 (M, epochs) and
    records : RECORD (M, epochs), per completed epoch; completed : int64 (M,) epochs completed;
    outcome : int64 (M,) layout.OUTCOME_* or NOT_RUN.
    """

    spec: np.ndarray
    hyper: np.ndarray
    schedule: np.ndarray
    params: np.ndarray
    state: np.ndarray
    steps: np.ndarray
    rows: np.ndarray
    row_start: np.ndarray
    weight: np.ndarray
    val_rows: np.ndarray
    val_start: np.ndarray
    rule_state: np.ndarray
    best: np.ndarray
    losses: np.ndarray
    records: np.ndarray
    completed: np.ndarray
    outcome: np.ndarray


# --------------------------------------------------------------------------- one pass


@helper
def _product(shape, m, n, k, a, b, c):
    # C = op(A) @ op(B) (``products.product``) by the path a network too small for BLAS takes.
    lanes = VECTOR_BYTES // c[0].itemsize
    product(path(False, shape, m, n, k, lanes), shape, m, n, k, a, b, c, 0)


@helper
def forward_rows(architecture, params, x, rows, acts, slopes, zs, key):
    """Forward pass of ``rows`` rows of ``x`` (flat, row-major): each layer's outputs into its
    block of ``acts`` (layer l's block starts at ``capacity · layers[l].acts``, capacity =
    ``acts.size // units``, as ``layout.block_of``), its slopes f'(z) into ``slopes``, the output
    layer's pre-activations into ``zs``; with ``key`` >= 0 the hidden layers drop units as
    ``passes.drop_rows`` (rows counted from 0)."""
    layers = architecture.layers
    n_layers = layers.size
    capacity = acts.size // architecture.units
    for index in range(n_layers):
        layer = layers[index]
        n_in, n_out = layer["n_in"], layer["n_out"]
        weights, bias, out = layer["weights"], layer["bias"], capacity * layer["acts"]
        below = 0 if index == 0 else capacity * layers[index - 1]["acts"]
        source = x if index == 0 else acts
        _product(NN, rows, n_out, n_in, (source, below, n_in), (params, weights, n_out), (acts, out, n_out))
        width = U(n_out)
        for r in range(rows):
            o = U(out + r * n_out)
            for j in range(width):
                acts[o + j] += params[U(bias) + j]
        block = acts[out : out + rows * n_out]
        slope = slopes[out : out + rows * n_out]
        if index == n_layers - 1:
            zs[: rows * n_out] = block
        apply(layer["activation"], block, slope, rows, n_out, True)
        if key >= 0 and layer["dropout"] > 0.0 and index < n_layers - 1:
            drop_rows(key, index, layer["dropout"], 0, rows, n_out, block, slope)


@helper
def backward_rows(architecture, params, grads, x, rows, acts, slopes, deltas, transposed):
    """Backward pass after ``forward_rows`` (the output block of ``deltas`` holds dC/dz): every
    layer's gradient into ``grads`` (P,), overwritten; ``transposed`` (P,): room for Wᵀ."""
    layers = architecture.layers
    capacity = acts.size // architecture.units
    t = grads.dtype.type
    for index in range(layers.size - 1, -1, -1):
        layer = layers[index]
        n_in, n_out = layer["n_in"], layer["n_out"]
        weights, bias, out = layer["weights"], layer["bias"], capacity * layer["acts"]
        below = 0 if index == 0 else capacity * layers[index - 1]["acts"]
        source = x if index == 0 else acts
        # grad_W = a_inᵀ δ; grad_b = Σ_rows δ
        _product(TN, n_in, n_out, rows, (source, below, n_in), (deltas, out, n_out), (grads, weights, n_out))
        width = U(n_out)
        for j in range(width):
            grads[U(bias) + j] = t(0.0)
        for r in range(rows):
            d = U(out + r * n_out)
            for j in range(width):
                grads[U(bias) + j] += deltas[d + j]
        if index > 0:
            # δ below = (δ Wᵀ) ⊙ f'(z below)
            transpose(params, weights, n_in, n_out, transposed, weights)
            _product(NN, rows, n_in, n_out, (deltas, out, n_out), (transposed, weights, n_in), (deltas, below, n_in))
            for k in range(U(below), U(below + rows * n_in)):
                deltas[k] *= slopes[k]


@helper
def output_delta_rows(architecture, loss, loss_parameter, fused, zs, acts, slopes, deltas, y, scale, rows):
    """``Σ scale · loss`` (float64) over the rows of the forward pass just run; dC/dz into the
    output block of ``deltas``."""
    layers = architecture.layers
    last = layers[layers.size - 1]
    n_out = last["n_out"]
    start = (acts.size // architecture.units) * last["acts"]
    a = acts[start : start + rows * n_out]
    delta = deltas[start : start + rows * n_out]
    value = loss_rows(loss, zs, a, y, scale, delta, rows, n_out, loss_parameter)
    if not fused:
        if last["activation"] == SOFTMAX:
            softmax_backward(delta, a, rows, n_out)
        else:
            for k in range(rows * n_out):
                delta[k] *= slopes[start + k]
    return value


@helper
def penalize(architecture, params, grads, l1, l2):
    """``l1·sign(W) + l2·W`` added to the weights' gradients; returns ``l1·Σ|W| + ½l2·ΣW²``."""
    if l1 == 0.0 and l2 == 0.0:
        return 0.0
    t = grads.dtype.type
    tl1, tl2 = t(l1), t(l2)
    total = 0.0
    layers = architecture.layers
    for index in range(layers.size):
        layer = layers[index]
        for k in range(layer["weights"], layer["bias"]):
            w = params[k]
            sign = t(1.0) if w > 0 else (t(-1.0) if w < 0 else t(0.0))
            grads[k] += tl1 * sign + tl2 * w
            wide = np.float64(w)
            total += l1 * abs(wide) + 0.5 * l2 * wide * wide
    return total


@helper
def clip(grads, clip_norm, clip_value):
    """PyTorch's clip_grad_value_ then clip_grad_norm_ (0: off), as ``health``'s."""
    t = grads.dtype.type
    if clip_value > 0.0:
        high = t(clip_value)
        for k in range(grads.size):
            g = grads[k]
            grads[k] = high if g > high else (-high if g < -high else g)
    if clip_norm > 0.0:
        total = 0.0
        for k in range(grads.size):
            wide = np.float64(grads[k])
            total += wide * wide
        factor = clip_norm / (np.sqrt(total) + 1e-6)
        if factor < 1.0:
            scale = t(factor)
            for k in range(grads.size):
                grads[k] *= scale


@helper
def all_finite(values):
    for k in range(values.size):
        if not np.isfinite(values[k]):
            return False
    return True


# --------------------------------------------------------------------------- one model


class Work(NamedTuple):
    """A thread's buffers, for the largest model of its range: the row order and shuffle keys
    (n,), a batch's inputs, targets and row scales, its passes' buffers (batch rows), the
    gradient, the last completed epoch's parameters and state, room for Wᵀ; the validation rows'
    inputs, targets, scales and passes' buffers."""

    order: np.ndarray
    keys: np.ndarray
    x: np.ndarray
    y: np.ndarray
    scale: np.ndarray
    acts: np.ndarray
    slopes: np.ndarray
    zs: np.ndarray
    deltas: np.ndarray
    grads: np.ndarray
    saved_params: np.ndarray
    saved_state: np.ndarray
    transposed: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    val_scale: np.ndarray
    val_acts: np.ndarray
    val_slopes: np.ndarray
    val_zs: np.ndarray
    val_deltas: np.ndarray


@subroutine
def make_work(architecture, shared, models, first, stop):
    """A ``Work`` for models ``[first, stop)``."""
    t = models.params.dtype.type
    n_rows, n_batch, n_val = 1, 1, 1
    for m in range(first, stop):
        n = models.row_start[m + 1] - models.row_start[m]
        b = models.spec[m]["batch"]
        v = models.val_start[m + 1] - models.val_start[m]
        n_rows = n if n > n_rows else n_rows
        b = n if b > n else b
        n_batch = b if b > n_batch else n_batch
        n_val = v if v > n_val else n_val
    n_in, n_out = shared.X.shape[1], shared.Y.shape[1]
    units, n_params = architecture.units, models.params.shape[1]
    return Work(
        np.empty(n_rows, dtype=np.int64),
        np.empty(n_rows, dtype=np.uint64),
        np.empty(n_batch * n_in, dtype=t),
        np.empty(n_batch * n_out, dtype=t),
        np.empty(n_batch, dtype=t),
        np.zeros(n_batch * units, dtype=t),
        np.zeros(n_batch * units, dtype=t),
        np.zeros(n_batch * n_out, dtype=t),
        np.zeros(n_batch * units, dtype=t),
        np.zeros(n_params, dtype=t),
        np.empty(n_params, dtype=t),
        np.empty(models.state.shape[1:], dtype=t),
        np.empty(n_params, dtype=t),
        np.empty(n_val * n_in, dtype=t),
        np.empty(n_val * n_out, dtype=t),
        np.empty(n_val, dtype=t),
        np.zeros(n_val * units, dtype=t),
        np.zeros(n_val * units, dtype=t),
        np.zeros(n_val * n_out, dtype=t),
        np.zeros(n_val * units, dtype=t),
    )


@helper
def gather(X, rows, first, count, out):
    """Rows ``rows[first:first + count]`` of ``X`` into ``out`` (flat, row-major)."""
    width = X.shape[1]
    for r in range(count):
        source = rows[first + r]
        for j in range(width):
            out[r * width + j] = X[source, j]


@subroutine
def validate(architecture, shared, params, work, val_rows, first, count, score_kind):
    """Loss and score of the model's validation rows ``val_rows[first:first + count]`` (as
    ``Network.loss`` and the monitor measure them): (val_loss, score)."""
    t = params.dtype.type
    n_out = shared.Y.shape[1]
    gather(shared.X, val_rows, first, count, work.val_x)
    gather(shared.Y, val_rows, first, count, work.val_y)
    # The capacity of the blocks is this model's validation rows (``_score`` reads it so).
    units = architecture.units
    acts, slopes = work.val_acts[: count * units], work.val_slopes[: count * units]
    deltas = work.val_deltas[: count * units]
    scale = work.val_scale[:count]
    one = t(1.0 / count) if shared.mean else t(1.0)
    for r in range(count):
        scale[r] = one
    forward_rows(architecture, params, work.val_x, count, acts, slopes, work.val_zs, NO_DROPOUT)
    value = output_delta_rows(
        architecture,
        shared.loss,
        shared.loss_parameter,
        shared.fused,
        work.val_zs,
        acts,
        slopes,
        deltas,
        work.val_y[: count * n_out],
        scale,
        count,
    )
    return value, _score(acts, work.val_y[: count * n_out], architecture, count, score_kind)


@subroutine
def train_model(control, architecture, shared, models, work, m, epochs):
    """Model ``m``'s epochs (see the module's docstring): ``train_epochs`` on one shard, then
    the validation and stopping rule of its ``monitor``."""
    spec = models.spec[m]
    rule = Rule(
        spec["mode"],
        spec["monitor"],
        spec["patience"],
        spec["delta"],
        spec["restore"] != 0,
        spec["score"],
        models.val_start[m + 1] > models.val_start[m],
        0,
        spec["lr_factor"],
        spec["min_lr_scale"],
    )
    params, state, hyper, schedule = models.params[m], models.state[m], models.hyper[m], models.schedule[m]
    rule_state = models.rule_state[m : m + 1]
    t = params.dtype.type
    X, Y = shared.X, shared.Y
    n_in, n_out = X.shape[1], Y.shape[1]
    first_row, n = models.row_start[m], models.row_start[m + 1] - models.row_start[m]
    rows, weight = models.rows[first_row : first_row + n], models.weight[first_row : first_row + n]
    batch = spec["batch"] if spec["batch"] < n else n
    shuffle = spec["shuffle"] != 0 and batch < n
    dropping = False
    for index in range(architecture.layers.size):
        dropping = dropping or architecture.layers[index]["dropout"] > 0.0
    order, keys = work.order[:n], work.keys[:n]
    total_weight = 0.0
    for r in range(n):
        total_weight += np.float64(weight[r])
    work.saved_params[:] = params
    work.saved_state[:] = state
    saved_step = models.steps[m]
    outcome = OUTCOME_FINISHED
    completed = 0
    for e in range(epochs):
        epoch = spec["first_epoch"] + e
        if shuffle:
            _shuffle(order, keys, spec["seed"], epoch)
        else:
            for r in range(n):
                order[r] = r
        epoch_loss = 0.0
        lr_scale = rule_state[0]["lr_scale"]
        for start in range(0, n, batch):
            if control[CONTROL.stop] != 0:
                outcome = OUTCOME_INTERRUPTED
                break
            count = batch if start + batch <= n else n - start
            batch_weight = 0.0
            for r in range(count):
                source = rows[order[start + r]]
                for j in range(n_in):
                    work.x[r * n_in + j] = X[source, j]
                for j in range(n_out):
                    work.y[r * n_out + j] = Y[source, j]
                work.scale[r] = weight[order[start + r]]
                batch_weight += np.float64(work.scale[r])
            if shared.mean:
                inverse = t(1.0 / batch_weight)
                for r in range(count):
                    work.scale[r] *= inverse
            l1, l2 = spec["l1"], spec["l2"]
            if shared.penalty_per_weight:
                l1, l2 = l1 / batch_weight, l2 / batch_weight
            key = step_key(spec["seed"], models.steps[m] + 1) if dropping else NO_DROPOUT
            forward_rows(architecture, params, work.x, count, work.acts, work.slopes, work.zs, key)
            value = output_delta_rows(
                architecture,
                shared.loss,
                shared.loss_parameter,
                shared.fused,
                work.zs,
                work.acts,
                work.slopes,
                work.deltas,
                work.y,
                work.scale,
                count,
            )
            backward_rows(
                architecture, params, work.grads, work.x, count, work.acts, work.slopes, work.deltas, work.transposed
            )
            value += penalize(architecture, params, work.grads, l1, l2)
            if not np.isfinite(value):
                outcome = OUTCOME_DIVERGED
                break
            clip(work.grads, spec["clip_norm"], spec["clip_value"])
            epoch_loss += value * batch_weight if shared.mean else value
            models.steps[m] += 1
            step = models.steps[m]
            lr = lr_at(spec["schedule_kind"], spec["lr"], step, epoch, schedule)
            update(spec["optimizer"], params, work.grads, state, 0, params.size, step, lr * lr_scale, hyper)
        if outcome != OUTCOME_FINISHED:
            break
        if shared.mean:
            epoch_loss = epoch_loss / total_weight
        if not (np.isfinite(epoch_loss) and all_finite(params) and all_finite(state.ravel())):
            outcome = OUTCOME_DIVERGED
            break
        models.losses[m, e] = epoch_loss
        completed += 1
        work.saved_params[:] = params
        work.saved_state[:] = state
        saved_step = models.steps[m]
        value = epoch_loss
        if rule.validate:
            first_val = models.val_start[m]
            count = models.val_start[m + 1] - first_val
            val_loss, score = validate(
                architecture, shared, params, work, models.val_rows, first_val, count, rule.score
            )
            models.records[m, e]["val_loss"] = val_loss
            models.records[m, e]["val_score"] = score
            if rule.monitor == 1:  # epoch_end.MONITOR_VAL_LOSS
                value = val_loss
            elif rule.monitor == 2:  # epoch_end.MONITOR_VAL_SCORE
                value = score
        if rule.mode == 0:  # epoch_end.STOP_NONE
            continue
        stop, better, waited, new_scale = _rule(
            rule, rule_state[0]["best"], rule_state[0]["waited"], rule_state[0]["lr_scale"], value
        )
        rule_state[0]["waited"] = waited
        rule_state[0]["lr_scale"] = new_scale
        if better:
            rule_state[0]["best"] = value
            rule_state[0]["best_epoch"] = spec["offset"] + e + 1.0
            if rule.restore:
                models.best[m, :] = params
                rule_state[0]["snapshot"] = 1.0
        if stop:
            outcome = OUTCOME_STOPPED
            break
    if outcome == OUTCOME_INTERRUPTED or outcome == OUTCOME_DIVERGED:
        params[:] = work.saved_params
        state[:] = work.saved_state
        models.steps[m] = saved_step
    models.completed[m] = completed
    models.outcome[m] = outcome


@kernel
def train_models(control, architecture, shared, models, first, stop, epochs):
    """Train the active models of ``[first, stop)`` for up to ``epochs`` epochs each (at most the
    columns of ``models.losses``), one after the other (see the module's docstring); a stop
    request (``control[CONTROL.stop]``) ends the model in training at its last completed epoch
    and leaves the rest ``NOT_RUN``.

    Parameters
    ----------
    control : ndarray of int64 (layout.make_control)
    architecture : layout.Architecture
        The models' architecture (with their dropout rates).
    shared : Shared
    models : Models
        Updated in place: parameters, state, steps, rule states, best parameters, losses,
        records, completed epochs and outcomes of the models in the range.
    first, stop : int
    epochs : int
    """
    if stop <= first:
        return
    work = make_work(architecture, shared, models, first, stop)
    for m in range(first, stop):
        if models.spec[m]["active"] == 0:
            continue
        if control[CONTROL.stop] != 0:
            models.completed[m] = 0
            models.outcome[m] = NOT_RUN
            continue
        train_model(control, architecture, shared, models, work, m, epochs)
