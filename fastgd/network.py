"""The ``Network`` class: a dense MLP whose parameters live in one flat buffer.

A network holds its parameters and their layout (``kernels.layout``), evaluates itself
(``predict``, ``loss``, ``gradients``) and exposes its whole state as a dict (``state_dict`` /
``load_state_dict``), which saving, loading and gradient checking use. Training is
``fastgd.training.fit``, which ``Network.fit`` calls.

Both backends run the same algorithm through functions with the same names and signatures:
``backend="numba"`` calls :mod:`fastgd.kernels` (compiled) and ``backend="numpy"`` calls
:mod:`fastgd.reference`.
"""

from __future__ import annotations

import contextlib
import numbers
import os
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from . import _validation as check
from . import kernels, memory, reference
from ._threads import blas_limited, blas_on_one_thread, check_threads, team_size
from .history import History
from .kernels import layout
from .optimizers import OPTIMIZERS, Optimizer
from .registry import ACTIVATIONS, BACKENDS, DTYPES, INITIALIZERS, LOSSES, lookup

ENGINES = {"numba": kernels, "numpy": reference}

# predict() walks large inputs in blocks of this many rows, so its work buffers stay small.
_PREDICT_BLOCK_ROWS = 8192


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


def check_layer_sizes(layer_sizes):
    """``layer_sizes`` as a tuple of ints >= 1 (at least two), or a ValueError/TypeError."""
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
    n_params = count_parameters(sizes)
    if n_params > 2**31:
        raise ValueError(f"layer_sizes {list(sizes)} need {n_params} parameters; at most 2**31 are supported")
    return sizes


def check_loss_options(options, loss) -> dict:
    """``loss_options`` checked against ``loss``'s declared parameter (``LossSpec.parameter``):
    a dict of at most that one name, its value a positive real; ``{}`` for None."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise TypeError(f"loss_options must be a dict or None, got {type(options).__name__}")
    allowed = () if loss.parameter is None else (loss.parameter[0],)
    unknown = [key for key in options if key not in allowed]
    if unknown:
        takes = f"takes only {list(allowed)}" if allowed else "takes none"
        raise ValueError(f"loss_options has {unknown}, but loss {loss.name!r} {takes}")
    checked = {}
    for key, value in options.items():
        checked[key] = check.as_real(value, f"loss_options[{key!r}]", minimum=0.0)
        if checked[key] == 0.0:
            raise ValueError(f"loss_options[{key!r}] must be > 0, got 0.0")
    return checked


def check_dropout(dropout, n_hidden):
    """``dropout`` as a tuple of one rate per hidden layer, each a real in [0, 1): a single
    number is every hidden layer's; a ValueError/TypeError naming ``dropout`` otherwise."""
    if isinstance(dropout, (str, bytes)):
        raise TypeError(f"dropout must be a number in [0, 1) or a sequence of one per hidden layer, got {dropout!r}")
    if isinstance(dropout, (Sequence, np.ndarray)):
        rates = list(dropout)
        if len(rates) != n_hidden:
            raise ValueError(f"dropout must give one rate per hidden layer ({n_hidden}), got {len(rates)}: {rates}")
    else:
        rates = [dropout] * n_hidden
    checked = []
    for rate in rates:
        if isinstance(rate, (bool, np.bool_)) or not isinstance(rate, numbers.Real):
            raise TypeError(f"dropout rates must be numbers, got {rate!r}")
        rate = float(rate)
        if not 0.0 <= rate < 1.0:  # (NaN fails too)
            raise ValueError(f"dropout rates must be in [0, 1), got {rate!r}")
        checked.append(rate)
    if n_hidden == 0 and not isinstance(dropout, (Sequence, np.ndarray)) and float(dropout) != 0.0:
        raise ValueError("dropout needs a hidden layer: this network has none")
    return tuple(checked)


def count_parameters(sizes) -> int:
    return sum(n_in * n_out + n_out for n_in, n_out in zip(sizes[:-1], sizes[1:]))


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):  # not POSIX
        return None


class Network:
    """A dense multi-layer perceptron trained by gradient descent.

    Parameters
    ----------
    layer_sizes : sequence of int
        Units per layer, input first: ``[2, 4, 1]`` is 2 inputs, 4 hidden units, 1 output.
    activation : str, default "sigmoid"
        Hidden-layer activation: sigmoid, tanh, relu, leaky_relu (slope 0.01), softplus, gelu
        (the exact erf form, PyTorch's default), gelu_tanh (PyTorch's ``approximate="tanh"``),
        silu or identity (``fastgd.registry.ACTIVATIONS``).
    output_activation : str, optional
        Output activation (the hidden ones, softmax or exp). Default: sigmoid for
        binary_crossentropy, softmax for crossentropy, exp for poisson, otherwise ``activation``.
    loss : str, default "mse"
        sse, mse, binary_crossentropy (sigmoid outputs), crossentropy (softmax outputs),
        poisson (exp outputs, targets ≥ 0) or huber (PyTorch's ``HuberLoss``: quadratic within
        ``delta`` of the target, linear beyond; averaged over every output of every row)
        (``fastgd.registry.LOSSES``).
    loss_options : dict, optional
        The loss's own parameter by name, for a loss that declares one: huber's
        ``{"delta": δ}`` (δ > 0, default 1.0, as ``torch.nn.HuberLoss``).
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
    n_threads : int, optional
        Threads for training and prediction (at most the machine's usable cores are used). The
        Numba backend runs its kernels on a team of this many threads and holds BLAS to one; the
        NumPy backend gives BLAS this many. None: every usable core (``FASTGD_NUM_THREADS``
        overrides), BLAS unchanged for the NumPy backend. Results of the Numba backend are
        bitwise the same for any thread count.
    l1, l2 : float, default 0
        Penalties on the weights (not the biases), part of the loss: ``l1·Σ|W| + (l2/2)·ΣW²``,
        added to every batch's loss and gradient, and to ``loss()`` and ``gradients()``. This is
        separate from the optimizers' ``weight_decay``.
    penalty_per_sample : bool, default False
        Divide the penalties by the total sample weight of what they are added to (a batch's
        rows when unweighted; in ``loss()`` and ``gradients()`` all the rows): scikit-learn's
        ``alpha``, ``(alpha/2n)·ΣW²`` for a batch of n rows.
    dropout : float or sequence of float, default 0
        Inverted dropout on the hidden layers' outputs while training, as PyTorch's
        ``nn.Dropout``: each output is zeroed with this probability and the others are scaled
        by 1/(1 − p). One rate for every hidden layer, or one per hidden layer; each in [0, 1).
        The masks come from ``random_state`` and the step (the same on any number of threads
        or processes, and in the NumPy backend); ``predict``, ``loss``, ``gradients``,
        validation and ``gradient_check`` never drop, and exported networks carry no dropout.

    Attributes
    ----------
    weights : sequence of ndarray, shapes (n_in, n_out)
    biases : sequence of ndarray, shapes (n_out,)
        Writable views into the flat parameter buffer ``flat_parameters``.
    optimizer : Optimizer or None
        The optimizer whose state the network holds (set by ``fit``).
    history : History
        Every epoch the network has trained, across fits.
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
        penalty_per_sample=False,
        dropout=0.0,
        loss_options=None,
    ):
        sizes = check_layer_sizes(layer_sizes)
        dropout = check_dropout(dropout, len(sizes) - 2)
        loss_info = lookup(LOSSES, loss, "loss")
        loss_options = check_loss_options(loss_options, loss_info)
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
        dtype = lookup(DTYPES, dtype, "dtype")
        memory.check_network(sizes, dtype)
        if not isinstance(backend, str) or backend not in BACKENDS:
            raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
        rng = _resolve_rng(random_state)
        n_threads = check_threads(n_threads)
        l1 = check.as_real(l1, "l1", minimum=0.0)
        l2 = check.as_real(l2, "l2", minimum=0.0)
        penalty_per_sample = check.as_bool(penalty_per_sample, "penalty_per_sample")

        self.layer_sizes = sizes
        self.activation = hidden.name
        self.output_activation = output.name
        self.loss_name = loss_info.name
        self.loss_options = loss_options
        self.init = init
        self.dtype = dtype
        self.backend = backend
        self.n_threads = n_threads
        self.l1, self.l2 = l1, l2
        self.penalty_per_sample = penalty_per_sample
        self.dropout = dropout
        self._loss = loss_info
        self._architecture = self._make_architecture()
        self._params = np.zeros(self._architecture.n_params, dtype=self.dtype)
        self._bind_views()
        for W in self.weights:
            W[...] = initializer(rng, *W.shape)
        self._initial_params = self._params.copy()  # for fit(warm_start=False)
        self._shuffle_seed = _draw_seed(rng)
        self.history = History()
        self.optimizer: Optimizer | None = None
        self._opt_state = np.zeros((1, self.n_params), dtype=self.dtype)
        self._step = np.zeros(1, dtype=np.int64)
        self.epochs_trained = 0

    # ------------------------------------------------------------------ layout

    def _make_architecture(self):
        codes = [ACTIVATIONS[self.activation].code] * (len(self.layer_sizes) - 2) + [
            ACTIVATIONS[self.output_activation].code
        ]
        return layout.make_architecture(self.layer_sizes, codes, self.dropout if any(self.dropout) else None)

    def _bind_views(self):
        count = len(self._architecture.layers)
        self.weights = LayerArrays(
            [layout.layer_view(self._params, self._architecture, k) for k in range(count)], "weights"
        )
        self.biases = LayerArrays(
            [layout.layer_view(self._params, self._architecture, k, weights=False) for k in range(count)], "biases"
        )

    def layer_views(self, flat) -> Gradients:
        """A flat parameter-shaped buffer as per-layer views (weights, biases)."""
        architecture = self._architecture
        count = len(architecture.layers)
        return Gradients(
            [layout.layer_view(flat, architecture, k) for k in range(count)],
            [layout.layer_view(flat, architecture, k, weights=False) for k in range(count)],
        )

    @property
    def architecture(self) -> layout.Architecture:
        """The network as the kernels see it: its layer records and buffer widths
        (``kernels.layout.Architecture``; read-only)."""
        return self._architecture

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

    @property
    def loss_code(self) -> int:
        return self._loss.code

    @property
    def loss_spec(self):
        """The loss's declaration (``fastgd.kernels.losses.LossSpec``): whether it is a mean, what
        targets it takes, its score, its parameter."""
        return self._loss

    @property
    def loss_parameter(self) -> float:
        """The loss's own parameter as the kernels take it (huber's δ; 0 for a loss without one):
        ``loss_options``'s value, else the declared default. Everything that evaluates this
        network's loss passes it: a fit, its validation, ``loss``, ``gradients``, L-BFGS and the
        gradient check."""
        declared = self._loss.parameter
        return self._loss.parameter_value(None if declared is None else self.loss_options.get(declared[0]))

    @property
    def engine(self):
        """The module whose kernels this network runs (``fastgd.kernels`` or ``fastgd.reference``)."""
        return ENGINES[self.backend]

    @property
    def shuffle_seed(self) -> int:
        """The seed of the row shuffles (drawn from ``random_state``; see ``kernels.train``)."""
        return int(self._shuffle_seed)

    def set_optimizer(self, optimizer: Optimizer) -> None:
        """Use ``optimizer`` from now on, with fresh state and the step count at 0."""
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be an Optimizer, got {type(optimizer).__name__}")
        self._opt_state = optimizer.initial_state(self.n_params, self.dtype)
        self._step[0] = 0
        self.optimizer = optimizer

    def restart(self) -> None:
        """Put back the parameters the network was initialised with, and clear ``history`` and
        ``epochs_trained`` (the optimizer and its state are kept)."""
        self._params[...] = self._initial_params
        self.epochs_trained = 0
        self.history = History()

    def train_state(self) -> layout.TrainState:
        """The live buffers training updates in place: parameters, optimizer state and step
        count (for ``fastgd.training``; changing them changes the network)."""
        return layout.TrainState(self._params, self._opt_state, self._step)

    # ------------------------------------------------------------------ state

    def get_config(self) -> dict:
        """The constructor arguments that describe this network (JSON-ready)."""
        return dict(
            layer_sizes=list(self.layer_sizes),
            activation=self.activation,
            output_activation=self.output_activation,
            loss=self.loss_name,
            init=self.init,
            dtype=self.dtype.name,
            backend=self.backend,
            n_threads=self.n_threads,
            l1=self.l1,
            l2=self.l2,
            penalty_per_sample=self.penalty_per_sample,
            dropout=list(self.dropout),
            loss_options=dict(self.loss_options),
        )

    def state_dict(self, copy=True) -> dict:
        """Everything training changes, as copies: ``parameters``, ``initial_parameters``,
        ``optimizer`` (``{"name", "config"}`` or None), ``optimizer_state`` ((n_slots, n_params)),
        ``optimizer_step``, ``shuffle_seed``, ``epochs_trained`` and ``history`` (a dict of lists).
        ``copy=False``: the three arrays are the network's own buffers (read them, don't keep them)."""
        optimizer = self.optimizer
        take = np.copy if copy else np.asarray
        return {
            "parameters": take(self._params),
            "initial_parameters": take(self._initial_params),
            "optimizer": None if optimizer is None else {"name": optimizer.name, "config": optimizer.get_config()},
            "optimizer_state": take(self._opt_state),
            "optimizer_step": int(self._step[0]),
            "shuffle_seed": int(self._shuffle_seed),
            "epochs_trained": int(self.epochs_trained),
            "history": self.history.to_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Put back a ``state_dict`` (of this network's layout and dtype). Every entry is checked
        before anything changes; a bad one is a ValueError/TypeError naming it."""
        checked = check_state(state, self.n_params, self.dtype)
        self._params[...] = checked["parameters"]
        self._initial_params = checked["initial_parameters"]
        self.optimizer = checked["optimizer"]
        self._opt_state = checked["optimizer_state"]
        self._step[0] = checked["optimizer_step"]
        self._shuffle_seed = checked["shuffle_seed"]
        self.epochs_trained = checked["epochs_trained"]
        self.history = checked["history"]

    def __getstate__(self):
        # Pickle the flat buffers only: the per-layer views would be pickled as separate arrays,
        # no longer views into the parameters.
        state = self.__dict__.copy()
        for key in ("weights", "biases", "_architecture", "_entry_ready"):
            state.pop(key, None)
        return state

    def __setstate__(self, state):
        state.setdefault("penalty_per_sample", False)  # pickled before the option existed
        state.setdefault("dropout", (0.0,) * (len(state["layer_sizes"]) - 2))  # likewise
        state.pop("_meta", None)  # the layer table of fastgd 0.2
        for key in ("_params", "_opt_state", "_step", "_initial_params"):
            # Training writes these: arrays unpickled read-only (joblib's memory maps) are copied.
            if key in state and not state[key].flags.writeable:
                state[key] = state[key].copy()
        self.__dict__.update(state)
        self._architecture = self._make_architecture()  # (rebuilt, never read from the pickle)
        self._bind_views()

    def to_onnx(self, path=None):
        """The network as an ONNX model, written to ``path`` if given (``fastgd.convert.to_onnx``;
        needs ``pip install "fastgd[onnx]"``)."""
        from .convert import to_onnx

        return to_onnx(self, path)

    def to_torch(self):
        """The network as a PyTorch ``nn.Sequential`` (``fastgd.convert.to_torch``)."""
        from .convert import to_torch

        return to_torch(self)

    def copy(self, dtype=None, backend=None) -> "Network":
        """An independent copy (parameters, optimizer and its state), optionally in another dtype
        or backend."""
        clone = object.__new__(Network)
        clone.__dict__.update(self.__dict__)
        if dtype is not None:
            clone.dtype = lookup(DTYPES, dtype if isinstance(dtype, str) else np.dtype(dtype).name, "dtype")
        if backend is not None:
            if not isinstance(backend, str) or backend not in BACKENDS:
                raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
            clone.backend = backend
        clone._params = self._params.astype(clone.dtype)
        clone._opt_state = self._opt_state.astype(clone.dtype)
        clone._initial_params = self._initial_params.astype(clone.dtype)
        clone.history = History()
        clone.history.extend(self.history)
        clone._step = self._step.copy()
        clone._entry_ready = False
        clone._bind_views()
        return clone

    def __repr__(self) -> str:
        return (
            f"Network({list(self.layer_sizes)}, activation={self.activation!r}, l1={self.l1}, l2={self.l2}, "
            + (f"dropout={list(self.dropout)}, " if any(self.dropout) else "")
            + f"output_activation={self.output_activation!r}, loss={self.loss_name!r}, "
            + (f"loss_options={self.loss_options!r}, " if self.loss_options else "")
            + f"dtype={self.dtype.name!r}, backend={self.backend!r})"
        )

    # ------------------------------------------------------------------ inputs

    def check_inputs(self, X, y=None, sample_weight=None, names=("X", "y"), targets=True):
        """``X`` (and, with ``targets``, ``y`` and ``sample_weight``) checked and converted to this
        network's dtype: C-contiguous, finite; ``y`` as ``(n, n_out)`` (class labels one-hot for
        crossentropy); ``sample_weight`` ones when None, and for mean losses divided by its
        largest value (a mean does not change, and huge or subnormal weights cannot overflow
        or underflow its normalisation)."""
        X = check.as_matrix(X, names[0], self.dtype, n_cols=self.layer_sizes[0])
        if not targets:
            return X
        if y is None:
            raise TypeError(f"{names[1]} must be an array of targets, got None")
        Y = check.as_targets(y, names[1], self.dtype, self.layer_sizes[-1], X.shape[0], self._loss)
        weight = check.as_sample_weight(sample_weight, self.dtype, X.shape[0])
        if self._loss.mean and sample_weight is not None:
            weight = (weight.astype(np.float64) / float(weight.max())).astype(self.dtype)
        return X, Y, weight

    def row_scale(self, weight):
        """Per-row loss weights: ``weight / Σweight`` for mean losses, ``weight`` for sse."""
        return weight * self.dtype.type(1.0 / float(weight.sum(dtype=np.float64))) if self._loss.mean else weight.copy()

    def _prepare_entry(self):
        # What predict, loss and gradients compile, made ready once per network object.
        if not getattr(self, "_entry_ready", False):
            from .compilation import prepare_entry

            prepare_entry(self)
            self._entry_ready = True

    def compiled_call(self, threads):
        """BLAS's setting around one call of this network's engine on ``threads`` threads: held
        to one thread whenever the network's products may call BLAS, whatever the team's size
        (``threads``): OpenBLAS's own threads sum in another order (measured: a team of one
        thread with BLAS on two threads ended 9 150 of 49 472 float32 parameters apart from
        the same fit on one or two team threads), and results must not depend on thread counts,
        such as the team a fit borrows beside another. Left alone for small networks (they
        never call it, and do not import SciPy's BLAS); ``n_threads`` for the NumPy backend.
        No lock: calls from several Python threads run at the same time."""
        if self.backend == "numba":
            return blas_on_one_thread() if self._architecture.blas else contextlib.nullcontext()
        return blas_limited(self.n_threads)

    def team(self, rows) -> int:
        """Threads for a call over ``rows`` rows (one for small work: see ``layout.useful_threads``)."""
        if self.backend != "numba" or rows * self._macs_per_row < layout.TEAM_MIN_MACS:
            return 1
        return layout.useful_threads(self._architecture, rows, 1, False, team_size(self.n_threads))

    @property
    def _macs_per_row(self) -> int:
        # Multiply-adds of one row's forward pass (the team decision's measure of work).
        found = getattr(self, "_macs_cache", None)
        if found is None or found[0] is not self._architecture:
            layers = self._architecture.layers
            found = self._macs_cache = (self._architecture, int(np.sum(layers["n_in"] * layers["n_out"])))
        return found[1]

    def outputs(self, buffers, rows) -> np.ndarray:
        """The network's outputs for ``rows`` rows: the output layer's block of ``buffers.acts``."""
        return layout.block_of(buffers.acts, self._architecture, len(self._architecture.layers) - 1, rows)

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
        X = self.check_inputs(X, targets=False)
        n = X.shape[0]
        self._prepare_entry()
        block = min(n, _PREDICT_BLOCK_ROWS)
        buffers = layout.make_buffers(self._architecture, block, self.dtype)
        out = np.empty((n, self.layer_sizes[-1]), dtype=self.dtype)
        threads = self.team(block)
        with self.compiled_call(threads):
            for start in range(0, n, block):
                rows = min(block, n - start)
                self.engine.forward(
                    self._params, self._architecture, X[start : start + rows], buffers, self._loss.code, threads
                )
                out[start : start + rows] = self.outputs(buffers, rows)
        return out

    def loss(self, X, y, sample_weight=None) -> float:
        """The network's loss on ``(X, y)`` as defined for its ``loss`` (see the user guide's
        losses), the L1/L2 penalty included."""
        X, Y, weight = self.check_inputs(X, y, sample_weight)
        buffers = layout.make_buffers(self._architecture, X.shape[0], self.dtype)
        l1, l2 = self.penalties(sample_weight, X.shape[0])
        self._prepare_entry()
        threads = self.team(X.shape[0])
        with self.compiled_call(threads):
            value = self.engine.evaluate_loss(
                self._params,
                self._architecture,
                X,
                Y,
                self.row_scale(weight),
                buffers,
                self._loss.code,
                threads,
                parameter=self.loss_parameter,
            )
            value += self.engine.weight_penalty(self._params, np.zeros_like(self._params), self._architecture, l1, l2)
        return float(value)

    def penalties(self, sample_weight, rows) -> tuple:
        """``(l1, l2)`` as added to a loss over ``rows`` rows of weights ``sample_weight`` (None:
        ones): as they are, or with ``penalty_per_sample`` divided by the weights' total."""
        if not self.penalty_per_sample:
            return self.l1, self.l2
        total = float(rows) if sample_weight is None else float(np.sum(np.asarray(sample_weight, dtype=np.float64)))
        return self.l1 / total, self.l2 / total

    def gradients(self, X, y, sample_weight=None) -> Gradients:
        """Gradients of ``loss(X, y)`` with respect to every weight and bias, by backprop.

        Returns
        -------
        Gradients
            ``(weights, biases)``: lists of new arrays shaped like ``net.weights`` / ``net.biases``.
        """
        X, Y, weight = self.check_inputs(X, y, sample_weight)
        flat = self.flat_gradients(X, Y, weight, self.penalties(sample_weight, X.shape[0]))
        layers = self.layer_views(flat)
        return Gradients([g.copy() for g in layers.weights], [g.copy() for g in layers.biases])

    def flat_gradients(self, X, Y, weight, penalties) -> np.ndarray:
        """The gradient of the loss (the ``penalties`` ``(l1, l2)`` included, see
        ``penalties()``) as one flat buffer, for checked inputs."""
        grads = np.zeros_like(self._params)
        buffers = layout.make_buffers(self._architecture, X.shape[0], self.dtype)
        self._prepare_entry()
        threads = self.team(X.shape[0])
        with self.compiled_call(threads):
            self.engine.forward_backward(
                self._params,
                grads,
                self._architecture,
                X,
                Y,
                self.row_scale(weight),
                buffers,
                self._loss.code,
                *penalties,
                threads,
                parameter=self.loss_parameter,
            )
        return grads

    # ------------------------------------------------------------------ training

    def fit(
        self, X, y, optimizer=None, epochs=1, batch_size=None, shuffle=True, sample_weight=None, **options
    ) -> History:
        """Train by gradient descent: ``fastgd.training.fit(self, X, y, ...)``, which documents
        every option (validation, early stopping, callbacks, progress bar, schedules,
        checkpoints, divergence, gradient shards)."""
        from .training import fit

        return fit(
            self,
            X,
            y,
            optimizer=optimizer,
            epochs=epochs,
            batch_size=batch_size,
            shuffle=shuffle,
            sample_weight=sample_weight,
            **options,
        )

    def partial_fit(self, X, y, optimizer=None, batch_size=None, shuffle=True, sample_weight=None) -> History:
        """One epoch of training, continuing from the current parameters and optimizer state."""
        return self.fit(
            X, y, optimizer=optimizer, epochs=1, batch_size=batch_size, shuffle=shuffle, sample_weight=sample_weight
        )

    def save(self, path) -> None:
        """Write the network to a ``.npz`` file, atomically (see :func:`fastgd.load`)."""
        from .persistence import write

        write(path, self.get_config(), self.state_dict())


def check_state(state, n_params, dtype) -> dict:
    """A ``state_dict`` checked against a network of ``n_params`` parameters of ``dtype``: every
    entry's type, range and shape, before anything is built. Returns the entries converted
    (arrays copied, the optimizer built, the history as a ``History``)."""
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict from Network.state_dict(), got {type(state).__name__}")
    missing = [
        key
        for key in (
            "parameters",
            "initial_parameters",
            "optimizer",
            "optimizer_state",
            "optimizer_step",
            "shuffle_seed",
            "epochs_trained",
            "history",
        )
        if key not in state
    ]
    if missing:
        raise ValueError(f"state is missing {missing}")
    out = {}
    for key in ("parameters", "initial_parameters"):
        array = state[key]
        if not isinstance(array, np.ndarray) or array.shape != (n_params,) or array.dtype != dtype:
            shape = getattr(array, "shape", None)
            raise ValueError(
                f"state['{key}'] must be a ({n_params},) {dtype} array, got {type(array).__name__} {shape} "
                f"{getattr(array, 'dtype', '')}"
            )
        if not np.isfinite(array).all():
            raise ValueError(f"state['{key}'] contains NaN or infinity")
        out[key] = array.copy()
    spec = state["optimizer"]
    if spec is None:
        optimizer = None
    else:
        if (
            not isinstance(spec, dict)
            or not isinstance(spec.get("name"), str)
            or not isinstance(spec.get("config"), dict)
        ):
            raise ValueError("state['optimizer'] must be None or {'name': str, 'config': dict}")
        if spec["name"] not in OPTIMIZERS:
            raise ValueError(
                f"state['optimizer'] names an unknown optimizer {spec['name']!r}; expected one of {sorted(OPTIMIZERS)}"
            )
        config = {k: tuple(v) if isinstance(v, list) else v for k, v in spec["config"].items()}
        try:
            optimizer = OPTIMIZERS[spec["name"]](**config)
        except (TypeError, ValueError) as error:
            raise ValueError(f"state['optimizer'] has a config {spec['name']} refuses: {error}") from None
    slots = 1 if optimizer is None else optimizer.initial_state(1, dtype).shape[0]
    array = state["optimizer_state"]
    if not isinstance(array, np.ndarray) or array.shape != (slots, n_params) or array.dtype != dtype:
        raise ValueError(
            f"state['optimizer_state'] must be a ({slots}, {n_params}) {dtype} array for "
            f"{optimizer!r}, got {getattr(array, 'shape', type(array).__name__)} {getattr(array, 'dtype', '')}"
        )
    if not np.isfinite(array).all():
        raise ValueError("state['optimizer_state'] contains NaN or infinity")
    out["optimizer_state"] = array.copy()
    out["optimizer"] = optimizer
    out["optimizer_step"] = check.as_int(state["optimizer_step"], "state['optimizer_step']", 0)
    if out["optimizer_step"] >= 2**62:
        raise ValueError(f"state['optimizer_step'] must be < 2**62, got {out['optimizer_step']}")
    seed = check.as_int(state["shuffle_seed"], "state['shuffle_seed']", 0)
    if seed >= 2**63:
        raise ValueError(f"state['shuffle_seed'] must be < 2**63, got {seed}")
    out["shuffle_seed"] = seed
    out["epochs_trained"] = check.as_int(state["epochs_trained"], "state['epochs_trained']", 0)
    fields = state["history"]
    if not isinstance(fields, dict):
        raise ValueError("state['history'] must be a dict of lists")
    for field in History.FIELDS:
        values = fields.get(field, [])
        if not isinstance(values, (list, tuple)) or any(
            isinstance(v, bool) or not isinstance(v, numbers.Real) for v in values
        ):
            raise ValueError(f"state['history']['{field}'] must be a list of numbers")
    out["history"] = History.from_dict(fields)
    return out


def load(path, backend=None) -> Network:
    """Read a network written by :meth:`Network.save` (``allow_pickle=False``).

    Parameters
    ----------
    path : str or path-like
    backend : {"numba", "numpy"}, optional
        Engine for the loaded network; default: the one it was saved with.

    Raises
    ------
    ValueError
        If the file is not a fastgd network file, is truncated or corrupt, has another format
        version, or any field or array is damaged: the message names the field and the file.
    """
    from .persistence import read

    config, state = read(path)
    if backend is not None:
        config["backend"] = backend
    try:
        net = Network(**config, random_state=0)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{os.fspath(path)}: the description does not make a network: {error}") from None
    try:
        net.load_state_dict(state)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{os.fspath(path)}: {error}") from None
    return net
