"""``fit``: checks every argument, then trains a network in as few compiled calls as it can.

Data flow of one ``fit`` call:

1. Every argument is checked (``plan.Plan``); nothing has changed if one is bad.
2. The network's state is prepared (``warm_start``, a new optimizer's fresh state).
3. A ``Trainer`` builds the kernels' bundles once and runs the compiled loop.
4. In memory, in one process (``EpochRun``): all the epochs in one call. Validation and the
   stopping rule run inside the loop after each epoch (``kernels.epoch_end``); when the fit has
   Python callbacks (a user's, checkpoints, the progress bar), the loop visits Python for them
   when they are due (``Visitor``), and between batches for a heartbeat that lets a Ctrl-C
   handler in the main thread run. No visit, no return to Python.
5. Data-parallel (MPI) or streamed data (``ChunkRun``): a chunk of epochs per call, as the
   callbacks' ``every`` allow (one with validation); validation and early stopping run in Python
   between calls, where the ranks agree on what to do next.
6. At the end every callback's ``on_fit_end`` runs (the best parameters are put back, the
   checkpoint written), then ``fit`` returns, warns or raises.
"""

from __future__ import annotations

import math
import threading
import warnings

import numpy as np

from .. import memory, streaming
from ..history import History
from ..kernels import epoch_end, layout
from ..reference import scheduled_lr, validation_score
from . import interrupt
from .callbacks import Clock, FitInfo, StopTraining, chunk_epochs
from .health import HealthRecorder
from .plan import Plan, score_field, score_kind, stopping_rule
from .trainer import Trainer

# fit() trains at most this many epochs per compiled call (bounding the loss buffer however
# many epochs are asked for); a Python round trip per 65 536 epochs costs nothing.
MAX_CHUNK_EPOCHS = 1 << 16
# Seconds between the visits a progress bar (about ten a second) or a Ctrl-C handler asks for.
VISIT_INTERVAL = 0.1


class DivergenceError(FloatingPointError):
    """Training produced a NaN or infinite loss or parameter.

    ``fit`` has put the network back to the end of the last epoch that stayed finite before
    raising this. Attributes: ``epoch`` (1-based, within the fit, the epoch that diverged) and
    ``history`` (the fit's ``History``, holding the finite epochs).
    """

    def __init__(self, message, epoch, history):
        super().__init__(message)
        self.epoch = epoch
        self.history = history


class DivergenceWarning(RuntimeWarning):
    """Issued instead of :class:`DivergenceError` by ``fit(on_divergence="warn")``."""


def fit(net, X, y, optimizer=None, epochs=1, batch_size=None, shuffle=True, sample_weight=None, **options) -> History:
    """Train ``net`` by gradient descent.

    Parameters
    ----------
    net : fastgd.Network
    X : array-like, shape (n, n_in)
        Inputs. Integer and bool arrays are converted to the network's dtype. A ``numpy.memmap``,
        a zarr array, an HDF5 dataset or another array-like with positional row access is
        streamed from where it lies, in chunks (``fastgd.streaming``), as is ``y`` likewise.
    y : array-like, shape (n, n_out) or (n,)
        Targets; for crossentropy, integer class labels (n,) or one-hot / probability rows.
    optimizer : Optimizer, str or None
        An optimizer instance or name. Passing the instance already in ``net.optimizer`` (or
        None) continues with its state; any other starts fresh state. Default on the first
        fit: ``SGD(lr=0.01)``.
    epochs : int, default 1
        Passes over the data (0 trains nothing).
    batch_size : int or None
        None: full-batch gradient descent; 1: stochastic; B: mini-batches of B rows (the last
        one holds the remainder). Sizes above n are taken as n.
    shuffle : bool or "blocks", default True
        Visit rows in a fresh random order each epoch (mini-batch only: a full batch is the
        same sum in any order). With False, batches are consecutive rows in order. "blocks"
        (streamed data): random blocks of consecutive rows, shuffled within windows of blocks
        (``fastgd.streaming``).
    sample_weight : array-like, shape (n,), optional
        Row weights: mean losses become weighted means, sse a weighted sum.
    **options
        The keywords of ``plan.FIT_OPTIONS`` (any other is a TypeError):

        validation_data : (X_val, y_val), optional
            Data to compute ``history.val_loss`` (and ``val_accuracy`` for classifiers) on after
            every epoch.
        validation_split : float in (0, 1), optional
            Hold out this share of the rows instead: the *last* rows of X (before any
            shuffling), as Keras does. Not together with ``validation_data``.
        early_stopping : bool or EarlyStopping, default False
            Stop when the monitored value (validation loss with validation data, else training
            loss) has not improved by more than ``min_delta`` for ``patience`` epochs; True uses
            the ``patience`` (10), ``min_delta`` (0) and ``restore_best`` (True) keywords, an
            :class:`EarlyStopping` object its own (and may monitor validation accuracy, or
            count as scikit-learn's ``tol`` does). In memory in one process the rule runs inside
            the compiled loop.
        callbacks : callable, Callback or list of them, optional
            ``callback(epoch, history, network)`` after every ``every``-th epoch
            (``callback.every``, default 1), ``epoch`` counted from 1 in this fit; ``False`` or
            :class:`StopTraining` ends training after that epoch (see ``callbacks``).
        verbose : {0, 1}, default 0
            1 shows a progress bar (tqdm) with the epoch, losses and samples/s, updated about
            ten times a second.
        warm_start : bool, default True
            False: start over from the parameters the network was initialised with, fresh
            optimizer state, the epoch count and ``net.history`` cleared.
        lr_schedule : fastgd.schedules.Schedule, optional
            Scales the optimizer's lr per step inside the compiled loop. Default: constant.
        checkpoint, checkpoint_every : path-like, int (default 1)
            Save the network to this file every ``checkpoint_every`` epochs and when training
            ends, is interrupted or diverges; each write is atomic.
        on_divergence : {"raise", "warn"}, default "raise"
            When a batch loss or a parameter becomes NaN or infinite the network is put back to
            the end of the last finite epoch and training stops; then raise
            :class:`DivergenceError` or warn with :class:`DivergenceWarning` and return.
        grad_shards : int, optional
            Compute each batch's gradient as the sum, in shard order, of the gradients of this
            many shards of consecutive rows (as data-parallel training over that many processes
            computes it, bitwise). Default: one shard; with ``comm``, the number of ranks.
        clip_grad_norm, clip_grad_value : float > 0, optional
            PyTorch's ``clip_grad_norm_`` and ``clip_grad_value_``, applied to each step's
            gradient after the weight penalty and (data-parallel) the sum over ranks; with
            both, values are clamped first.
        track_gradients : bool or GradientTracking, default False
            Record each epoch's gradient health per layer in ``history.grad_norm``,
            ``weight_norm``, ``update_ratio`` and ``saturation``, and warn
            (:class:`GradientWarning`) on vanishing or exploding layers. Not with streamed data.
        comm : mpi4py communicator, optional
            Train data-parallel over its ranks (``fastgd.distributed``), bitwise identical to
            ``grad_shards=<ranks>`` in one process.
        partitioned : bool, default False
            With ``comm``: each rank passes its own rows (the same number on every rank).
        streaming : fastgd.streaming.Streaming, optional
            Stream the data in chunks even when it is in memory, or with other chunk settings.

    Returns
    -------
    History

    Raises
    ------
    KeyboardInterrupt
        On Ctrl-C (SIGINT), re-raised once the network is back at the end of the last
        completed epoch, with ``epochs_trained``, the optimizer state and step count and
        ``net.history`` all matching it (and the checkpoint written, if any).
    DivergenceError
        See ``on_divergence``.
    """
    session = None
    if options.get("comm") is not None:
        from ..distributed import Session

        session = Session(options["comm"])
    try:
        try:
            plan = Plan(net, X, y, optimizer, epochs, batch_size, shuffle, sample_weight, options, session)
            # What the fit will allocate, against the memory there is: refused before anything
            # large is allocated (inside this try, so that MPI ranks agree on a refusal).
            memory.check_fit(net, plan)
            failure = None
        except (ValueError, TypeError) as error:
            if session is None:
                raise
            plan, failure = None, error
        if session is not None:
            # Every rank learns whether every other rank's arguments passed: one rank raising
            # alone would leave the others waiting for it forever.
            everyone = session.agree(None if plan is None else plan.facts(net), failure)
            plan.agreed(everyone)
        # Every argument is checked: from here on the network changes.
        if not plan.warm_start:
            net.restart()
        if plan.optimizer is not net.optimizer or not plan.warm_start:
            net.set_optimizer(plan.optimizer)
        if session is not None:
            session.share_network(net)
            plan.optimizer = net.optimizer
        history = History()
        if plan.epochs == 0:
            return history
        run = EpochRun(net, plan, history) if plan.compiled_epoch_end else ChunkRun(net, plan, history)
        if session is None:
            return run.run()
        try:
            return run.run()
        except (DivergenceError, KeyboardInterrupt):
            raise  # decided from values every rank shares: raised on every rank alike
        except BaseException as error:
            # Raised on this rank alone (a callback, a bug): the other ranks would wait for it
            # forever, so the whole job ends here, as mpi4py's runner would end it.
            session.abort(error)
            raise
    finally:
        if session is not None:
            session.close()


class _Run:
    """What both runs share: the fit's history records, callbacks and its ending."""

    def __init__(self, net, plan, history, callbacks):
        self.net, self.plan, self.history, self.callbacks = net, plan, history, callbacks
        self.info = FitInfo(
            net,
            plan.epochs,
            plan.X.shape[0],
            history,
            1 if plan.session is None else plan.session.size,
            self.learning_rate,
        )
        self.health = None if plan.tracking is None else HealthRecorder(plan.tracking)
        self.clock = Clock()
        self.done = 0  # epochs of this fit completed and recorded
        # The stopping rule's factor on the rate of the steps of the last recorded epoch (the
        # rule may have divided it after that epoch, for the next ones).
        self.step_scale = 1.0

    def lr_scale(self) -> float:
        """The stopping rule's factor on the rate now (scikit-learn's adaptive division), 1
        without."""
        stopping = self.plan.stopping
        return 1.0 if stopping is None else float(stopping.lr_scale)

    def learning_rate(self) -> float:
        """The rate of the last optimizer step taken (the first step's before any)."""
        plan, net = self.plan, self.net
        step = max(net.optimizer_steps, 1)
        epoch = max(net.epochs_trained - 1, 0)
        rate = scheduled_lr(plan.schedule.code, float(plan.optimizer.lr), step, plan.schedule.parameters(), epoch)
        return float(rate) * self.step_scale

    def record(self, losses, records=None, health=None):
        """Append completed epochs to the fit's and the network's history: their losses,
        validation ``records`` (epoch_end.RECORD records, NaN: not measured) and health rows."""
        histories = (self.history, self.net.history)
        if self.health is not None and health is not None:
            self.health.record(health, histories, self.done)
        field = score_field(self.plan.stopping)
        for history in histories:
            history.loss.extend(losses)
            if records is not None and self.plan.validation is not None:
                history.val_loss.extend(records["val_loss"].tolist())
                if field == "val_score" or not np.isnan(records["val_score"]).all():
                    getattr(history, field).extend(records["val_score"].tolist())
        self.done += len(losses)
        self.net.epochs_trained += len(losses)

    def epoch_callbacks(self, stop):
        """The callbacks due after epoch ``self.done``; returns whether one asked to stop."""
        halt = False
        stop.defer = False  # user code: Ctrl-C raises as usual
        try:
            for callback in self.callbacks:
                if stop.requested:
                    break
                if not callback.timed and self.done % callback.every == 0:
                    try:
                        halt = (callback.on_epoch_end(self.done, self.history, self.net) is False) or halt
                    except StopTraining:
                        halt = True
        finally:
            stop.defer = True
        return halt

    def chunk_end(self, epochs):
        seconds = self.clock.restart()
        for callback in self.callbacks:
            callback.on_chunk_end(epochs, seconds)
        return seconds

    def finish(self, outcome, stop):
        """End the fit: the callbacks' ``on_fit_end``, the ``stopped_epoch``, divergence."""
        plan, history = self.plan, self.history
        if stop.requested or outcome == "interrupted":
            for callback in self.callbacks:
                callback.on_fit_end(self.info, "interrupted")
            raise KeyboardInterrupt
        error = _divergence_message(self.net, plan, self.done) if outcome == "diverged" else None
        if outcome == "diverged" and plan.on_divergence == "raise":
            for callback in self.callbacks:
                callback.on_fit_end(self.info, "failed")
            raise DivergenceError(error, epoch=self.done + 1, history=history)
        if outcome in ("stopped", "diverged"):
            history.stopped_epoch = self.done
        for callback in self.callbacks:
            callback.on_fit_end(self.info, outcome)
        return error


class EpochRun(_Run):
    """A fit in memory in one process: every epoch in one compiled call (see the module's
    docstring), validation and the stopping rule inside it, Python visited when due."""

    def __init__(self, net, plan, history):
        super().__init__(net, plan, history, plan.callbacks)
        self.capacity = min(plan.epochs, MAX_CHUNK_EPOCHS)
        periods = [callback.every for callback in self.callbacks if not callback.timed]
        visits = epoch_end.Visits()
        if self.callbacks:
            timed = any(callback.timed for callback in self.callbacks)
            heartbeat = threading.current_thread() is threading.main_thread()
            visits = epoch_end.Visits(
                enabled=True,
                every=int(math.gcd(*periods) if periods else 0),
                interval=int(VISIT_INTERVAL * 1e9) if timed or heartbeat else 0,
                beat=bool(heartbeat),
            )
        stopping = plan.stopping
        rule = stopping_rule(stopping, plan.validation is not None, net.loss_spec, plan.optimizer.lr)
        self.end = epoch_end.make_epoch_end(
            net.architecture,
            net.dtype,
            self.capacity,
            plan.validation,
            rule,
            visits,
            restore=stopping is not None and stopping.restore_best,
        )
        if stopping is not None and stopping.resume:
            _resume_rule(stopping, self.end)
        self.step_scale = self.lr_scale()
        self.trainer = Trainer(net, plan, self.capacity, self.end)
        self.trainer.visitor = self.visit
        self.base = 0  # epochs of this fit before the current call
        self.stop = None

    def lr_scale(self) -> float:
        return float(self.end.state[0]["lr_scale"])

    def visit(self, kind, completed):
        """A visit from the compiled loop (its ``python`` stage): records the epochs the
        call completed since the last one, runs the callbacks that are due; 1 stops training."""
        if kind == epoch_end.VISIT_HEARTBEAT:
            return 0  # (the interpreter has run any pending signal handler by now)
        new = self._record_call(completed)
        if new == 0:
            return 0
        halt = self.epoch_callbacks(self.stop)
        self.chunk_end(new)
        self.step_scale = self.lr_scale()  # the scale of the next epoch's steps
        return 1 if halt else 0

    def _record_call(self, completed):
        # Record this call's epochs [recorded, completed); returns how many.
        recorded = self.done - self.base
        if completed <= recorded:
            return 0
        work, end = self.trainer.work, self.end
        self.record(
            work.epoch_losses[recorded:completed].tolist(),
            end.records[recorded:completed],
            work.health[recorded:completed] if self.plan.tracking is not None else None,
        )
        state = end.state[0]
        if state["best_epoch"] > 0:
            self.history.best_epoch = int(state["best_epoch"])
        return completed - recorded

    def run(self):
        plan, net = self.plan, self.net
        outcome = "finished"
        try:
            for callback in self.callbacks:
                callback.on_fit_begin(self.info)
            with interrupt.StopRequest(self.trainer.control) as stop:
                self.stop = stop
                try:
                    while self.done < plan.epochs and not stop.requested:
                        self.base = self.done
                        self.end = self.trainer.end = self.end._replace(
                            rule=self.end.rule._replace(offset=int(self.done))
                        )
                        count = min(self.capacity, plan.epochs - self.done)
                        # With visits the call runs here, in this thread: they run the callbacks.
                        inline = bool(self.callbacks)
                        losses, result = self.trainer.run(count, stop, first_epoch=net.epochs_trained, inline=inline)
                        new = self._record_call(len(losses))
                        if new and self.callbacks:
                            self.chunk_end(new)  # epochs no visit saw (a progress bar's last ones)
                        if result != layout.OUTCOME_FINISHED:
                            outcome = _OUTCOMES[result]
                            break
                except KeyboardInterrupt:
                    stop.requested = True
                error = self.finish(outcome, stop)
                # Still under the StopRequest: a Ctrl-C that comes while the best parameters are
                # put back waits for them, then leaving it raises (a KeyboardInterrupt raised
                # half-way would leave the rule's state half-copied).
                self._restore_best(outcome)
        finally:
            self.trainer.close()
        if error is not None:
            warnings.warn(error, DivergenceWarning, stacklevel=3)
        return self.history

    def _restore_best(self, outcome):
        stopping, state = self.plan.stopping, self.end.state[0]
        if stopping is None:
            return
        # The rule's state, for the next fit of a resuming rule (and for anyone to read).
        stopping.best, stopping.waited = float(state["best"]), float(state["waited"])
        stopping.lr_scale = float(state["lr_scale"])
        if stopping.restore_best and state["snapshot"]:
            stopping.best_parameters = self.end.best_params.copy()
            if outcome in ("finished", "stopped", "diverged") and not (
                outcome == "diverged" and self.plan.on_divergence == "raise"
            ):
                self.net.flat_parameters[...] = self.end.best_params


def _resume_rule(stopping, end):
    # Start the compiled rule from the state the last fit left in ``stopping``.
    state = end.state[0]
    state["best"], state["waited"], state["lr_scale"] = stopping.best, stopping.waited, stopping.lr_scale
    if (
        stopping.restore_best
        and stopping.best_parameters is not None
        and stopping.best_parameters.size == end.best_params.size
    ):
        end.best_params[...] = stopping.best_parameters
        state["snapshot"] = 1.0


_OUTCOMES = {
    layout.OUTCOME_DIVERGED: "diverged",
    layout.OUTCOME_INTERRUPTED: "interrupted",
    layout.OUTCOME_STOPPED: "stopped",
    layout.OUTCOME_FINISHED: "finished",
}


class ChunkRun(_Run):
    """A data-parallel or streamed fit: a chunk of epochs per compiled call, validation and
    early stopping in Python between calls (see the module's docstring)."""

    def __init__(self, net, plan, history):
        callbacks = ([plan.stopping] if plan.stopping is not None else []) + plan.callbacks
        super().__init__(net, plan, history, callbacks)

    def run(self):
        plan, net, session = self.plan, self.net, self.plan.session
        chunk = chunk_epochs(self.callbacks, plan.validation is not None, plan.epochs, MAX_CHUNK_EPOCHS)
        if session is not None:  # every rank makes the same compiled calls: rank 0's chunks
            chunk = session.broadcast(chunk)
        timed = chunk is None  # only a progress bar: group epochs by time
        chunk = 1 if timed else chunk
        buffers = (
            layout.make_buffers(net.architecture, plan.validation[0].shape[0], net.dtype) if plan.validation else None
        )
        outcome, trainer = "finished", None
        try:
            trainer = Trainer(net, plan, MAX_CHUNK_EPOCHS if timed else chunk)
            for callback in self.callbacks:
                callback.on_fit_begin(self.info)
            with interrupt.StopRequest(trainer.control) as stop:
                try:
                    while self.done < plan.epochs and not stop.requested:
                        lr_scale = plan.stopping.lr_scale if plan.stopping is not None else 1.0
                        self.step_scale = lr_scale
                        losses, result = trainer.run(min(chunk, plan.epochs - self.done), stop, lr_scale=lr_scale)
                        if result == layout.OUTCOME_INTERRUPTED:
                            stop.requested = True  # with several ranks, maybe another rank's Ctrl-C
                        # net.history follows the fit epoch by epoch, so it matches the parameters
                        # whenever fit stops, whatever stops it.
                        records = (
                            _validation_records(net, plan.validation, buffers, score_kind(plan.stopping, net.loss_spec))
                            if plan.validation and losses
                            else None
                        )
                        self.record(
                            losses, records, trainer.work.health[: len(losses)] if plan.tracking is not None else None
                        )
                        if result == layout.OUTCOME_DIVERGED:
                            outcome = "diverged"
                            break
                        if stop.requested and session is None:
                            break
                        halt = self.epoch_callbacks(stop)
                        seconds = self.chunk_end(len(losses))
                        if timed:
                            chunk = max(1, min(MAX_CHUNK_EPOCHS, int(VISIT_INTERVAL * max(len(losses), 1) / seconds)))
                        if session is not None:
                            # Rank 0 decides whether to stop and the next chunk; a Ctrl-C on any rank stops all.
                            halt, chunk, stopping = session.decide(halt, chunk, stop.requested)
                            if stopping:
                                stop.requested = True
                                break
                        if halt:
                            outcome = "stopped"
                            break
                except KeyboardInterrupt:
                    stop.requested = True
                error = self.finish(outcome, stop)
        finally:
            if trainer is not None:
                trainer.close()
        if session is not None and plan.partitioned and plan.validation is not None:
            # Every rank ends with rank 0's network and history. Only needed here: with validation
            # data of its own, a rank's early stopping may restore other parameters; otherwise every
            # value the ranks act on is shared, and they are bitwise alike already.
            session.share_network(net)
            self.history = session.broadcast(self.history)
        if error is not None:
            warnings.warn(error, DivergenceWarning, stacklevel=3)
        return self.history


def _validation_records(net, validation, buffers, kind):
    # One epoch's validation loss and score (as the compiled epoch end measures them), as a
    # (1,) array of RECORD records.
    X_val, Y_val, row_scale = validation
    threads = net.team(X_val.shape[0])
    with net.compiled_call(threads):
        value = net.engine.evaluate_loss(
            net.flat_parameters,
            net.architecture,
            X_val,
            Y_val,
            row_scale,
            buffers,
            net.loss_code,
            threads,
            parameter=net.loss_parameter,
        )
    records = np.zeros(1, dtype=epoch_end.RECORD)
    records[0] = (float(value), validation_score(net.outputs(buffers, X_val.shape[0]), Y_val, kind))
    return records


def _divergence_message(net, plan, done):
    scale = streaming.abs_max(plan.X)
    cause = (
        f"the learning rate (lr={plan.optimizer.lr:g}) is probably too large for this network and data; "
        "try one 10x smaller"
    )
    if scale > 1e3:
        cause += f", and scale the inputs (|X| reaches {scale:.3g})"
    return (
        f"training diverged in epoch {done + 1} of this fit (epoch {net.epochs_trained + 1} overall): "
        f"a loss or parameter became NaN or infinite. The network was put back to the end of the last "
        f"finite epoch ({net.epochs_trained} trained; history keeps {done} epochs of this fit). Likely cause: {cause}."
    )
