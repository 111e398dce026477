# stamp: 4006c24828557ff954d940b15451ed7b
"""What the training loop does after each completed epoch, compiled: the validation pass and the
stopping rule (the ``monitor`` stage), so that a fit with validation, early stopping or
scikit-learn's ``tol`` runs all its epochs in one call.

``monitor`` (every thread of the team): with validation rows, the forward pass over them and their
loss (``passes.forward`` and ``batch_value``, as ``Network.loss`` computes it) and score
into the epoch's ``records``; then the stopping rule (``stopping_rule``) on the monitored value.

``stopping_rule`` is the one definition of the rule, compiled (the loop's monitor, and Python's
``EarlyStopping`` callback for fits that run it between calls) with a NumPy twin
(``fastgd.reference.stopping_rule``):

* ``STOP_PATIENCE`` (Keras's ``EarlyStopping``, fastgd's ``early_stopping=True``): an epoch whose
  value is below best − delta is the new best (its parameters kept with ``restore``), any other
  is a wait; ``patience`` waits in a row stop training.
* ``STOP_NO_IMPROVEMENT`` (scikit-learn's ``tol``/``n_iter_no_change``, as its
  ``_update_no_improvement_count``): for a loss, a value above best − tol counts, else the count
  restarts, and a value below best is the new best; for a score (higher is better) a value below
  best + tol counts and one above best is the new best (its parameters kept); a count above
  ``patience`` stops training.

With ``lr_factor`` (scikit-learn's ``learning_rate="adaptive"``) a stop is first a smaller rate:
the rate's scale is divided by it and the count restarts, until the scale is at most
``min_lr_scale``; then the rule stops training.

Visits to Python (thread 0, the others waiting) go through the fit's ``PythonCall``
(``kernels.train``), which records the finished epochs, runs the Python callbacks that are due,
the progress bar and checkpoints, and returns 1 to stop after this epoch.
"""

import numpy as np

from .jit import kernel, subroutine
from .layout import (
    MONITOR_VAL_LOSS,
    MONITOR_VAL_SCORE,
    SCORE_ARGMAX,
    SCORE_R2,
    SCORE_SUBSET,
    SCORE_THRESHOLD,
    STOP_NO_IMPROVEMENT,
    STOP_PATIENCE,
    chunk_count,
)
from .lowlevel import address, call_piece
from .passes import NO_DROPOUT, Batch, Pass, batch_value, fill
from .team import barrier, next_task


@kernel
def stopping_rule(rule, best, waited, lr_scale, value):
    """The stopping rule's decision after an epoch whose monitored value is ``value`` (see the
    module's docstring), from the rule's state (``best``, ``waited``, ``lr_scale``).

    Parameters
    ----------
    rule : layout.Rule
    best, waited, lr_scale : float64
    value : float64

    Returns
    -------
    (stop, better, waited, lr_scale) : (bool, bool, float64, float64)
        Whether training stops after this epoch, whether the epoch is the new best, and the
        new count and rate scale.
    """
    return _rule(rule, best, waited, lr_scale, value)


@subroutine
def _rule(rule, best, waited, lr_scale, value):
    # (the loop's monitor calls this, not the cached kernel above: a cached kernel inside the
    # loop would load its own cache entry while jit.first_call retries the loop without the
    # cache, and fail again where that entry is damaged too)
    delta = rule.delta
    higher = rule.monitor == MONITOR_VAL_SCORE
    if rule.mode == STOP_PATIENCE:
        better = value > best + delta if higher else value < best - delta
        waited = 0.0 if better else waited + 1.0
        stop = waited >= rule.patience
    elif rule.mode == STOP_NO_IMPROVEMENT:
        counts = value < best + delta if higher else value > best - delta
        better = value > best if higher else value < best
        waited = waited + 1.0 if counts else 0.0
        stop = waited > rule.patience
    else:
        return False, False, waited, lr_scale
    if stop and rule.lr_factor > 0.0 and lr_scale > rule.min_lr_scale:
        # scikit-learn's adaptive rate: a smaller rate and a new count instead of a stop.
        lr_scale, waited, stop = lr_scale / rule.lr_factor, 0.0, False
    return stop, better, waited, lr_scale


@subroutine
def monitor(team, architecture, params, end, epoch, train_loss, loss, gemm, forward):
    """The epoch's validation and stopping rule (see the module's docstring); every thread of
    the team calls it and gets the same answer.

    Parameters
    ----------
    team : (tid, n_threads, control)
        The team.
    architecture : layout.Architecture
    params : ndarray, shape (n_params,)
        The parameters at the end of the epoch.
    end : layout.EpochEnd
        Validation rows and buffers; ``records[epoch]`` is written, ``state`` updated,
        ``best_params`` written when the epoch is the best so far (``rule.restore``).
    epoch : int64
        The epoch's index in this call (0-based).
    train_loss : float64
        Its training loss.
    loss : (int64, float64)
        The loss code and its parameter.
    gemm : int64
        BLAS's ``?gemm`` address (the forward pass's).
    forward : int64
        The forward pass's address (``passes.piece``).

    Returns
    -------
    int64
        1 when the rule stops training after this epoch, else 0.
    """
    tid, n_threads, control = team
    rule, state = end.rule, end.state[0]
    value = train_loss
    if rule.validate:
        rows = end.row_scale.size
        if tid == 0:
            fill(
                end.passes[0],
                control,
                architecture,
                params,
                params,
                Batch(end.X, end.Y, end.row_scale, rows, 0),
                end.buffers,
                Pass(loss[0], loss[1], False, NO_DROPOUT, gemm),
                (0.0, 0.0),
            )
        barrier(control, n_threads)
        call_piece(forward, tid, n_threads, address(end.passes, 0))
        val_loss = batch_value(architecture, rows, end.buffers, 0.0, 0.0)
        score = _score(end.buffers.acts, end.Y, architecture, rows, rule.score)
        if tid == 0:
            end.records[epoch]["val_loss"] = val_loss
            end.records[epoch]["val_score"] = score
        value = (
            val_loss if rule.monitor == MONITOR_VAL_LOSS else (score if rule.monitor == MONITOR_VAL_SCORE else value)
        )
    stop, better, waited, lr_scale = _rule(rule, state["best"], state["waited"], state["lr_scale"], value)
    if rule.mode != STOP_PATIENCE and rule.mode != STOP_NO_IMPROVEMENT:
        return np.int64(0)
    # Every thread has read the state above; it changes only after this barrier.
    barrier(control, n_threads)
    if better and rule.restore:
        _copy(tid, n_threads, end.best_params, params)
    if tid == 0:
        state["waited"] = waited
        state["lr_scale"] = lr_scale
        if better:
            state["best"] = value
            state["best_epoch"] = rule.offset + epoch + 1.0
            state["snapshot"] = 1.0 if rule.restore else state["snapshot"]
    barrier(control, n_threads)
    return np.int64(1) if stop else np.int64(0)


@subroutine
def _score(acts, Y, architecture, rows, kind):
    # The validation score of the forward pass just run (NaN for SCORE_NONE): the share of rows
    # whose largest output is their target's (ties: the first), of outputs on the target's side
    # of 0.5, of rows whose every output is, or the R² averaged over the outputs. Every thread
    # computes it (a small loop; nobody writes acts).
    if kind != SCORE_ARGMAX and kind != SCORE_THRESHOLD and kind != SCORE_SUBSET and kind != SCORE_R2:
        return np.nan
    last = architecture.layers[architecture.layers.size - 1]
    n_out = last["n_out"]
    start = (acts.size // architecture.units) * last["acts"]
    if kind == SCORE_R2:
        return _r2(acts, start, Y, rows, n_out)
    hits = 0
    half = acts.dtype.type(0.5)
    if kind == SCORE_SUBSET:
        for r in range(rows):
            right = True
            for j in range(n_out):
                right = right and (acts[start + r * n_out + j] >= half) == (Y[r * n_out + j] >= half)
            hits += 1 if right else 0
        return hits / rows
    if kind == SCORE_ARGMAX:
        for r in range(rows):
            best_a, best_y = 0, 0
            for j in range(1, n_out):
                # As NumPy's argmax: the first largest, a NaN counting as the largest.
                x, top = acts[start + r * n_out + j], acts[start + r * n_out + best_a]
                if x > top or (x != x and top == top):
                    best_a = j
                if Y[r * n_out + j] > Y[r * n_out + best_y]:
                    best_y = j
            hits += 1 if best_a == best_y else 0
        return hits / rows
    for i in range(rows * n_out):
        hits += 1 if (acts[start + i] >= half) == (Y[i] >= half) else 0
    return hits / (rows * n_out)


@subroutine
def _r2(acts, start, Y, rows, n_out):
    # scikit-learn's r2_score (multioutput="uniform_average", force_finite=True): per output
    # 1 − Σ(y − a)²/Σ(y − ȳ)², 1 when both sums are 0 and 0 when only the second is; their mean.
    total = 0.0
    for j in range(n_out):
        mean = 0.0
        for r in range(rows):
            mean += np.float64(Y[r * n_out + j])
        mean /= rows
        residual, spread = 0.0, 0.0
        for r in range(rows):
            y = np.float64(Y[r * n_out + j])
            error = y - np.float64(acts[start + r * n_out + j])
            residual += error * error
            spread += (y - mean) * (y - mean)
        if spread != 0.0:
            total += 1.0 - residual / spread
        elif residual == 0.0:
            total += 1.0
    return total / n_out


@subroutine
def _copy(tid, n_threads, destination, source):
    # destination = source, in chunks the team shares.
    n = source.size
    n_chunks = chunk_count(n)
    task = tid
    while task < n_chunks:
        for i in range(task * n // n_chunks, (task + 1) * n // n_chunks):
            destination[i] = source[i]
        task = next_task(n_threads, task)
