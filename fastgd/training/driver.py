"""``fit``: checks every argument, then trains a network in as few compiled calls as its
callbacks allow.

Data flow of one ``fit`` call:

1. Every argument is checked (``_Plan``); nothing has changed if one is bad.
2. The network's state is prepared (``warm_start``, a new optimizer's fresh state).
3. ``Trainer`` builds the kernels' bundles once (``kernels.layout``: the live ``TrainState``
   of the network, the ``Data``, the ``Work`` buffers, the ``Settings``) and runs
   ``engine.train_epochs`` for a chunk of epochs at a time: all of them, or as many as the
   callbacks' ``every`` allow (``callbacks.chunk_epochs``).
4. Between chunks: the epochs' losses go to the fit's history and ``net.history``, validation
   is recorded, divergence and Ctrl-C are handled, and the callbacks run.
5. At the end every callback's ``on_fit_end`` runs (early stopping restores the best
   parameters, the checkpoint is written), then ``fit`` returns, warns or raises.
"""

from __future__ import annotations

import math
import numbers
import warnings

import numpy as np

from .. import _validation as check
from .._threads import check_threads, team_size
from ..history import History
from .health import HealthRecorder, check_tracking
from ..kernels import layout
from ..optimizers import SGD, make_optimizer
from ..schedules import make_schedule
from .. import streaming
from ..streaming import Streaming, check_streamed, is_streamed
from . import interrupt
from .callbacks import (
    Checkpoint,
    Clock,
    EarlyStopping,
    FitInfo,
    ProgressBar,
    StopTraining,
    check_callbacks,
    chunk_epochs,
)

# fit() trains at most this many epochs per compiled call (bounding the loss buffer however
# many epochs are asked for); a Python round trip per 65 536 epochs costs nothing.
MAX_CHUNK_EPOCHS = 1 << 16
ON_DIVERGENCE = ("raise", "warn")


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


def fit(net, X, y, optimizer=None, epochs=1, batch_size=None, shuffle=True, sample_weight=None, validation_data=None,
        validation_split=None, early_stopping=False, patience=10, min_delta=0.0, restore_best=True, callbacks=None,
        verbose=0, warm_start=True, lr_schedule=None, checkpoint=None, checkpoint_every=1, on_divergence="raise",
        grad_shards=None, comm=None, partitioned=False, streaming=None, clip_grad_norm=None,
        clip_grad_value=None, track_gradients=False) -> History:  # fmt: skip
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
    validation_data : (X_val, y_val), optional
        Data to compute ``history.val_loss`` (and ``val_accuracy`` for classifiers) on after
        every epoch.
    validation_split : float in (0, 1), optional
        Hold out this share of the rows instead: the *last* rows of X (before any shuffling),
        as Keras does. Not together with ``validation_data``.
    early_stopping : bool, default False
        Stop when the monitored loss (validation loss with validation data, else training
        loss) has not improved by more than ``min_delta`` for ``patience`` epochs
        (``callbacks.EarlyStopping``).
    patience : int, default 10
    min_delta : float, default 0
    restore_best : bool, default True
        With early stopping, put back the parameters of the best epoch at the end.
    callbacks : callable, Callback or list of them, optional
        ``callback(epoch, history, network)`` after every ``every``-th epoch (``callback.every``,
        default 1), ``epoch`` counted from 1 in this fit; ``False`` or
        :class:`StopTraining` ends training after that epoch (see ``fastgd.training.callbacks``).
    verbose : {0, 1}, default 0
        1 shows a progress bar (tqdm) with the epoch, losses and samples/s.
    warm_start : bool, default True
        True: continue from the current parameters (and optimizer state, see ``optimizer``).
        False: start over from the parameters the network was initialised with, fresh optimizer
        state, the epoch count and ``net.history`` cleared.
    lr_schedule : fastgd.schedules.Schedule, optional
        Scales the optimizer's lr per step inside the compiled loop. Default: constant.
    checkpoint : str or path-like, optional
        Save the network to this file every ``checkpoint_every`` epochs and when training ends,
        is interrupted or diverges; each write is atomic.
    checkpoint_every : int, default 1
    on_divergence : {"raise", "warn"}, default "raise"
        When a batch loss or a parameter becomes NaN or infinite the network is put back to the
        end of the last finite epoch and training stops; then raise :class:`DivergenceError`
        or warn with :class:`DivergenceWarning` and return.
    grad_shards : int, optional
        Compute each batch's gradient as the sum, in shard order, of the gradients of this many
        shards of consecutive rows (the way data-parallel training over that many processes
        computes it, bitwise). Default: one shard; with ``comm``, None or the number of ranks.
    clip_grad_norm : float > 0, optional
        Scale each step's gradient (after the weight penalty and, data-parallel, after the sum
        over ranks; before the optimizer step) by ``clip_grad_norm / (‖g‖₂ + 1e-6)`` when that
        is below 1, ‖g‖₂ being the 2-norm over all parameters together: PyTorch's
        ``clip_grad_norm_``.
    clip_grad_value : float > 0, optional
        Clamp each gradient entry to [−clip_grad_value, clip_grad_value] (PyTorch's
        ``clip_grad_value_``); with both, values are clamped first, then the norm is clipped.
    track_gradients : bool or GradientTracking, default False
        Record, inside the compiled loop, each epoch's gradient health per layer in
        ``history.grad_norm``, ``weight_norm``, ``update_ratio`` and ``saturation`` (see
        :class:`History`), and warn (:class:`GradientWarning`) when a layer's gradient norm is
        below 1e-4 or above 1e4 times the output layer's (``GradientTracking`` sets both).
        Not with streamed data.
    comm : mpi4py communicator, optional
        Train data-parallel over its ranks (``fastgd.distributed``): every rank calls ``fit``
        with the same arguments; rank 0's network (parameters, optimizer and its state, step
        count) is given to all at the start, each step's gradient is summed over the ranks in
        rank order, and every rank ends with the same network. Bitwise identical to
        ``grad_shards=<ranks>`` in one process. Checkpoints and the progress bar are rank 0's;
        rank 0 decides early stopping and callbacks' stop requests.
    partitioned : bool, default False
        With ``comm``: each rank passes its own rows (the same number on every rank, see
        ``distributed.partition_rows``) instead of all of them, and takes ``batch_size / ranks``
        of its rows per step (``batch_size`` must be a multiple of the ranks; None: all of them).
    streaming : fastgd.streaming.Streaming, optional
        Stream the data in chunks even when it is in memory, or with other chunk settings
        (chunk size, block shuffle, prefetching). Default for streamed data: ``Streaming()``.

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
    if comm is not None:
        from ..distributed import Session

        session = Session(comm)
    elif partitioned is not False:
        raise ValueError("partitioned applies to data-parallel training: give comm too")
    try:
        try:
            plan = _Plan(net, X, y, optimizer, epochs, batch_size, shuffle, sample_weight, validation_data, validation_split,
                         early_stopping, patience, min_delta, restore_best, callbacks, verbose, warm_start, lr_schedule,
                         checkpoint, checkpoint_every, on_divergence, grad_shards, session, partitioned, streaming,
                         clip_grad_norm, clip_grad_value, track_gradients)  # fmt: skip
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
        if session is None:
            return _run(net, plan, history)
        try:
            return _run(net, plan, history)
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


class _Plan:
    """Every argument of ``fit``, checked and converted; raises before anything changes."""

    def __init__(self, net, X, y, optimizer, epochs, batch_size, shuffle, sample_weight, validation_data, validation_split,
                 early_stopping, patience, min_delta, restore_best, callbacks, verbose, warm_start, lr_schedule,
                 checkpoint, checkpoint_every, on_divergence, grad_shards, session=None, partitioned=False,
                 streaming=None, clip_grad_norm=None, clip_grad_value=None, track_gradients=False):  # fmt: skip
        self.session = session
        self.tracking = check_tracking(track_gradients)
        self.clip = []
        for name, value in (("clip_grad_norm", clip_grad_norm), ("clip_grad_value", clip_grad_value)):
            if value is None:
                self.clip.append(0.0)
                continue
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
                raise TypeError(f"{name} must be a number > 0 or None, got {type(value).__name__}")
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0 or None, got {value!r}")
            self.clip.append(float(value))
        self.partitioned = check.as_bool(partitioned, "partitioned")
        self.epochs = check.as_int(epochs, "epochs", 0)
        self.batch_size = check.as_int(batch_size, "batch_size", 1, allow_none=True)
        if isinstance(shuffle, str):
            if shuffle != "blocks":
                raise ValueError(f"shuffle must be True, False or 'blocks', got {shuffle!r}")
            self.shuffle = "blocks"
        else:
            self.shuffle = check.as_bool(shuffle, "shuffle")
        if streaming is not None and not isinstance(streaming, Streaming):
            raise TypeError(f"streaming must be a fastgd.streaming.Streaming, got {type(streaming).__name__}")
        early_stopping = check.as_bool(early_stopping, "early_stopping")
        self.warm_start = check.as_bool(warm_start, "warm_start")
        self.schedule = make_schedule(lr_schedule)
        user_callbacks = check_callbacks(callbacks)
        if isinstance(verbose, bool) or verbose not in (0, 1):
            raise ValueError(f"verbose must be 0 or 1, got {verbose!r}")
        if not isinstance(on_divergence, str) or on_divergence not in ON_DIVERGENCE:
            raise ValueError(f"on_divergence must be one of {list(ON_DIVERGENCE)}, got {on_divergence!r}")
        self.on_divergence = on_divergence
        self.grad_shards = check_threads(grad_shards, "grad_shards")
        stopper = EarlyStopping(patience, min_delta, restore_best)  # checks them even when unused
        saver = Checkpoint(checkpoint, checkpoint_every) if checkpoint is not None else None
        if checkpoint is None:
            check.as_int(checkpoint_every, "checkpoint_every", 1)
        self.stream = None
        if streaming is not None or self.shuffle == "blocks" or any(is_streamed(v) for v in (X, y, sample_weight)):
            # Out-of-core: checked a block at a time, streamed in chunks (fastgd.streaming).
            if validation_split is not None:
                raise ValueError("validation_split needs in-memory data; give validation_data with streamed data")
            if self.tracking is not None:
                # An epoch of streamed data is a compiled call per chunk; the per-epoch sums
                # would have to be carried across them.
                raise ValueError("track_gradients is not available with streamed data")
            self.X, self.Y, self.weight, convert_x, convert_y = check_streamed(net, X, y, sample_weight)
            self.validation = _validation_inputs(net, self.X, self.Y, self.weight, validation_data, None)[3]
            self.stream = (streaming or Streaming(), convert_x, convert_y)
        else:
            X, Y, weight = net.check_inputs(X, y, sample_weight)
            self.X, self.Y, self.weight, self.validation = _validation_inputs(net, X, Y, weight, validation_data, validation_split)
        self.optimizer = _resolve_optimizer(net, optimizer)
        n = self.X.shape[0]
        self.batch = n if self.batch_size is None else min(self.batch_size, n)
        ranks = 1 if session is None else session.size
        if session is not None:
            if self.grad_shards not in (None, ranks):
                raise ValueError(f"grad_shards must be None or the number of ranks ({ranks}) with comm, got {self.grad_shards}")
            self.grad_shards = None
            if self.partitioned:
                if self.batch_size is not None and self.batch_size % ranks:
                    raise ValueError(f"batch_size ({self.batch_size}) must be a multiple of the ranks ({ranks}) with partitioned data")
                self.batch = n if self.batch_size is None else min(self.batch_size // ranks, n)
            elif self.batch < ranks:
                raise ValueError(f"a batch ({self.batch} rows) must have at least a row for each of the {ranks} ranks")
        if self.grad_shards is not None and self.grad_shards > self.batch:
            raise ValueError(f"grad_shards ({self.grad_shards}) must be at most the rows of a batch ({self.batch})")
        # With partitioned data each rank's weights are rescaled by the largest over all ranks
        # (``agreed``): a mean loss's weights were divided by this rank's largest.
        self.weighted = sample_weight is not None
        rescale = self.weighted and net.loss_name != "sse" and self.partitioned
        self.raw_weight_max = float(np.max(np.asarray(sample_weight, dtype=np.float64))) if rescale else None
        # Built-in callbacks first, in this order, then the user's; the progress bar last.
        # With several ranks the checkpoint and the progress bar are rank 0's.
        root = session is None or session.root
        self.callbacks = ([stopper] if early_stopping else []) + ([saver] if saver and root else []) + user_callbacks
        if verbose and root:
            self.callbacks.append(ProgressBar())

    def facts(self, net) -> dict:
        """What every rank must agree on (keys with a leading underscore are only gathered)."""
        config = net.get_config()
        facts = {key: config[key] for key in ("layer_sizes", "activation", "output_activation", "loss", "dtype", "l1", "l2")}
        optimizer = self.optimizer
        facts.update(rows=int(self.X.shape[0]), epochs=self.epochs, batch_size=self.batch_size, shuffle=self.shuffle,
                     optimizer=(optimizer.name, optimizer.get_config()), lr_schedule=(self.schedule.code, self.schedule.parameters().tolist()),
                     partitioned=self.partitioned, warm_start=self.warm_start, sample_weight=self.weighted,
                     backend=net.backend, clip=tuple(self.clip), _weight_max=self.raw_weight_max)  # fmt: skip
        return facts

    def agreed(self, everyone) -> None:
        """With partitioned data, weights are scaled by the largest weight over all ranks (each
        rank's were scaled by its own), so that the ranks' rows weigh alike."""
        if self.partitioned and self.raw_weight_max is not None:
            largest = max(facts["_weight_max"] for facts in everyone)
            self.weight = (self.weight.astype(np.float64) * (self.raw_weight_max / largest)).astype(self.weight.dtype)


def _resolve_optimizer(net, optimizer):
    if optimizer is None:
        return net.optimizer if net.optimizer is not None else SGD(lr=0.01)
    return make_optimizer(optimizer)


def _validation_inputs(net, X, Y, weight, validation_data, validation_split):
    """Split or check the validation data; returns the training arrays and (X_val, Y_val, row scale)."""
    if validation_data is not None and validation_split is not None:
        raise ValueError("give validation_data or validation_split, not both")
    if validation_split is not None:
        split = check.as_real(validation_split, "validation_split", minimum=0.0)
        n_val = math.ceil(split * X.shape[0])
        if not 0.0 < split < 1.0 or n_val >= X.shape[0]:
            raise ValueError(f"validation_split must be in (0, 1) and leave training rows, got {validation_split}")
        X_val, Y_val = X[-n_val:], Y[-n_val:]
        X, Y, weight = X[:-n_val], Y[:-n_val], weight[:-n_val]
    elif validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise TypeError("validation_data must be a pair (X_val, y_val)")
        X_val, Y_val, _ = net.check_inputs(*validation_data, names=("validation_data X", "validation_data y"))
    else:
        return X, Y, weight, None
    X_val, Y_val = np.ascontiguousarray(X_val), np.ascontiguousarray(Y_val)
    return X, Y, weight, (X_val, Y_val, net.row_scale(np.ones(X_val.shape[0], dtype=net.dtype)))


def _record_validation(net, histories, X_val, Y_val, row_scale, evaluation):
    with net.compiled_call():
        value = net.engine.evaluate_loss(net.flat_parameters, net.meta, X_val, Y_val, row_scale, evaluation, net.loss_code,
                                         net.team(X_val.shape[0]))  # fmt: skip
    records = {"val_loss": float(value)}
    out = net.outputs(evaluation, X_val.shape[0])
    if net.loss_name == "crossentropy":
        records["val_accuracy"] = float(np.mean(out.argmax(axis=1) == Y_val.argmax(axis=1)))
    elif net.loss_name == "binary_crossentropy":
        records["val_accuracy"] = float(np.mean((out >= 0.5) == (Y_val >= 0.5)))
    for history in histories:
        for field, value in records.items():
            getattr(history, field).append(value)


class Trainer:
    """Runs the compiled training loop over a fit's data, a chunk of epochs per call.

    Builds the kernels' bundles once: the network's live ``TrainState``, the ``Data``, the
    ``Work`` buffers (for ``capacity`` epochs per call) and the ``Settings``.
    """

    def __init__(self, net, plan, capacity):
        self.net = net
        n = plan.X.shape[0]
        meta = net.meta
        shards, solo = layout.shard_plan(meta, plan.batch, plan.grad_shards or 0)
        optimizer = plan.optimizer
        session = self.session = plan.session
        rank, ranks, channel, threads = 0, 1, 0, net.n_threads
        local_rows = plan.batch  # rows of a batch this process computes
        seed = net.shuffle_seed
        if session is not None:
            from ..distributed import local_threads

            rank, ranks = session.rank, session.size
            channel = session.open_channel(net.dtype, net.n_params)
            threads = local_threads(session.node_size) if threads is None else threads
            if plan.partitioned:  # each rank its own permutations of its own rows
                seed = (seed + rank * 0x9E3779B97F4A7C15) % (1 << 63)
            else:
                local_rows = -(-plan.batch // ranks)
        self.stream = None
        if plan.stream is not None:
            # Streamed: the loop trains one chunk of whole batches per call, in the order the
            # chunk was read in; the epoch's row order is drawn here.
            options, convert_x, convert_y = plan.stream
            rows = streaming.chunk_rows(options, plan.batch, net.layer_sizes[0], net.layer_sizes[-1], net.dtype)
            rows = min(rows, -(-n // plan.batch) * plan.batch)
            self.chunks = streaming.ChunkPlan(plan.batch, rows, rank, ranks, replicated_share=session is not None and not plan.partitioned)
            self.loader = streaming.ChunkLoader(streaming.RowReader(plan.X), streaming.RowReader(plan.Y), convert_x, convert_y,
                                                plan.weight, net.layer_sizes[0], net.layer_sizes[-1], net.dtype,
                                                self.chunks.chunk_rows, options.prefetch)  # fmt: skip
            self.stream = options
            self.order, self.keys = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.uint64)
            x, y, w = self.loader.buffers[0]
            self.data = layout.Data(x, y, w)
            work_rows, capacity = self.chunks.chunk_rows, 1
        else:
            self.data = layout.Data(plan.X, plan.Y, plan.weight)
            work_rows = n
        self.plan = plan
        self.work = layout.make_work(meta, work_rows, plan.batch, max(len(optimizer.state_names), 1), capacity, net.dtype, shards,
                                     plan.partitioned)  # fmt: skip
        self.settings = layout.make_settings(meta, net.loss_code, optimizer.code, plan.batch,
                                             plan.shuffle is True and plan.batch < n and self.stream is None,
                                             seed, 0, 0, float(optimizer.lr), optimizer.hyper_vector(),
                                             plan.schedule.code, plan.schedule.parameters(), net.l1, net.l2, shards, solo, rank,
                                             ranks, plan.partitioned, channel, *plan.clip,
                                             plan.tracking is not None)  # fmt: skip
        self.control = layout.make_control()
        self.threads = layout.useful_threads(meta, local_rows, shards, solo, team_size(threads)) if net.backend == "numba" else 1
        self.macs_per_epoch = 3.0 * n * float(np.sum(meta[:, 0] * meta[:, 1])) / ranks
        # A helper thread may run the compiled call (Ctrl-C) unless MPI must be called from
        # the main thread only.
        self.inline = session is not None and not session.any_thread
        if session is not None and net.backend == "numba":
            from ..kernels.train import bound_loop

            session.in_turn(lambda: bound_loop(net.train_state(), self.data, self.work, self.settings))

    def close(self):
        if self.stream is not None:
            self.loader.close()

    def _call(self, data, settings, stop, macs):
        net = self.net
        state = net.train_state()

        def call():
            return net.engine.train_epochs(state, data, self.work, settings, self.control, self.threads)

        with net.compiled_call():
            return int(interrupt.call(call, stop, 0.0 if self.inline else macs))

    def run(self, count, stop):
        """Train up to ``count`` epochs in one compiled call (streamed: epoch by epoch, a call
        per chunk); returns the completed epochs' losses and the outcome (``layout.OUTCOME_*``)."""
        if self.stream is not None:
            return self._run_streamed(count, stop)
        net = self.net
        settings = self.settings._replace(first_epoch=int(net.epochs_trained), epochs=int(count))
        completed = self._call(self.data, settings, stop, count * self.macs_per_epoch)
        net.epochs_trained += completed
        return self.work.epoch_losses[:completed].tolist(), int(self.control[layout.CONTROL_OUTCOME])

    def _epoch_order(self, epoch):
        n, plan = self.order.size, self.plan
        seed = self.settings.seed
        if plan.shuffle == "blocks":
            options = self.stream
            block = options.block_rows or max(1, self.chunks.chunk_rows // options.window_blocks)
            streaming.block_shuffle_order(self.order, self.keys, n, block, options.window_blocks, seed, epoch,
                                          self.net.engine.shuffle_order)  # fmt: skip
        elif plan.shuffle and plan.batch < n:
            self.net.engine.shuffle_order(self.order, self.keys, seed, epoch)
        else:
            self.order[...] = np.arange(n)
        return self.order

    def _run_streamed(self, count, stop):
        net, work, settings = self.net, self.work, self.settings
        mean = net.loss_name != "sse"
        losses = []
        for _ in range(count):
            epoch = int(net.epochs_trained)
            start_state = net.train_state()
            saved = [array.copy() for array in start_state]
            order = self._epoch_order(epoch)
            chunks = list(self.chunks.chunks(order.size))
            pending = self.loader.start(order[slice(*chunks[0])], self.chunks.positions(chunks[0][1] - chunks[0][0]))
            total, weight, outcome = 0.0, 0.0, layout.OUTCOME_FINISHED
            try:
                for index, (first, last) in enumerate(chunks):
                    data = layout.Data(*pending.result())
                    pending = None

                    def load_next():
                        if index + 1 < len(chunks):
                            upcoming = chunks[index + 1]
                            return self.loader.start(order[upcoming[0] : upcoming[1]], self.chunks.positions(upcoming[1] - upcoming[0]))
                        return None

                    if self.loader.prefetching:  # the next chunk is read while this one trains
                        pending = load_next()
                    chunk_settings = settings._replace(first_epoch=epoch, epochs=1)
                    macs = self.macs_per_epoch * (last - first) / order.size
                    if self._call(data, chunk_settings, stop, macs) != 1:
                        outcome = int(self.control[layout.CONTROL_OUTCOME])
                        break
                    if not self.loader.prefetching:
                        pending = load_next()
                    # The chunk's loss is a weighted mean over its rows (a sum for sse):
                    # the epoch's is their weighted mean (sum).
                    if self.plan.partitioned:
                        chunk_weight = float(np.sum(work.batch_weights[: -(-(last - first) // self.plan.batch)]))
                    else:
                        chunk_weight = float(np.sum(data.sample_weight, dtype=np.float64))
                    total += float(work.epoch_losses[0]) * (chunk_weight if mean else 1.0)
                    weight += chunk_weight
            except BaseException:
                # A chunk that fails its checks as it is read (the file changed since), a
                # reader's I/O error: the epoch is undone, as divergence undoes it.
                if pending is not None:
                    try:
                        pending.result()  # never leave a read running into a buffer
                    except BaseException:
                        pass
                    pending = None
                for array, copy in zip(net.train_state(), saved):
                    array[...] = copy
                raise
            finally:
                if pending is not None:
                    pending.result()  # never leave a read running into a buffer
            if outcome != layout.OUTCOME_FINISHED:
                for array, copy in zip(net.train_state(), saved):
                    array[...] = copy  # back to the end of the last completed epoch
                return losses, outcome
            losses.append(total / weight if mean else total)
            net.epochs_trained += 1
        return losses, layout.OUTCOME_FINISHED


def _run(net, plan, history):
    callbacks = plan.callbacks
    session = plan.session
    chunk = chunk_epochs(callbacks, plan.validation is not None, plan.epochs, MAX_CHUNK_EPOCHS)
    if session is not None:  # every rank makes the same compiled calls: rank 0's chunks
        chunk = session.broadcast(chunk)
    timed = chunk is None  # only a progress bar: group epochs by time
    trainer = Trainer(net, plan, MAX_CHUNK_EPOCHS if timed else chunk)
    try:
        return _train(net, plan, history, trainer, 1 if timed else chunk, timed)
    finally:
        trainer.close()


def _train(net, plan, history, trainer, chunk, timed):
    callbacks, session = plan.callbacks, plan.session
    evaluation = layout.make_evaluation(net.meta, plan.validation[0].shape[0], net.dtype) if plan.validation else None
    info = FitInfo(net, plan.epochs, plan.X.shape[0], history, 1 if session is None else session.size)
    for callback in callbacks:
        callback.on_fit_begin(info)
    outcome, done, error = "finished", 0, None
    health = None if plan.tracking is None else HealthRecorder(plan.tracking)
    clock = Clock()
    with interrupt.StopRequest(trainer.control) as stop:
        try:
            while done < plan.epochs and not stop.requested:
                count = min(chunk, plan.epochs - done)
                losses, result = trainer.run(count, stop)
                if health is not None:
                    health.record(trainer.work.health[: len(losses)], (history, net.history), done)
                if result == layout.OUTCOME_INTERRUPTED:
                    stop.requested = True  # with several ranks, maybe another rank's Ctrl-C
                # net.history follows the fit epoch by epoch, so it matches the parameters
                # whenever fit stops, whatever stops it.
                history.loss.extend(losses)
                net.history.loss.extend(losses)
                done += len(losses)
                seconds = clock.restart()
                if timed:
                    chunk = max(1, min(MAX_CHUNK_EPOCHS, int(0.1 * max(len(losses), 1) / seconds)))
                if plan.validation is not None and losses:
                    _record_validation(net, (history, net.history), *plan.validation, evaluation)
                if result == layout.OUTCOME_DIVERGED:
                    outcome = "diverged"
                    error = _divergence_message(net, plan, done)
                    break
                if stop.requested and session is None:
                    break
                halt = False
                stop.defer = False  # user code: Ctrl-C raises as usual
                for callback in callbacks:
                    if stop.requested:
                        break
                    if not callback.timed and done % callback.every == 0:
                        try:
                            halt = (callback.on_epoch_end(done, history, net) is False) or halt
                        except StopTraining:
                            halt = True
                stop.defer = True
                for callback in callbacks:
                    callback.on_chunk_end(len(losses), seconds)
                if session is not None:
                    # Rank 0 decides whether to stop and the next chunk; a Ctrl-C on any rank stops all.
                    halt, chunk, stopping = session.decide(halt, chunk, stop.requested)
                    if stopping:
                        stop.requested = True
                        break
                if halt:
                    history.stopped_epoch = done
                    outcome = "stopped"
                    break
            if stop.requested:
                raise KeyboardInterrupt
        except KeyboardInterrupt:
            for callback in callbacks:
                callback.on_fit_end(info, "interrupted")
            raise
    if outcome == "diverged":
        if plan.on_divergence == "raise":
            for callback in callbacks:
                callback.on_fit_end(info, "failed")
            raise DivergenceError(error, epoch=done + 1, history=history)
        history.stopped_epoch = done
    for callback in callbacks:
        callback.on_fit_end(info, outcome)
    if session is not None and plan.partitioned and plan.validation is not None:
        # Every rank ends with rank 0's network and history. Only needed here: with validation
        # data of its own, a rank's early stopping may restore other parameters; otherwise every
        # value the ranks act on is shared, and they are bitwise alike already.
        session.share_network(net)
        history = session.broadcast(history)
    if outcome == "diverged":
        warnings.warn(error, DivergenceWarning, stacklevel=3)
    return history


def _divergence_message(net, plan, done):
    scale = streaming.abs_max(plan.X)
    cause = f"the learning rate (lr={plan.optimizer.lr:g}) is probably too large for this network and data; try one 10x smaller"
    if scale > 1e3:
        cause += f", and scale the inputs (|X| reaches {scale:.3g})"
    return (
        f"training diverged in epoch {done + 1} of this fit (epoch {net.epochs_trained + 1} overall): "
        f"a loss or parameter became NaN or infinite. The network was put back to the end of the last "
        f"finite epoch ({net.epochs_trained} trained; history keeps {done} epochs of this fit). Likely cause: {cause}."
    )
