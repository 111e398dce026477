"""The ``Network`` class: a dense MLP whose parameters live in one flat buffer.

Both backends run the same algorithm through functions with the same names and signatures:
``backend="numba"`` calls :mod:`fastgd.kernels` (compiled, whole epochs per call) and
``backend="numpy"`` calls :mod:`fastgd.reference`. Everything else here is shared.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import time
import warnings
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from . import _interrupt
from . import _validation as check
from . import kernels, reference
from .kernels import codes
from ._config import _check_threads, blas_threads_for, compiled_section, thread_limits
from .optimizers import SGD, Optimizer, make_optimizer
from .schedules import make_schedule
from .registry import ACTIVATIONS, BACKENDS, DTYPES, INITIALIZERS, LOSSES, lookup

ENGINES = {"numba": kernels, "numpy": reference}

# predict() walks large inputs in blocks of this many rows, so its work buffers stay small.
_PREDICT_BLOCK_ROWS = 8192
# fit() trains at most this many epochs per compiled call (bounding the loss buffer however
# many epochs are asked for); a Python round trip per 65 536 epochs costs nothing.
_MAX_CHUNK_EPOCHS = 1 << 16
_ON_DIVERGENCE = ("raise", "warn")


class StopTraining(Exception):
    """Raise from a callback to end ``fit`` cleanly after the current epoch (like returning False)."""


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


class History:
    """Per-epoch record of one ``fit`` call.

    Attributes
    ----------
    loss : list of float
        Training loss of each epoch: the weighted mean of the batch losses over the epoch (for
        ``sse``, their sum), each taken before its batch's update. For full-batch training this
        is exactly the loss at the start of the epoch.
    val_loss, val_accuracy : list of float
        With validation data: the loss on it after each epoch, and for classifiers
        (crossentropy, binary_crossentropy) the accuracy (share of rows whose argmax matches, or
        of outputs whose rounding matches for binary_crossentropy).
    best_epoch : int or None
        With early stopping: the 1-based epoch whose monitored loss was best.
    stopped_epoch : int or None
        The 1-based epoch after which training stopped early (early stopping or a callback).
    """

    FIELDS = ("loss", "val_loss", "val_accuracy")

    def __init__(self):
        self.loss: list[float] = []
        self.val_loss: list[float] = []
        self.val_accuracy: list[float] = []
        self.best_epoch: int | None = None
        self.stopped_epoch: int | None = None

    @property
    def epochs(self) -> int:
        return len(self.loss)

    def extend(self, other: "History") -> None:
        """Append ``other``'s epochs to these."""
        for field in self.FIELDS:
            getattr(self, field).extend(getattr(other, field))

    def __repr__(self) -> str:
        last = f", last loss {self.loss[-1]:.6g}" if self.loss else ""
        return f"History({self.epochs} epochs{last})"


class Gradients(NamedTuple):
    """Per-parameter gradients, laid out like ``Network.weights`` and ``Network.biases``."""

    weights: list
    biases: list


class LayerArrays(Sequence):
    """The per-layer weight (or bias) arrays: views into the network's flat parameter buffer.

    ``net.weights[0][...] = W`` and ``net.weights[0] = W`` both write into the network; the second
    checks the shape and values first.
    """

    def __init__(self, views, name):
        self._views = list(views)
        self._name = name

    def __getitem__(self, index):
        return self._views[index]

    def __setitem__(self, index, value):
        if not isinstance(index, numbers.Integral):
            raise TypeError(f"{self._name} index must be an int")
        view = self._views[index]
        array = check.as_array(value, f"{self._name}[{index}]")
        if array.shape != view.shape:
            raise ValueError(f"{self._name}[{index}] must have shape {view.shape}, got {array.shape}")
        array = array.astype(view.dtype)
        if not np.isfinite(array).all():
            raise ValueError(f"{self._name}[{index}] contains NaN or infinity")
        view[...] = array

    def __len__(self):
        return len(self._views)

    def __repr__(self):
        return f"{self._name}: " + repr(self._views)


def _resolve_rng(random_state):
    if random_state is None:
        return np.random.default_rng()
    if isinstance(random_state, (np.random.Generator, np.random.RandomState)):
        return random_state
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, (bool, np.bool_)):
        if random_state < 0:
            raise ValueError(f"random_state must be >= 0, got {random_state}")
        return np.random.default_rng(int(random_state))
    raise TypeError(
        "random_state must be None, an int, a numpy.random.Generator or a numpy.random.RandomState, "
        f"got {type(random_state).__name__}"
    )


def _draw_seed(rng) -> int:
    if isinstance(rng, np.random.RandomState):
        return int(rng.randint(0, 2**63 - 1, dtype=np.int64))
    return int(rng.integers(0, 2**63 - 1))


class Network:
    """A dense multi-layer perceptron trained by gradient descent.

    Parameters
    ----------
    layer_sizes : sequence of int
        Units per layer, input first: ``[2, 4, 1]`` is 2 inputs, 4 hidden units, 1 output.
    activation : str, default "sigmoid"
        Hidden-layer activation: sigmoid, tanh, relu, leaky_relu (slope 0.01) or identity.
    output_activation : str, optional
        Output activation (the hidden ones or softmax). Default: sigmoid for
        binary_crossentropy, softmax for crossentropy, otherwise ``activation``.
    loss : str, default "mse"
        sse, mse, binary_crossentropy (sigmoid outputs) or crossentropy (softmax outputs).
    init : str, default "xavier_uniform"
        Weight initializer: uniform (U[−1, 1)), xavier_uniform, xavier_normal, he_uniform,
        he_normal. Biases start at zero. Weight matrices are drawn layer by layer, input first.
    dtype : {"float32", "float64"}, default "float64"
        Precision of parameters and of all arithmetic in training.
    random_state : None, int, numpy.random.Generator or numpy.random.RandomState
        Drives initialisation and shuffling. A ``RandomState`` draws exactly as NumPy's legacy
        global generator does (``np.random.seed(42)`` ≡ ``RandomState(42)``).
    backend : {"numba", "numpy"}, default "numba"
        Compiled kernels or the NumPy reference implementation.
    l1, l2 : float, default 0
        Penalties on the weights (not the biases), part of the loss: ``l1·Σ|W| + (l2/2)·ΣW²``,
        added to every batch's loss and gradient, and to ``loss()`` and ``gradients()``. This is
        separate from the optimizers' ``weight_decay``.
    n_threads : int, optional
        Threads for training and prediction, set for the duration of each call and restored
        after. The Numba backend uses one pool, Numba's, this wide, and holds BLAS to one thread
        (its kernels hand fixed blocks of large matrix products to BLAS from each thread); the
        NumPy backend gives BLAS this many threads. None keeps the current settings (Numba's
        default is every core, ``NUMBA_NUM_THREADS``). Results of the Numba backend are bitwise
        the same for any thread count.

    Attributes
    ----------
    weights : sequence of ndarray, shapes (n_in, n_out)
    biases : sequence of ndarray, shapes (n_out,)
        Writable views into the flat parameter buffer ``flat_parameters``.
    optimizer : Optimizer or None
        The optimizer whose state the network holds (set by ``fit``).
    """

    def __init__(
        self,
        layer_sizes,
        activation="sigmoid",
        output_activation=None,
        loss="mse",
        init="xavier_uniform",
        dtype="float64",
        random_state=None,
        backend="numba",
        n_threads=None,
        l1=0.0,
        l2=0.0,
    ):
        sizes = self._check_layer_sizes(layer_sizes)
        loss_info = lookup(LOSSES, loss, "loss")
        hidden = lookup(ACTIVATIONS, activation, "activation")
        if hidden.output_only:
            raise ValueError(f"activation {activation!r} can only be the output_activation")
        if output_activation is None:
            output_activation = loss_info.default_output or activation
        output = lookup(ACTIVATIONS, output_activation, "output_activation")
        if loss_info.required_output and output.name != loss_info.required_output:
            raise ValueError(
                f"loss {loss!r} needs output_activation={loss_info.required_output!r}, got {output.name!r}"
            )
        if output.name == "softmax" and sizes[-1] < 2:
            raise ValueError("output_activation 'softmax' needs at least 2 outputs")
        initializer = lookup(INITIALIZERS, init, "init")
        if not isinstance(dtype, str):
            dtype = np.dtype(dtype).name if isinstance(dtype, (type, np.dtype)) else dtype
        self.dtype = lookup(DTYPES, dtype, "dtype")
        _check_memory(sizes, self.dtype)
        if not isinstance(backend, str) or backend not in BACKENDS:
            raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
        rng = _resolve_rng(random_state)
        self.n_threads = None if n_threads is None else _check_threads(n_threads)
        self.l1 = check.as_real(l1, "l1", minimum=0.0)
        self.l2 = check.as_real(l2, "l2", minimum=0.0)

        self.layer_sizes = sizes
        self.activation = hidden.name
        self.output_activation = output.name
        self.loss_name = loss_info.name
        self.init = init
        self.backend = backend
        self._loss = loss_info
        self._engine = ENGINES[backend]

        n_layers = len(sizes) - 1
        self._meta = np.zeros((n_layers, codes.META_WIDTH), dtype=np.int64)
        offset = 0
        for layer, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            act = output if layer == n_layers - 1 else hidden
            self._meta[layer] = (n_in, n_out, offset, offset + n_in * n_out, act.code)
            offset += n_in * n_out + n_out
        self._params = np.zeros(offset, dtype=self.dtype)
        self._grads = np.zeros(offset, dtype=self.dtype)
        self.weights = LayerArrays(self._layer_views(self._params, weights=True), "weights")
        self.biases = LayerArrays(self._layer_views(self._params, weights=False), "biases")
        for W in self.weights:
            W[...] = initializer(rng, *W.shape)
        self._initial_params = self._params.copy()  # for fit(warm_start=False)
        self._shuffle_seed = _draw_seed(rng)
        self.history = History()  # every epoch this network has trained, across fits

        self.optimizer: Optimizer | None = None
        self._opt_state = np.zeros((1, offset), dtype=self.dtype)
        self._step = np.zeros(1, dtype=np.int64)
        self.epochs_trained = 0

    # ------------------------------------------------------------------ layout

    @staticmethod
    def _check_layer_sizes(layer_sizes):
        if isinstance(layer_sizes, (str, bytes)) or not isinstance(layer_sizes, (Sequence, np.ndarray)):
            raise TypeError(f"layer_sizes must be a sequence of ints like [2, 4, 1], got {type(layer_sizes).__name__}")
        sizes = tuple(layer_sizes)
        if len(sizes) < 2:
            raise ValueError(f"layer_sizes needs at least an input and an output size, got {list(sizes)}")
        for size in sizes:
            if isinstance(size, (bool, np.bool_)) or not isinstance(size, numbers.Integral):
                raise TypeError(f"layer_sizes must hold ints, got {size!r}")
            if size < 1:
                raise ValueError(f"layer_sizes must be >= 1, got {list(sizes)}")
        sizes = tuple(int(s) for s in sizes)
        n_params = _count_parameters(sizes)
        if n_params > 2**31:
            raise ValueError(f"layer_sizes {list(sizes)} need {n_params} parameters; at most 2**31 are supported")
        return sizes

    def _layer_views(self, flat, weights):
        views = []
        for n_in, n_out, w_offset, b_offset, _ in self._meta:
            if weights:
                views.append(flat[w_offset : w_offset + n_in * n_out].reshape(n_in, n_out))
            else:
                views.append(flat[b_offset : b_offset + n_out])
        return views

    @property
    def n_params(self) -> int:
        """Total number of weights and biases."""
        return self._params.size

    @property
    def flat_parameters(self) -> np.ndarray:
        """All parameters as one writable 1-D view (layer by layer: weights row-major, then bias)."""
        return self._params

    @property
    def optimizer_state(self) -> dict:
        """The optimizer's state buffers by name, each a flat view shaped like ``flat_parameters``."""
        if self.optimizer is None:
            return {}
        return {name: self._opt_state[i] for i, name in enumerate(self.optimizer.state_names)}

    @property
    def optimizer_steps(self) -> int:
        """Optimizer steps taken so far with the current optimizer."""
        return int(self._step[0])

    def __getstate__(self):
        # Pickle the flat buffers only: the engine is a module, and the per-layer views would
        # be pickled as separate arrays, no longer views into the parameters.
        state = self.__dict__.copy()
        for key in ("_engine", "weights", "biases"):
            state.pop(key)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._engine = ENGINES[self.backend]
        self.weights = LayerArrays(self._layer_views(self._params, weights=True), "weights")
        self.biases = LayerArrays(self._layer_views(self._params, weights=False), "biases")

    def copy(self, dtype=None, backend=None) -> "Network":
        """An independent copy (parameters, optimizer and its state), optionally in another dtype
        or backend."""
        clone = object.__new__(Network)
        clone.__dict__.update(self.__dict__)
        clone.dtype = self.dtype if dtype is None else lookup(DTYPES, dtype if isinstance(dtype, str) else np.dtype(dtype).name, "dtype")
        if backend is not None:
            if backend not in BACKENDS:
                raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
            clone.backend = backend
            clone._engine = ENGINES[backend]
        clone._meta = self._meta.copy()
        clone._params = self._params.astype(clone.dtype)
        clone._grads = np.zeros_like(clone._params)
        clone._opt_state = self._opt_state.astype(clone.dtype)
        clone._initial_params = self._initial_params.astype(clone.dtype)
        clone.history = History()
        clone.history.extend(self.history)
        clone._step = self._step.copy()
        clone.weights = LayerArrays(clone._layer_views(clone._params, weights=True), "weights")
        clone.biases = LayerArrays(clone._layer_views(clone._params, weights=False), "biases")
        return clone

    def __repr__(self) -> str:
        return (
            f"Network({list(self.layer_sizes)}, activation={self.activation!r}, l1={self.l1}, l2={self.l2}, "
            f"output_activation={self.output_activation!r}, loss={self.loss_name!r}, "
            f"dtype={self.dtype.name!r}, backend={self.backend!r})"
        )

    # ------------------------------------------------------------------ inputs

    def _inputs(self, X, y=None, sample_weight=None, names=("X", "y")):
        X = check.as_matrix(X, names[0], self.dtype, n_cols=self.layer_sizes[0])
        if y is None:
            return X
        Y = check.as_targets(
            y,
            names[1],
            self.dtype,
            self.layer_sizes[-1],
            X.shape[0],
            labels=self._loss.code == codes.CROSSENTROPY,
            unit_interval=self._loss.code == codes.BINARY_CROSSENTROPY,
        )
        return X, Y, check.as_sample_weight(sample_weight, self.dtype, X.shape[0])

    def _row_scale(self, weight):
        return weight * self.dtype.type(1.0 / float(weight.sum(dtype=np.float64))) if self._loss.mean else weight.copy()

    def _threads(self):
        """Thread settings for one public call (see ``fastgd._config.thread_limits``)."""
        return thread_limits(self.n_threads, compiled=self.backend == "numba")

    def _compiled(self):
        """The lock and BLAS setting around one compiled call (inside ``_threads``)."""
        return compiled_section(blas_threads_for(self.n_threads, self.backend == "numba"))

    @contextlib.contextmanager
    def _engine_call(self):
        with self._threads(), self._compiled():
            yield

    def _outputs(self, acts, rows):
        """The network's outputs for ``rows`` rows: the last layer's block of the work buffer."""
        widths = self._meta[:, codes.META_N_OUT]
        capacity = acts.size // int(widths.sum())
        start = capacity * int(widths[:-1].sum())
        n_out = self.layer_sizes[-1]
        return acts[start : start + rows * n_out].reshape(rows, n_out)

    def _work_buffers(self, rows):
        width = int(self._meta[:, codes.META_N_OUT].sum())
        acts = np.empty(rows * width, dtype=self.dtype)
        return acts, np.empty_like(acts), np.empty(rows * self.layer_sizes[-1], dtype=self.dtype)

    # ------------------------------------------------------------------ evaluation

    def predict(self, X) -> np.ndarray:
        """Network outputs for ``X`` (probabilities for sigmoid/softmax outputs).

        Parameters
        ----------
        X : array-like, shape (n, n_in)

        Returns
        -------
        ndarray, shape (n, n_out), the network's dtype
        """
        X = self._inputs(X)
        n = X.shape[0]
        block = min(n, _PREDICT_BLOCK_ROWS)
        acts, _, z_out = self._work_buffers(block)
        out = np.empty((n, self.layer_sizes[-1]), dtype=self.dtype)
        with self._engine_call():
            for start in range(0, n, block):
                rows = min(block, n - start)
                self._engine.forward(self._params, self._meta, X[start : start + rows], acts, z_out)
                out[start : start + rows] = self._outputs(acts, rows)
        return out

    def loss(self, X, y, sample_weight=None) -> float:
        """The network's loss on ``(X, y)`` as defined for its ``loss`` (see the README)."""
        X, Y, weight = self._inputs(X, y, sample_weight)
        acts, _, z_out = self._work_buffers(X.shape[0])
        with self._engine_call():
            value = self._engine.evaluate_loss(self._params, self._meta, X, Y, self._row_scale(weight), acts, z_out, self._loss.code)
            value += self._engine.weight_penalty(self._params, np.zeros_like(self._params), self._meta, self.l1, self.l2)
        return float(value)

    def gradients(self, X, y, sample_weight=None) -> Gradients:
        """Gradients of ``loss(X, y)`` with respect to every weight and bias, by backprop.

        Returns
        -------
        Gradients
            ``(weights, biases)``: lists of new arrays shaped like ``net.weights`` / ``net.biases``.
        """
        X, Y, weight = self._inputs(X, y, sample_weight)
        flat = self._flat_gradients(X, Y, weight)
        return Gradients(
            [g.copy() for g in self._layer_views(flat, weights=True)],
            [g.copy() for g in self._layer_views(flat, weights=False)],
        )

    def _flat_gradients(self, X, Y, weight):
        acts, deltas, z_out = self._work_buffers(X.shape[0])
        with self._engine_call():
            self._engine.forward_backward(
                self._params, self._grads, self._meta, X, Y, self._row_scale(weight), acts, deltas, z_out, self._loss.code
            )
            self._engine.weight_penalty(self._params, self._grads, self._meta, self.l1, self.l2)
        return self._grads.copy()

    # ------------------------------------------------------------------ training

    def _resolve_optimizer(self, optimizer):
        if optimizer is None:
            return self.optimizer if self.optimizer is not None else SGD(lr=0.01)
        return make_optimizer(optimizer)

    def fit(
        self,
        X,
        y,
        optimizer=None,
        epochs=1,
        batch_size=None,
        shuffle=True,
        sample_weight=None,
        validation_data=None,
        validation_split=None,
        early_stopping=False,
        patience=10,
        min_delta=0.0,
        restore_best=True,
        callbacks=None,
        verbose=0,
        warm_start=True,
        lr_schedule=None,
        checkpoint=None,
        checkpoint_every=1,
        on_divergence="raise",
    ) -> History:
        """Train by gradient descent.

        Parameters
        ----------
        X : array-like, shape (n, n_in)
            Inputs. Integer and bool arrays are converted to the network's dtype.
        y : array-like, shape (n, n_out) or (n,)
            Targets; for crossentropy, integer class labels (n,) or one-hot rows (n, n_out).
        optimizer : Optimizer, str or None
            An optimizer instance or name. Passing the instance already in ``net.optimizer`` (or
            None) continues with its state; any other starts fresh state. Default on the first
            fit: ``SGD(lr=0.01)``.
        epochs : int, default 1
            Passes over the data (0 trains nothing).
        batch_size : int or None
            None: full-batch gradient descent; 1: stochastic; B: mini-batches of B rows (the last
            one holds the remainder). Sizes above n are taken as n.
        shuffle : bool, default True
            Visit rows in a fresh random order each epoch (mini-batch only: a full batch is the
            same sum in any order). With False, batches are consecutive rows in order.
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
            loss) has not improved by more than ``min_delta`` for ``patience`` epochs.
        patience : int, default 10
        min_delta : float, default 0
        restore_best : bool, default True
            With early stopping, put back the parameters of the best epoch at the end (the
            optimizer state stays that of the last epoch).
        callbacks : callable or list of callables, optional
            Each is called as ``callback(epoch, history, network)`` after every ``every``-th
            epoch (``callback.every``, default 1), with ``epoch`` counted from 1 in this fit.
            Returning ``False`` or raising :class:`fastgd.StopTraining` ends training after that
            epoch; the network keeps the state it has then.
        verbose : {0, 1}, default 0
            1 shows a progress bar (tqdm) with the epoch, losses and samples/s.
        lr_schedule : fastgd.schedules.Schedule, optional
            Scales the optimizer's lr per step (``StepDecay``, ``Exponential``,
            ``InverseScaling``, ``Cosine``), counted in the optimizer's steps, inside the
            compiled loop. Default: constant.
        warm_start : bool, default True
            True: continue from the current parameters (and optimizer state, see
            ``optimizer``). False: start over from the parameters the network was initialised
            with, fresh optimizer state, the epoch count and ``net.history`` cleared.
        checkpoint : str or path-like, optional
            Save the network (:meth:`save` format) to this file every ``checkpoint_every``
            epochs, and when training ends, is interrupted or diverges. Each write is atomic (a
            temporary file in the same folder, fsync, rename), so the file is always a complete
            checkpoint. ``fastgd.load(path).fit(X, y, epochs=remaining)`` resumes where it
            stopped, bitwise as if it had never stopped.
        checkpoint_every : int, default 1
        on_divergence : {"raise", "warn"}, default "raise"
            When a batch loss or a parameter becomes NaN or infinite, the network is put back
            to the end of the last finite epoch (``net.history`` keeps the finite epochs) and
            training stops. "raise" then raises :class:`fastgd.DivergenceError`; "warn" issues a
            :class:`fastgd.DivergenceWarning` and returns (``history.stopped_epoch`` set).

        Returns
        -------
        History

        Raises
        ------
        KeyboardInterrupt
            On Ctrl-C (SIGINT), re-raised once the network is back at the end of the last
            completed epoch, with ``epochs_trained``, the optimizer state and step count and
            ``net.history`` all matching it (and the checkpoint written, if any). The compiled
            loop sees the request before its next batch.

        Notes
        -----
        The compiled loop runs whole epochs per call. With no per-epoch work (no validation,
        early stopping, callbacks or progress bar) a fit is one call; otherwise one call per
        epoch (per ``every`` epochs for callbacks alone), and the progress bar groups epochs so
        that it updates about ten times a second.
        """
        X, Y, weight = self._inputs(X, y, sample_weight)
        epochs = check.as_int(epochs, "epochs", 0)
        batch_size = check.as_int(batch_size, "batch_size", 1, allow_none=True)
        shuffle = check.as_bool(shuffle, "shuffle")
        early_stopping = check.as_bool(early_stopping, "early_stopping")
        patience = check.as_int(patience, "patience", 0)
        min_delta = check.as_real(min_delta, "min_delta", minimum=0.0)
        restore_best = check.as_bool(restore_best, "restore_best")
        warm_start = check.as_bool(warm_start, "warm_start")
        schedule = make_schedule(lr_schedule)
        callbacks = _check_callbacks(callbacks)
        if verbose not in (0, 1) or isinstance(verbose, float):
            raise ValueError(f"verbose must be 0 or 1, got {verbose!r}")
        checkpoint = _check_checkpoint(checkpoint)
        checkpoint_every = check.as_int(checkpoint_every, "checkpoint_every", 1)
        if on_divergence not in _ON_DIVERGENCE:
            raise ValueError(f"on_divergence must be one of {list(_ON_DIVERGENCE)}, got {on_divergence!r}")
        X, Y, weight, validation = self._validation_inputs(X, Y, weight, validation_data, validation_split)
        optimizer = self._resolve_optimizer(optimizer)
        n = X.shape[0]
        batch = n if batch_size is None else min(batch_size, n)

        # Every argument is checked: from here on the network changes.
        if not warm_start:
            self._params[...] = self._initial_params
            self.epochs_trained = 0
            self.history = History()
        if optimizer is not self.optimizer or not warm_start:
            self._opt_state = optimizer.initial_state(self.n_params, self.dtype)
            self._step[0] = 0
            self.optimizer = optimizer
        history = History()
        if epochs == 0:
            return history
        chunk = 1 if (validation is not None or early_stopping or verbose) else epochs
        if callbacks and chunk > 1:
            chunk = math.gcd(*[every for _, every in callbacks])
        if checkpoint is not None:
            chunk = math.gcd(chunk, checkpoint_every)
        chunk = min(chunk, _MAX_CHUNK_EPOCHS, epochs)
        adaptive_chunk = verbose and validation is None and not early_stopping and not callbacks and checkpoint is None
        train = self._trainer(X, Y, weight, optimizer, batch, shuffle and batch < n, chunk if not adaptive_chunk else _MAX_CHUNK_EPOCHS, schedule)
        monitor = history.val_loss if validation is not None else history.loss
        best = (np.inf, None)
        waited = 0
        saved_at = None

        def save_checkpoint():
            nonlocal saved_at
            if checkpoint is not None and saved_at != self.epochs_trained:
                self.save(checkpoint)
                saved_at = self.epochs_trained

        done = 0
        # Threads are set once for the fit; each compiled call takes the lock (so other Python
        # threads can take turns between chunks) and re-applies BLAS's process-wide setting.
        with self._threads(), _progress(verbose, epochs, n) as bar, _interrupt.StopRequest(train.control) as stop:
            try:
                while done < epochs and not stop.requested:
                    count = min(chunk, epochs - done)
                    started = time.perf_counter()
                    losses, outcome = train(count, stop)
                    # net.history follows the fit epoch by epoch, so it matches the parameters
                    # whenever fit stops, whatever stops it.
                    history.loss.extend(losses)
                    self.history.loss.extend(losses)
                    done += len(losses)
                    if adaptive_chunk:
                        # Group epochs so the bar updates about ten times a second.
                        elapsed = max(time.perf_counter() - started, 1e-9)
                        chunk = max(1, min(_MAX_CHUNK_EPOCHS, int(0.1 * max(len(losses), 1) / elapsed)))
                    if validation is not None and losses:
                        self._record_validation((history, self.history), *validation)
                    if outcome == codes.OUTCOME_DIVERGED:
                        self._diverged(history, done, optimizer, X, on_divergence, save_checkpoint)
                        break
                    if stop.requested:
                        break
                    halt = False
                    if early_stopping:
                        if monitor[-1] < best[0] - min_delta:
                            best = (monitor[-1], self._params.copy())
                            history.best_epoch = done
                            waited = 0
                        else:
                            waited += 1
                            halt = waited >= patience
                    if checkpoint is not None and done % checkpoint_every == 0:
                        save_checkpoint()
                    stop.defer = False  # user code: Ctrl-C raises as usual
                    for callback, every in callbacks:
                        if done % every == 0:
                            try:
                                halt = (callback(done, history, self) is False) or halt
                            except StopTraining:
                                halt = True
                    stop.defer = True
                    bar.update(len(losses))
                    if verbose:
                        bar.set_postfix(_postfix(history, len(losses) * n / max(time.perf_counter() - started, 1e-9)), refresh=False)
                    if halt:
                        history.stopped_epoch = done
                        break
                if stop.requested:
                    raise KeyboardInterrupt
            except KeyboardInterrupt:
                save_checkpoint()
                raise
        if early_stopping and restore_best and best[1] is not None:
            self._params[...] = best[1]
        save_checkpoint()
        return history

    def _diverged(self, history, done, optimizer, X, on_divergence, save_checkpoint):
        """Report that epoch ``done + 1`` of this fit went non-finite (the kernel has already put
        the network back to the end of epoch ``done``)."""
        scale = float(np.abs(X).max())
        cause = f"the learning rate (lr={optimizer.lr:g}) is probably too large for this network and data; try one 10x smaller"
        if scale > 1e3:
            cause += f", and scale the inputs (|X| reaches {scale:.3g})"
        message = (
            f"training diverged in epoch {done + 1} of this fit (epoch {self.epochs_trained + 1} overall): "
            f"a loss or parameter became NaN or infinite. The network was put back to the end of the last "
            f"finite epoch ({self.epochs_trained} trained; history keeps {done} epochs of this fit). Likely cause: {cause}."
        )
        save_checkpoint()
        if on_divergence == "raise":
            raise DivergenceError(message, epoch=done + 1, history=history)
        warnings.warn(message, DivergenceWarning, stacklevel=3)
        history.stopped_epoch = done

    def partial_fit(self, X, y, optimizer=None, batch_size=None, shuffle=True, sample_weight=None) -> History:
        """One epoch of training, continuing from the current parameters and optimizer state."""
        return self.fit(X, y, optimizer=optimizer, epochs=1, batch_size=batch_size, shuffle=shuffle, sample_weight=sample_weight)

    def save(self, path) -> None:
        """Write the network to a ``.npz`` file (see :func:`fastgd.load`)."""
        from .persistence import save

        save(self, path)

    def _validation_inputs(self, X, Y, weight, validation_data, validation_split):
        """Split or check the validation data; returns the training arrays and (X_val, Y_val, buffers)."""
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
            X_val, Y_val, _ = self._inputs(*validation_data, names=("validation_data X", "validation_data y"))
        else:
            return X, Y, weight, None
        acts, _, z_out = self._work_buffers(X_val.shape[0])
        scale = self._row_scale(np.ones(X_val.shape[0], dtype=self.dtype))
        return X, Y, weight, (X_val, Y_val, scale, acts, z_out)

    def _record_validation(self, histories, X_val, Y_val, scale, acts, z_out):
        with self._compiled():
            value = self._engine.evaluate_loss(self._params, self._meta, X_val, Y_val, scale, acts, z_out, self._loss.code)
        records = {"val_loss": float(value)}
        out = self._outputs(acts, X_val.shape[0])
        if self._loss.code == codes.CROSSENTROPY:
            records["val_accuracy"] = float(np.mean(out.argmax(axis=1) == Y_val.argmax(axis=1)))
        elif self._loss.code == codes.BINARY_CROSSENTROPY:
            records["val_accuracy"] = float(np.mean((out >= 0.5) == (Y_val >= 0.5)))
        for history in histories:
            for field, value in records.items():
                getattr(history, field).append(value)

    def _trainer(self, X, Y, weight, optimizer, batch, shuffle, capacity, schedule):
        """A function ``train(count, stop)`` that trains up to ``count <= capacity`` more epochs
        in one compiled call; it returns the completed epochs' losses and the call's outcome
        (``codes.OUTCOME_*``). ``train.control`` is the kernel's control array."""
        n, n_in = X.shape
        acts, deltas, z_out = self._work_buffers(batch)
        losses = np.empty(capacity, dtype=np.float64)
        buffers = (
            np.empty(n, dtype=np.int64),
            np.empty(n, dtype=np.uint64),
            np.empty(batch * n_in, dtype=self.dtype),
            np.empty(batch * self.layer_sizes[-1], dtype=self.dtype),
            np.empty(batch, dtype=self.dtype),
            acts,
            deltas,
            z_out,
            np.empty_like(self._params),
            np.empty_like(self._opt_state),
        )
        control = np.zeros(codes.CONTROL_WIDTH, dtype=np.int64)
        hyper = optimizer.hyper_vector()
        schedule_parameters = schedule.parameters()
        macs_per_epoch = 3.0 * n * float(np.sum(self._meta[:, codes.META_N_IN] * self._meta[:, codes.META_N_OUT]))

        def run(out):
            return self._engine.train_epochs(
                self._params, self._grads, self._opt_state, X, Y, weight, *buffers, out, self._step, control,
                self._meta, self._loss.code, optimizer.code, float(optimizer.lr), hyper, int(batch), bool(shuffle),
                self._shuffle_seed, self.epochs_trained, schedule.code, schedule_parameters, self.l1, self.l2,
            )  # fmt: skip

        def train(count, stop):
            out = losses[:count]
            with self._compiled():
                completed = int(_interrupt.call(lambda: run(out), stop, count * macs_per_epoch))
            self.epochs_trained += completed
            return out[:completed].tolist(), int(control[codes.CONTROL_OUTCOME])

        train.control = control
        return train


def _count_parameters(sizes) -> int:
    return sum(n_in * n_out + n_out for n_in, n_out in zip(sizes[:-1], sizes[1:]))


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):  # not POSIX
        return None


def _check_memory(sizes, dtype) -> None:
    """Refuse a network whose parameter, gradient and initial-parameter buffers alone would not
    fit in this machine's memory: allocating them would end in the kernel's OOM killer, not an
    exception."""
    n_params = _count_parameters(sizes)
    needed = 3 * n_params * np.dtype(dtype).itemsize
    available = _physical_memory()
    if available is not None and needed > available:
        raise ValueError(
            f"layer_sizes {list(sizes)} need {n_params} parameters: {needed / 2**30:.1f} GiB for the parameters, "
            f"gradients and initial parameters alone, more than this machine's {available / 2**30:.1f} GiB of memory"
        )


def _check_checkpoint(checkpoint):
    if checkpoint is None:
        return None
    if not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(f"checkpoint must be a file path (str or os.PathLike), got {type(checkpoint).__name__}")
    path = os.fspath(checkpoint)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"checkpoint: folder {folder!r} does not exist")
    if os.path.isdir(path):
        raise ValueError(f"checkpoint must be a file path, got the folder {path!r}")
    return path


def _check_callbacks(callbacks):
    if callbacks is None:
        return []
    if callable(callbacks):
        callbacks = [callbacks]
    if not isinstance(callbacks, (list, tuple)):
        raise TypeError("callbacks must be a callable or a list of callables")
    checked = []
    for callback in callbacks:
        if not callable(callback):
            raise TypeError(f"callbacks must be callables, got {type(callback).__name__}")
        checked.append((callback, check.as_int(getattr(callback, "every", 1), "callback.every", 1)))
    return checked


class _NoBar:
    def update(self, count):
        pass

    def set_postfix(self, *args, **kwargs):
        pass


@contextlib.contextmanager
def _progress(verbose, epochs, rows):
    if not verbose:
        yield _NoBar()
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=epochs, unit="epoch", desc="fit", leave=True)
    try:
        yield bar
    finally:
        bar.close()


def _postfix(history, samples_per_second):
    postfix = {"loss": f"{history.loss[-1]:.4g}"}
    if history.val_loss:
        postfix["val_loss"] = f"{history.val_loss[-1]:.4g}"
    if history.val_accuracy:
        postfix["val_acc"] = f"{history.val_accuracy[-1]:.3f}"
    postfix["samples/s"] = f"{samples_per_second:.3g}"
    return postfix
