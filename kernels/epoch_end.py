"""What the training loop does after each completed epoch, compiled: the validation pass and the
stopping rule (the ``monitor`` piece), and visits to Python (the ``visit`` piece), so that a fit
with validation, early stopping or scikit-learn's ``tol`` runs all its epochs in one call.

``monitor`` (every thread of the team): with validation rows, the forward pass over them and their
loss (``forward_pass`` and ``batch_value``, as ``Network.loss`` computes it) and accuracy into the
epoch's ``records``; then the stopping rule (``layout.RULE_*``) on the monitored value:

* ``STOP_PATIENCE`` (Keras's ``EarlyStopping``, fastgd's ``early_stopping=True``): an epoch whose
  value is below best − delta is the new best (its parameters kept with ``RULE_RESTORE``), any
  other is a wait; ``patience`` waits in a row stop training.
* ``STOP_NO_IMPROVEMENT`` (scikit-learn's ``tol``/``n_iter_no_change``, as its
  ``_update_no_improvement_count``): for a loss, a value above best − tol counts, else the count
  restarts, and a value below best is the new best; for a score (higher is better) a value below
  best + tol counts and one above best is the new best (its parameters kept); a count above
  ``patience`` stops training.

With ``RULE_LR_FACTOR`` (scikit-learn's ``learning_rate="adaptive"``) a stop is first a smaller
rate: ``STATE_LR_SCALE`` (the factor on every step's rate) is divided by it and the count restarts,
until the scale is at most ``RULE_MIN_LR_SCALE``; then the rule stops training.

``visit`` (thread 0, the others waiting): enters Python (``numba.objmode``) and calls
``VISITORS[channel](kind, epoch)``, which records the finished epochs, runs the Python callbacks
that are due, the progress bar and checkpoints, and returns 1 to stop after this epoch. A visit
is bound only for fits that have such work (``layout.PIECE_VISIT``).
"""

import numpy as np
from numba import njit, objmode

from .compat import call_piece, kernel
from .config import INTERNAL_OPTIONS, JIT_OPTIONS
from .layout import (
    ACCURACY_ARGMAX,
    ACCURACY_R2,
    ACCURACY_SUBSET,
    ACCURACY_THRESHOLD,
    MONITOR_VAL_LOSS,
    MONITOR_VAL_SCORE,
    META_N_OUT,
    META_UNITS_BEFORE,
    PIECE_FORWARD,
    PIECE_VALUE,
    RECORD_VAL_ACCURACY,
    RECORD_VAL_LOSS,
    RULE_ACCURACY,
    RULE_DELTA,
    RULE_LR_FACTOR,
    RULE_MIN_LR_SCALE,
    RULE_MODE,
    RULE_MONITOR,
    RULE_OFFSET,
    RULE_PATIENCE,
    RULE_RESTORE,
    RULE_VALIDATE,
    STATE_BEST,
    STATE_BEST_EPOCH,
    STATE_LR_SCALE,
    STATE_SNAPSHOT,
    STATE_WAITED,
    STOP_NO_IMPROVEMENT,
    STOP_PATIENCE,
    chunk_count,
)
from .team import barrier, first_task, next_task

_DONE = np.int64(0)
_INLINE = dict(JIT_OPTIONS, inline="always")

# visit's Python side: channel -> callable(kind, epoch) -> 1 to stop after this epoch, else 0;
# filled by fastgd.training for the fits that need visits.
VISITORS = {}


def call_visitor(channel, kind, epoch):
    return int(VISITORS[int(channel)](int(kind), int(epoch)))


@kernel(**dict(INTERNAL_OPTIONS, nogil=False))
def visit(channel, kind, epoch):
    """Visit Python: ``VISITORS[channel](kind, epoch)`` (see the module's docstring); returns its
    answer, 1 to stop training after this epoch. An exception raised there propagates to the
    loop's caller.

    Parameters
    ----------
    channel : int64
    kind : int64
        ``layout.VISIT_EPOCH`` or ``VISIT_HEARTBEAT``.
    epoch : int64
        Epochs completed in this call.

    Returns
    -------
    int64
    """
    with objmode(answer="int64"):
        answer = call_visitor(channel, kind, epoch)
    return answer


@kernel(**INTERNAL_OPTIONS)
def monitor(tid, n_threads, control, pieces, params, meta, end, epoch, train_loss):
    """The epoch's validation and stopping rule (see the module's docstring); every thread of
    the team calls it and gets the same answer.

    Parameters
    ----------
    tid, n_threads, control
        The team.
    pieces : ndarray of int64
        The fit's pieces (the forward pass and ``batch_value`` are used).
    params : ndarray, shape (n_params,)
        The parameters at the end of the epoch.
    meta : ndarray of int64
    end : layout.EpochEnd
        Validation rows and buffers; ``records[epoch]`` is written, ``state`` updated,
        ``best_params`` written when the epoch is the best so far (``RULE_RESTORE``).
    epoch : int64
        The epoch's index in this call (0-based).
    train_loss : float64
        Its training loss.

    Returns
    -------
    int64
        1 when the rule stops training after this epoch, else 0.
    """
    rule, state = end.rule, end.state
    value = train_loss
    if rule[RULE_VALIDATE] != 0.0:
        rows = end.row_scale.size
        call_piece(_DONE, pieces[PIECE_FORWARD], (tid, n_threads, control, pieces, params, meta, end.X, np.int64(rows), end.Y,
                                                  end.row_scale, end.acts, end.z_out, end.deltas, end.partials, end.transposed, True))  # fmt: skip
        val_loss = call_piece(0.0, pieces[PIECE_VALUE], (meta, np.int64(rows), end.partials, 0.0, 0.0))
        accuracy = _accuracy(end.acts, end.Y, meta, rows, rule[RULE_ACCURACY])
        if tid == 0:
            end.records[epoch, RECORD_VAL_LOSS] = val_loss
            end.records[epoch, RECORD_VAL_ACCURACY] = accuracy
        value = val_loss if rule[RULE_MONITOR] == MONITOR_VAL_LOSS else (accuracy if rule[RULE_MONITOR] == MONITOR_VAL_SCORE else value)
    mode = rule[RULE_MODE]
    if mode != STOP_PATIENCE and mode != STOP_NO_IMPROVEMENT:
        return _DONE
    best, waited, delta = state[STATE_BEST], state[STATE_WAITED], rule[RULE_DELTA]
    higher = rule[RULE_MONITOR] == MONITOR_VAL_SCORE
    if mode == STOP_PATIENCE:
        better = value < best - delta
        waited = 0.0 if better else waited + 1.0
        stop = waited >= rule[RULE_PATIENCE]
    else:
        counts = value < best + delta if higher else value > best - delta
        better = value > best if higher else value < best
        waited = waited + 1.0 if counts else 0.0
        stop = waited > rule[RULE_PATIENCE]
    lr_scale = state[STATE_LR_SCALE]
    if stop and rule[RULE_LR_FACTOR] > 0.0 and lr_scale > rule[RULE_MIN_LR_SCALE]:
        # scikit-learn's adaptive rate: a smaller rate and a new count instead of a stop.
        lr_scale, waited, stop = lr_scale / rule[RULE_LR_FACTOR], 0.0, False
    # Every thread has read the state above; it changes only after this barrier.
    barrier(control, n_threads)
    if better and rule[RULE_RESTORE] != 0.0:
        _copy(tid, n_threads, control, end.best_params, params)
    if tid == 0:
        state[STATE_WAITED] = waited
        state[STATE_LR_SCALE] = lr_scale
        if better:
            state[STATE_BEST] = value
            state[STATE_BEST_EPOCH] = rule[RULE_OFFSET] + epoch + 1.0
            state[STATE_SNAPSHOT] = 1.0 if rule[RULE_RESTORE] != 0.0 else state[STATE_SNAPSHOT]
    barrier(control, n_threads)
    return np.int64(1) if stop else _DONE


@njit(**_INLINE)
def _accuracy(acts, Y, meta, rows, kind):
    # The validation score of the forward pass just run (NaN for ACCURACY_NONE): the share of
    # rows whose largest output is their target's (ties: the first), of outputs on the target's
    # side of 0.5, of rows whose every output is, or the R² averaged over the outputs. Every
    # thread computes it (a small loop; nobody writes acts).
    if kind != ACCURACY_ARGMAX and kind != ACCURACY_THRESHOLD and kind != ACCURACY_SUBSET and kind != ACCURACY_R2:
        return np.nan
    last = meta.shape[0] - 1
    n_out = meta[last, META_N_OUT]
    start = (acts.size // (meta[last, META_UNITS_BEFORE] + n_out)) * meta[last, META_UNITS_BEFORE]
    if kind == ACCURACY_R2:
        return _r2(acts, start, Y, rows, n_out)
    hits = 0
    half = acts.dtype.type(0.5)
    if kind == ACCURACY_SUBSET:
        for r in range(rows):
            right = True
            for j in range(n_out):
                right = right and (acts[start + r * n_out + j] >= half) == (Y[r * n_out + j] >= half)
            hits += 1 if right else 0
        return hits / rows
    if kind == ACCURACY_ARGMAX:
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


@njit(**_INLINE)
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


@njit(**_INLINE)
def _copy(tid, n_threads, control, destination, source):
    # destination = source, in chunks the team shares.
    n = source.size
    n_chunks = chunk_count(n)
    task = first_task(control, tid, n_threads)
    while task < n_chunks:
        for i in range(task * n // n_chunks, (task + 1) * n // n_chunks):
            destination[i] = source[i]
        task = next_task(control, n_threads, task)
