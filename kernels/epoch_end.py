# stamp: f36a25c199e57546897dc0dffe5b561d
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

from typing import NamedTuple

import numpy as np

from .jit import kernel, subroutine
from .layout import PASS, Buffers, chunk_count, make_buffers
from .lowlevel import address, call_piece
from .passes import NO_DROPOUT, Batch, Pass, batch_value, fill
from .team import barrier, next_task

# --------------------------------------------------------------------------- records
# What the loop does after each completed epoch besides checking and saving it: validation, the
# stopping rule and visits to Python.

STOP_NONE = 0
STOP_PATIENCE = 1  # Keras's EarlyStopping: best − delta beaten, else wait; stop after `patience` waits
STOP_NO_IMPROVEMENT = 2  # scikit-learn's tol / n_iter_no_change (see the module's docstring)
MONITOR_LOSS = 0
MONITOR_VAL_LOSS = 1
MONITOR_VAL_SCORE = 2  # the validation score (Rule.score's kind): higher is better
SCORE_NONE = 0
SCORE_ARGMAX = 1  # rows whose largest output is their target's
SCORE_THRESHOLD = 2  # outputs on the same side of 0.5 as their target
SCORE_SUBSET = 3  # rows whose every output is on its target's side of 0.5 (multilabel)
SCORE_R2 = 4  # the coefficient of determination, averaged over the outputs (regression)


class Rule(NamedTuple):
    """The stopping rule of a fit (``stopping_rule``).

    mode : STOP_NONE, STOP_PATIENCE or STOP_NO_IMPROVEMENT; monitor : MONITOR_*; patience :
    epochs without improvement that stop (patience, n_iter_no_change; may be inf); delta : the
    improvement that counts (min_delta, tol); restore : keep the best epoch's parameters; score
    : the validation score measured (SCORE_*); validate : validation rows are given; offset :
    epochs of this fit before this call (best_epoch counts from the fit's start); lr_factor : > 0:
    a stop first divides the learning rate by this (scikit-learn's "adaptive")... min_lr_scale :
    ...while the rate's scale is above this; then it stops.
    """

    mode: int = STOP_NONE
    monitor: int = MONITOR_LOSS
    patience: float = 0.0
    delta: float = 0.0
    restore: bool = False
    score: int = SCORE_NONE
    validate: bool = False
    offset: int = 0
    lr_factor: float = 0.0
    min_lr_scale: float = 0.0


# The rule's state, kept across calls of one fit (a record array of one element).
RULE_STATE = np.dtype(
    [
        ("best", np.float64),  # the best monitored value so far
        ("waited", np.float64),  # epochs since it improved (or scikit-learn's no-improvement count)
        ("best_epoch", np.float64),  # when it did (1-based within the fit; 0: not yet)
        ("snapshot", np.float64),  # 1: best_params holds that epoch's parameters
        ("lr_scale", np.float64),  # the factor on every step's learning rate (1 until lr_factor divides it)
    ],
    align=True,
)
# Per epoch of a call (NaN where not measured).
RECORD = np.dtype([("val_loss", np.float64), ("val_score", np.float64)], align=True)


def make_rule_state(rule) -> np.ndarray:
    """A fresh rule state for ``rule``."""
    state = np.zeros(1, dtype=RULE_STATE)
    state[0]["best"] = -np.inf if rule.monitor == MONITOR_VAL_SCORE else np.inf
    state[0]["lr_scale"] = 1.0
    return state


class Visits(NamedTuple):
    """Visits to Python (the fit's ``python`` stage): ``enabled`` (none without), after every
    ``every`` epochs (0: none by count), whenever ``interval`` nanoseconds have passed since the
    last (0: never by time), and with ``beat`` also between batches when that time has passed
    (so that a main-thread fit's Ctrl-C handler runs)."""

    enabled: bool = False
    every: int = 0
    interval: int = 0
    beat: bool = False


# What the loop asks of Python (through ``kernels.train.PythonCall``).
VISIT_EPOCH = 0  # a visit after an epoch (argument: the epochs completed in this call)
VISIT_HEARTBEAT = 1  # a heartbeat between batches
EXCHANGE_STEP = 2  # the sum of a step's gradient over the ranks (kernels.exchange)
EXCHANGE_WEIGHTS = 3  # the sum of an epoch's batch weights over the ranks


class EpochEnd(NamedTuple):
    """What the loop does after each completed epoch.

    X, Y : validation rows, flat (n_val * n_in,), (n_val * n_out,); row_scale : (n_val,);
    buffers : ``Buffers`` for the validation rows; best_params : (n_params,); records : RECORD
    (epochs,); state : RULE_STATE (1,); rule : ``Rule``; visits : ``Visits``; passes : a PASS
    record (1,), the validation pass's arguments. Unused arrays are one element long
    (``make_epoch_end``).
    """

    X: np.ndarray
    Y: np.ndarray
    row_scale: np.ndarray
    buffers: Buffers
    best_params: np.ndarray
    records: np.ndarray
    state: np.ndarray
    rule: Rule
    visits: Visits
    passes: np.ndarray


def make_epoch_end(architecture, dtype, epochs, validation=None, rule=None, visits=None, restore=False) -> EpochEnd:
    """An ``EpochEnd`` for calls of up to ``epochs`` epochs: ``validation`` = (X_val, Y_val,
    row_scale) or None, ``rule`` a ``Rule`` (None: none), ``visits`` a ``Visits`` (None: none);
    ``restore``: room for the best epoch's parameters."""
    dtype = np.dtype(dtype)
    one = np.zeros(1, dtype=dtype)
    rule = Rule() if rule is None else rule
    if validation is not None:
        X, Y, row_scale = (np.array(array, dtype=dtype).reshape(-1) for array in validation)  # writable copies
        buffers = make_buffers(architecture, row_scale.size, dtype)
        rule = rule._replace(validate=True)
    else:
        X, Y, row_scale = one, one.copy(), one.copy()
        buffers = Buffers(one.copy(), one.copy(), one.copy(), one.copy(), np.zeros(1), np.zeros(1), one.copy())
    best = np.empty(architecture.n_params, dtype=dtype) if restore else one.copy()
    return EpochEnd(
        X,
        Y,
        row_scale,
        buffers,
        best,
        np.full(max(int(epochs), 1), np.nan, dtype=RECORD),
        make_rule_state(rule),
        rule,
        Visits() if visits is None else visits,
        np.zeros(1, dtype=PASS),
    )


# --------------------------------------------------------------------------- the stage


@kernel
def stopping_rule(rule, best, waited, lr_scale, value):
    """The stopping rule's decision after an epoch whose monitored value is ``value`` (see the
    module's docstring), from the rule's state (``best``, ``waited``, ``lr_scale``).

    Parameters
    ----------
    rule : Rule
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
    end : EpochEnd
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
