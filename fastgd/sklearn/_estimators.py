"""``MLPClassifier`` and ``MLPRegressor``: scikit-learn's estimators, trained by fastgd.

Same parameters with scikit-learn's meaning, defaults and validation; same fitted attributes,
warnings and errors (see the user guide's drop-in page, docs/user_guide/sklearn.rst, for where the numbers
differ and why). What each parameter becomes in fastgd:

* the network: scikit-learn's layers and output (softmax for several classes, one logistic unit
  for two, logistic units for multilabel targets, identity or exp for regression), its
  Glorot-uniform initialisation drawn from ``random_state`` exactly as scikit-learn draws it,
  and ``alpha`` as ``Network(l2=alpha, penalty_per_sample=True)``: ``(alpha/2)·ΣW²`` divided by
  each batch's total sample weight;
* ``solver="sgd"``: :class:`fastgd.SGD` with ``momentum`` and ``nesterovs_momentum``;
  ``learning_rate="invscaling"``: :class:`fastgd.schedules.SampleInverseScaling`;
  ``"adaptive"``: the stopping rule's ``lr_factor=5, min_lr=1e-6``; ``solver="adam"``:
  :class:`fastgd.Adam` with ``beta_1``, ``beta_2``, ``epsilon``; fastgd's other optimizers by
  name, with ``optimizer_options``;
* ``tol`` and ``n_iter_no_change``: ``EarlyStopping(rule="no_improvement")`` on the training loss,
  or with ``early_stopping`` on the validation score (accuracy, R²) of a split drawn as
  scikit-learn draws it, run inside the compiled loop, the whole fit one compiled call;
* ``solver="lbfgs"``: SciPy's L-BFGS-B on the compiled loss and gradient (``_lbfgs``).

Beyond scikit-learn's (issue 31): ``class_weight`` on the classifier (row weights multiplied
into ``sample_weight``), ``validation_loss_curve_`` (the loss the compiled loop measures on the
held-out rows), ``callbacks`` (passed to ``Network.fit``), and a memory check
(``fastgd.memory``) before the first large buffer is allocated.
"""

from __future__ import annotations

import functools
import math
import warnings
from numbers import Integral, Real

import numpy as np
import scipy.sparse
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, is_classifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import type_of_target, unique_labels
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from .. import memory, schedules
from ..network import Network
from ..optimizers import OPTIMIZERS, SGD, Adam
from ..registry import ACTIVATIONS
from ..streaming import Streaming, chunk_rows
from ..training import DivergenceWarning, EarlyStopping
from ..training.callbacks import Callback, check_callbacks
from . import _lbfgs, _search
from ._compat import Interval, Options, StrOptions, check_sample_weight, validate_parameters

# scikit-learn's hidden activations -> fastgd's, and fastgd's own hidden activations accepted as
# extensions by their names (both read from the activation table).
HIDDEN_ACTIVATIONS = {spec.sklearn: spec.name for spec in ACTIVATIONS.values() if spec.sklearn and not spec.output_only}
FASTGD_HIDDEN = tuple(spec.name for spec in ACTIVATIONS.values() if spec.sklearn is None and not spec.output_only)
# scikit-learn's out_activation_ -> (fastgd's output activation, loss).
OUTPUTS = {
    "softmax": ("softmax", "crossentropy"),
    "logistic": ("sigmoid", "binary_crossentropy"),
    "identity": ("identity", "mse"),
    "exp": ("exp", "poisson"),
}
STOCHASTIC_SOLVERS = ("sgd", "adam") + tuple(name for name in OPTIMIZERS if name not in ("sgd", "adam"))
# scikit-learn's learning_rate="adaptive": divide by 5 while above 1e-6.
ADAPTIVE_FACTOR, ADAPTIVE_MIN_LR = 5.0, 1e-6
NON_FINITE = (
    "Solver produced non-finite parameter weights. The input data may contain large values and need to be preprocessed."
)
# Rows densified at a time from sparse input (training, prediction).
SPARSE_BLOCK_ROWS = 4096


def _unchanged_on_error(method):
    """Run a fit method so that when it raises, the estimator is exactly as it was: every
    attribute it had, and none it did not (training works on copies of the network and the
    stopping rule, so a shallow snapshot suffices). Parameters are checked first, by
    scikit-learn's own constraint machinery."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        snapshot = dict(self.__dict__)
        try:
            validate_parameters(self)
            return method(self, *args, **kwargs)
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(snapshot)
            raise

    return wrapper


class _SparseRows:
    """A CSR matrix as the row source fastgd streams from (``fastgd.streaming``): each slice of
    rows read comes back dense, so no more than a chunk is ever dense at once."""

    def __init__(self, matrix, dtype):
        self.matrix, self.dtype = matrix, np.dtype(dtype)
        self.shape, self.ndim = matrix.shape, 2

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, rows):
        return self.matrix[rows].toarray().astype(self.dtype, copy=False)


class _Verbose(Callback):
    """``verbose``: scikit-learn's lines after every epoch, from a fit callback."""

    def __init__(self, validation):
        self.validation = validation

    def on_epoch_end(self, epoch, history, network):
        print("Iteration %d, loss = %.8f" % (epoch, history.loss[-1]))
        if self.validation:
            scores = history.val_accuracy or history.val_score
            print("Validation score: %f" % scores[-1])


class _StochasticJob:
    """A stochastic fit prepared (``_BaseMLP._stochastic_job``): what ``Network.fit`` takes
    (``net``, ``X``, ``Y``, ``sample_weight``, ``fit_options``), ``rows``/``val_rows`` in a
    larger array when asked, and what ``_stochastic_end`` needs afterwards."""

    def __init__(self, **fields):
        self.__dict__.update(fields)


class _BaseMLP(BaseEstimator):
    """What the classifier and the regressor share (see the module's docstring)."""

    _parameter_constraints: dict = {
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "activation": [StrOptions(set(HIDDEN_ACTIVATIONS) | set(FASTGD_HIDDEN))],
        "solver": [StrOptions({"lbfgs", *STOCHASTIC_SOLVERS})],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "batch_size": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "learning_rate": [StrOptions({"constant", "invscaling", "adaptive"})],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "power_t": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval(Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "momentum": [Interval(Real, 0, 1, closed="both")],
        "nesterovs_momentum": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "beta_1": [Interval(Real, 0, 1, closed="left")],
        "beta_2": [Interval(Real, 0, 1, closed="left")],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left"), Options(Real, {np.inf})],
        "max_fun": [Interval(Integral, 1, None, closed="left")],
        "optimizer_options": [dict, None],
        "dtype": [StrOptions({"float32", "float64"}), None],
        "backend": [StrOptions({"numba", "numpy"})],
        "n_threads": [Interval(Integral, 1, None, closed="left"), None],
        "callbacks": [callable, Callback, list, tuple, None],
        "dropout": [Interval(Real, 0, 1, closed="left"), list, tuple],
    }

    def __init__(
        self,
        hidden_layer_sizes,
        activation,
        solver,
        alpha,
        batch_size,
        learning_rate,
        learning_rate_init,
        power_t,
        max_iter,
        loss,
        shuffle,
        random_state,
        tol,
        verbose,
        warm_start,
        momentum,
        nesterovs_momentum,
        early_stopping,
        validation_fraction,
        beta_1,
        beta_2,
        epsilon,
        n_iter_no_change,
        max_fun,
        optimizer_options,
        dtype,
        backend,
        n_threads,
        callbacks,
        dropout,
    ):
        self.dropout = dropout
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.loss = loss
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.optimizer_options = optimizer_options
        self.dtype = dtype
        self.backend = backend
        self.n_threads = n_threads
        self.callbacks = callbacks

    # ------------------------------------------------------------------ fitting

    def _hidden_sizes(self) -> list:
        sizes = self.hidden_layer_sizes
        sizes = list(sizes) if hasattr(sizes, "__iter__") else [sizes]
        if np.any(np.array(sizes) <= 0):
            raise ValueError("hidden_layer_sizes must be > 0, got %s." % sizes)
        for size in sizes:
            if isinstance(size, (bool, np.bool_)) or not isinstance(size, Integral):
                raise TypeError(f"hidden_layer_sizes must hold ints, got {size!r}")
        return [int(size) for size in sizes]

    def _fit(self, X, y, sample_weight, incremental, rows=None, prepare=False):
        # (``prepare``: a search's fit of a candidate on a fold, prepared and returned, not
        # trained: ``_prepare_search_fit``; ``rows``: the fold's rows of the search's data.)
        if not incremental and not prepare and _search.prefit(self, X, y, sample_weight):
            return self  # trained already, with the other candidates and folds of a search
        hidden = self._hidden_sizes()
        if self.solver in ("lbfgs", "sgd", "adam") and self.optimizer_options:
            raise ValueError(
                f"optimizer_options apply to fastgd's own solvers ({', '.join(STOCHASTIC_SOLVERS[2:])}); solver="
                f"{self.solver!r} takes scikit-learn's parameters (momentum, nesterovs_momentum, beta_1, beta_2, "
                "epsilon)"
            )
        if self.optimizer_options and self.solver not in ("lbfgs", "sgd", "adam"):
            self._optimizer()  # a bad option is refused before anything changes
        callbacks = self._checked_callbacks()
        first_pass = not hasattr(self, "network_") or (not self.warm_start and not incremental)
        X, Y = self._validate_input(X, y, incremental, reset=first_pass)
        sample_weight = check_sample_weight(sample_weight, X)
        if Y.ndim == 1:
            Y = Y.reshape(-1, 1)
        sample_weight = self._class_weighted(Y, sample_weight, incremental)
        dtype = np.dtype(self.dtype or X.dtype)
        self._random_state = check_random_state(self.random_state)
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        validation_rows = self._validation_rows(X.shape[0]) if self.early_stopping else 0
        layers = [X.shape[1], *hidden, Y.shape[1]]
        if not first_pass and list(self.network_.layer_sizes) != layers:
            raise ValueError(
                f"warm_start and partial_fit need the same layers as the fitted network: it has "
                f"{list(self.network_.layer_sizes)}, these arguments make {layers}"
            )
        # Before anything large exists (the initial weights drawn next are as large as the
        # network): refuse what this machine cannot hold.
        self._check_memory(layers, dtype, X, validation_rows, first_pass)
        if first_pass:
            initial = self._initial_parameters(layers, dtype)
        if self.solver == "lbfgs":
            if first_pass:
                self.__dict__.pop("t_", None)
            net = self._network(layers, dtype, initial, self._random_state) if first_pass else self.network_.copy()
            self._fit_lbfgs(net, X, Y.astype(dtype), sample_weight)
        elif prepare:
            return self._stochastic_job(
                X, Y, sample_weight, incremental, first_pass, layers, dtype, initial, callbacks, rows=rows
            )
        else:
            self._fit_stochastic(
                X, Y, sample_weight, incremental, first_pass, layers, dtype, initial if first_pass else None, callbacks
            )
        return self

    def _prepare_search_fit(self, X, y, rows):
        """A search's fit of this (fresh) estimator on ``X, y``, rows ``rows`` of the search's
        data, prepared as ``fit`` would prepare it and not trained (``fastgd.sklearn._search``);
        ``_stochastic_end`` completes it."""
        validate_parameters(self)
        return self._fit(X, y, None, incremental=False, rows=rows, prepare=True)

    def _checked_callbacks(self) -> list:
        """``callbacks`` as a list of fastgd ``Callback`` objects (functions wrapped), checked
        before anything changes; the stochastic solvers only (L-BFGS has no epochs)."""
        callbacks = check_callbacks(self.callbacks)
        if callbacks and self.solver == "lbfgs":
            raise ValueError(
                "callbacks run after each epoch of a stochastic solver (sgd, adam, ...); solver='lbfgs' has no "
                "epochs: give callbacks=None with it"
            )
        if self.solver == "lbfgs" and any(
            float(rate) != 0.0 for rate in np.atleast_1d(np.asarray(self.dropout, dtype=object))
        ):
            raise ValueError(
                "dropout trains with a stochastic solver (sgd, adam, ...); solver='lbfgs' minimises a fixed "
                "function: give dropout=0 with it"
            )
        return callbacks

    def _class_weighted(self, Y, sample_weight, incremental):
        """The row weights training uses: ``sample_weight`` (the classifier multiplies in its
        ``class_weight``)."""
        return sample_weight

    def _validation_rows(self, n) -> int:
        """Rows early stopping holds out of ``n``, as ``train_test_split`` counts them
        (``ceil(validation_fraction · n)``); a ValueError naming ``validation_fraction`` when
        that leaves no rows on either side (scikit-learn's estimator lets ``train_test_split``'s
        message about its ``test_size`` through)."""
        fraction = float(self.validation_fraction)
        held_out = math.ceil(fraction * n)
        if fraction <= 0.0 or held_out == 0:
            raise ValueError(
                f"validation_fraction must be > 0 with early_stopping=True (the share of the training rows held out "
                f"to validate on), got {self.validation_fraction!r}"
            )
        if held_out >= n:
            raise ValueError(
                f"validation_fraction={self.validation_fraction!r} holds out all {n} rows, leaving none to train on; "
                "give a smaller validation_fraction or more rows"
            )
        return held_out

    def _check_memory(self, layers, dtype, X, validation_rows, first_pass):
        """Refuse (``fastgd.memory.InsufficientMemoryError``, naming ``hidden_layer_sizes``,
        ``batch_size`` or ``validation_fraction``) a fit that would need more memory than is
        available: the network, what the fit allocates, the initial weights drawn (held through
        a first fit) or, warm-started, the fitted network beside the copy that trains."""
        n = X.shape[0] - validation_rows
        sparse = scipy.sparse.issparse(X)
        lbfgs = self.solver == "lbfgs"
        if lbfgs:
            batch = min(n, _lbfgs.SPARSE_BLOCK_ROWS) if sparse else n
            slots = 1
        else:
            batch = min(200, n) if self.batch_size == "auto" else max(1, min(int(self.batch_size), n))
            slots = len(self._optimizer().state_names)
        chunk = chunk_rows(Streaming(), batch, layers[0], layers[-1], dtype) if sparse and not lbfgs else None
        estimate = memory.fit_estimate(
            layers,
            dtype,
            rows=n,
            batch_size=batch,
            state_slots=slots,
            validation_rows=validation_rows,
            restore_best=bool(self.early_stopping),
            chunk_rows=chunk,
            lbfgs=lbfgs,
        )
        n_params = memory.parameter_count(layers)
        if first_pass:
            estimate["initial weights drawn"] = memory.Part(n_params * dtype.itemsize, "layers")
        else:
            fitted_slots = max(1, len(self.network_.optimizer_state))
            estimate["the fitted network"] = memory.Part(
                (2 + fitted_slots) * n_params * self.network_.dtype.itemsize, "layers"
            )
        memory.check(
            estimate,
            {
                "layers": ("hidden_layer_sizes", self.hidden_layer_sizes),
                "batch": ("batch_size", self.batch_size),
                "validation": ("validation_fraction", self.validation_fraction),
                "rows": ("X", None),
            },
        )

    def _initial_parameters(self, layers, dtype):
        # scikit-learn's initialisation (_init_coef), drawn in its order from self._random_state:
        # per layer the weights then the biases, U(−b, b), b = sqrt(factor / (fan_in + fan_out)).
        factor = 2.0 if self.activation == "logistic" else 6.0
        drawn = []
        for fan_in, fan_out in zip(layers[:-1], layers[1:]):
            bound = np.sqrt(factor / (fan_in + fan_out))
            weights = self._random_state.uniform(-bound, bound, (fan_in, fan_out))
            biases = self._random_state.uniform(-bound, bound, fan_out)
            drawn.append((weights.astype(dtype, copy=False), biases.astype(dtype, copy=False)))
        return drawn

    def _network(self, layers, dtype, initial, random_state) -> Network:
        output, loss = OUTPUTS[self._out_activation]
        # fastgd shuffles with its own generator, seeded from scikit-learn's random state.
        net = Network(
            layers,
            activation=HIDDEN_ACTIVATIONS.get(self.activation, self.activation),
            output_activation=output,
            loss=loss,
            dtype=dtype.name,
            random_state=int(random_state.randint(0, 2**31 - 1)),
            backend=self.backend,
            n_threads=self.n_threads,
            l2=float(self.alpha),
            penalty_per_sample=True,
            dropout=self.dropout,
        )
        for k, (weights, biases) in enumerate(initial):
            net.weights[k][...] = weights
            net.biases[k][...] = biases
        return net

    def _attributes(self, layers):
        self.n_outputs_, self.n_layers_ = layers[-1], len(layers)
        self.out_activation_ = self._out_activation

    def _fit_lbfgs(self, net, X, Y, sample_weight):
        n_iter, loss = _lbfgs.minimize(net, X, Y, sample_weight, self.max_iter, self.max_fun, self.tol)
        if not np.isfinite(net.flat_parameters).all():
            raise ValueError(NON_FINITE)
        self.network_ = net
        self._attributes(list(net.layer_sizes))
        self.n_iter_, self.loss_ = n_iter, loss
        self.t_ = self.__dict__.get("t_", 0)  # (L-BFGS counts no samples, as scikit-learn's)
        for name in (
            "loss_curve_",
            "best_loss_",
            "validation_scores_",
            "validation_loss_curve_",
            "best_validation_score_",
            "_stopping",
            "optimizer_",
        ):
            self.__dict__.pop(name, None)

    def _optimizer(self):
        if self.solver == "sgd":
            momentum = float(self.momentum)
            return SGD(
                lr=self.learning_rate_init, momentum=momentum, nesterov=bool(self.nesterovs_momentum) and momentum > 0
            )
        if self.solver == "adam":
            return Adam(lr=self.learning_rate_init, betas=(self.beta_1, self.beta_2), eps=self.epsilon)
        return OPTIMIZERS[self.solver](lr=self.learning_rate_init, **(self.optimizer_options or {}))

    def _stopping_rule(self):
        if self.early_stopping:
            monitor = self._validation_monitor
        else:
            monitor = "loss"
        adaptive = self.solver == "sgd" and self.learning_rate == "adaptive"
        patience = math.inf if self.n_iter_no_change == np.inf else int(self.n_iter_no_change)
        return EarlyStopping(
            patience=patience,
            min_delta=float(self.tol),
            restore_best=bool(self.early_stopping),
            monitor=monitor,
            rule="no_improvement",
            lr_factor=ADAPTIVE_FACTOR if adaptive else None,
            min_lr=ADAPTIVE_MIN_LR,
            resume=True,
        )

    def _fit_stochastic(self, X, Y, sample_weight, incremental, first_pass, layers, dtype, initial, callbacks):
        job = self._stochastic_job(X, Y, sample_weight, incremental, first_pass, layers, dtype, initial, callbacks)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DivergenceWarning)
            history = job.net.fit(job.X, job.Y, sample_weight=job.sample_weight, **job.fit_options)
        for warning in caught:
            if not issubclass(warning.category, DivergenceWarning):
                warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
        self._stochastic_end(job, history, any(issubclass(w.category, DivergenceWarning) for w in caught))

    def _stochastic_job(
        self, X, Y, sample_weight, incremental, first_pass, layers, dtype, initial, callbacks, rows=None
    ) -> "_StochasticJob":
        """Everything a stochastic fit does before training, nothing changed: the network, its
        data (after early stopping's split), optimizer, stopping rule and fit's options; with
        ``rows`` (X's rows in a larger array), the training and validation rows of that array."""
        validation, val_rows = None, None
        if self.early_stopping:
            # As scikit-learn: stratified for single-output classification only.
            stratify = Y if is_classifier(self) and Y.shape[1] == 1 else None
            try:
                parts = train_test_split(
                    X,
                    Y,
                    *([] if rows is None else [rows]),
                    *([] if sample_weight is None else [sample_weight]),
                    random_state=self._random_state,
                    test_size=self.validation_fraction,
                    stratify=stratify,
                )
            except ValueError as error:
                # (train_test_split speaks of its own test_size: say which of ours it was)
                raise ValueError(
                    f"early_stopping's validation split (validation_fraction={self.validation_fraction!r} of "
                    f"{X.shape[0]} rows) is not possible: {error}"
                ) from None
            X, X_val, Y, Y_val = parts[:4]
            if rows is not None:
                rows, val_rows = parts[4:6]
                parts = parts[2:]
            sample_weight = parts[4] if sample_weight is not None else None
            if X_val.shape[0] < 2:
                raise ValueError(
                    "The validation set is too small. Increase 'validation_fraction' or the size of your dataset."
                )
            if scipy.sparse.issparse(X_val):
                X_val = X_val.toarray()
            validation = (X_val, Y_val.astype(dtype))
        stopping = self._stopping_rule()
        if first_pass:
            net, seen, loss_curve, scores, val_losses = (
                self._network(layers, dtype, initial, self._random_state),
                0,
                [],
                [],
                [],
            )
        else:
            net, seen = self.network_.copy(), self.t_
            loss_curve, scores = (
                list(getattr(self, "loss_curve_", [])),
                list(getattr(self, "validation_scores_", None) or []),
            )
            val_losses = list(getattr(self, "validation_loss_curve_", None) or [])
            previous = getattr(self, "_stopping", None)
            if previous is not None and previous.monitor == stopping.monitor:
                # The rule's settings follow the parameters; its state (best, count) carries on,
                # and its rate's factor through partial_fit (fit() starts a new optimizer).
                stopping.best, stopping.waited, stopping.best_parameters = (
                    previous.best,
                    previous.waited,
                    previous.best_parameters,
                )
                stopping.lr_scale = previous.lr_scale if incremental else 1.0
        n = X.shape[0]
        batch = self._batch_rows(n)
        optimizer = (
            self.optimizer_
            if incremental and not first_pass and getattr(self, "optimizer_", None)
            else self._optimizer()
        )
        schedule = None
        if self.solver == "sgd" and self.learning_rate == "invscaling":
            # lr_init / (1 + samples seen before the epoch)^power_t through the epochs to come.
            schedule = schedules.SampleInverseScaling(
                rows=n, power=float(self.power_t), offset=float(seen - n * net.epochs_trained)
            )
        epochs = 1 if incremental else int(self.max_iter)
        options = dict(early_stopping=stopping, on_divergence="warn", lr_schedule=schedule)
        if validation is not None:
            options["validation_data"] = validation
        # scikit-learn's lines first (they print what the epoch was), then the user's callbacks.
        callbacks = ([_Verbose(validation is not None)] if self.verbose else []) + callbacks
        if callbacks:
            options["callbacks"] = callbacks
        if scipy.sparse.issparse(X):
            X = _SparseRows(X.tocsr(), dtype)
        return _StochasticJob(
            net=net,
            X=X,
            Y=Y.astype(dtype),
            sample_weight=sample_weight,
            fit_options=dict(
                optimizer=optimizer, epochs=epochs, batch_size=batch, shuffle=bool(self.shuffle), **options
            ),
            rows=rows,
            val_rows=val_rows,
            validation=validation is not None,
            stopping=stopping,
            optimizer=optimizer,
            seen=seen,
            n=n,
            incremental=incremental,
            layers=layers,
            curves=(loss_curve, scores, val_losses),
        )

    def _stochastic_end(self, job, history, diverged):
        """The estimator's attributes after the stochastic fit of ``job`` (``history``;
        ``diverged``: a DivergenceWarning came)."""
        net, optimizer, stopping, seen, n, incremental, layers = (
            job.net,
            job.optimizer,
            job.stopping,
            job.seen,
            job.n,
            job.incremental,
            job.layers,
        )
        loss_curve, scores, val_losses = job.curves
        validation = job.validation or None
        losses = list(history.loss)
        new_scores = list(history.val_accuracy or history.val_score) if validation is not None else []
        new_val_losses = list(history.val_loss) if validation is not None else []
        if diverged:
            # The epoch that diverged: scikit-learn records its non-finite loss and score.
            losses.append(math.nan)
            if validation is not None:
                new_scores.append(math.nan)
                new_val_losses.append(math.nan)
            if not self.early_stopping:
                raise ValueError(NON_FINITE)
        self.network_, self.optimizer_, self._stopping = net, optimizer, stopping
        self._attributes(layers)
        self.n_iter_ = len(losses)
        self.t_ = seen + n * len(losses)
        self.loss_curve_ = loss_curve + losses
        self.loss_ = self.loss_curve_[-1]
        if self.early_stopping:
            self.validation_scores_ = scores + new_scores
            self.validation_loss_curve_ = val_losses + new_val_losses
            self.best_validation_score_ = float(stopping.best)
            self.best_loss_ = None
        else:
            self.validation_scores_ = self.validation_loss_curve_ = self.best_validation_score_ = None
            self.best_loss_ = float(stopping.best)
        if self.verbose and history.stopped_epoch is not None and not diverged:
            what = "Validation score" if self.early_stopping else "Training loss"
            print(
                f"{what} did not improve more than tol={self.tol:f} for {self.n_iter_no_change} consecutive epochs. "
                "Stopping."
            )
        if not incremental and self.n_iter_ == self.max_iter and history.stopped_epoch is None:
            warnings.warn(
                f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached and the optimization hasn't "
                "converged yet.",
                ConvergenceWarning,
                stacklevel=3,
            )

    def _batch_rows(self, n):
        if self.batch_size == "auto":
            return min(200, n)
        if self.batch_size > n:
            warnings.warn(
                "Got `batch_size` less than 1 or larger than sample size. It is going to be clipped", stacklevel=3
            )
        return int(np.clip(self.batch_size, 1, n))

    # ------------------------------------------------------------------ prediction

    def _forward(self, X):
        """The network's outputs for ``X`` (dense or sparse, checked as scikit-learn checks it)."""
        check_is_fitted(self, "network_")
        X = validate_data(self, X, accept_sparse=["csr", "csc"], reset=False)
        net = self.network_
        if not scipy.sparse.issparse(X):
            return net.predict(X)
        X = X.tocsr()
        out = np.empty((X.shape[0], net.layer_sizes[-1]), dtype=net.dtype)
        for start in range(0, X.shape[0], SPARSE_BLOCK_ROWS):
            out[start : start + SPARSE_BLOCK_ROWS] = net.predict(X[start : start + SPARSE_BLOCK_ROWS].toarray())
        return out

    # ------------------------------------------------------------------ fitted attributes

    @property
    def coefs_(self):
        """Weight matrices, ``(n_in, n_out)`` per layer, input layer first, as scikit-learn's:
        views into the network's parameters (writing into them changes the model)."""
        check_is_fitted(self, "network_")
        return list(self.network_.weights)

    @coefs_.setter
    def coefs_(self, values):
        for k, value in enumerate(values):
            self.network_.weights[k] = value

    @property
    def intercepts_(self):
        """Bias vectors, ``(n_out,)`` per layer, as scikit-learn's ``intercepts_`` (views)."""
        check_is_fitted(self, "network_")
        return list(self.network_.biases)

    @intercepts_.setter
    def intercepts_(self, values):
        for k, value in enumerate(values):
            self.network_.biases[k] = value

    @property
    def learning_rate_(self):
        """The learning rate the next epoch would train with (fastgd's; scikit-learn keeps it in
        its private ``_optimizer.learning_rate``)."""
        check_is_fitted(self, "network_")
        if self.solver == "lbfgs":
            return None
        lr = float(self.optimizer_.lr) * float(self._stopping.lr_scale)
        if self.solver == "sgd" and self.learning_rate == "invscaling":
            lr /= (1.0 + self.t_) ** float(self.power_t)
        return lr

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier: scikit-learn's ``MLPClassifier``, trained by fastgd.

    Every parameter of scikit-learn's (1.9), with its meaning and default, plus fastgd's.

    Parameters
    ----------
    hidden_layer_sizes, activation, solver, alpha, batch_size, learning_rate, learning_rate_init, power_t, max_iter,
    shuffle, random_state, tol, verbose, warm_start, momentum, nesterovs_momentum, early_stopping, validation_fraction,
    beta_1, beta_2, epsilon, n_iter_no_change, max_fun
        scikit-learn's, with its meaning and default. ``solver`` also takes any fastgd
        optimizer name ("adamw", "rmsprop", "adagrad", "momentum"), built with
        ``lr=learning_rate_init`` and ``optimizer_options``; ``activation`` also fastgd's
        hidden activations by their names ("leaky_relu", "softplus", "gelu", "gelu_tanh",
        "silu": ``fastgd.registry.ACTIVATIONS``). With ``early_stopping=True``, ``validation_fraction`` must
        hold out at least one row and leave one (a ValueError naming it otherwise).
    class_weight : dict, list of dict, "balanced" or None, default None
        Weights of the classes, as scikit-learn's ``LogisticRegression`` and ``SGDClassifier``
        take them: each row's weight is multiplied by its class's weight, and by its
        ``sample_weight`` when one is given (a fit with ``class_weight`` is, bitwise, the fit
        with those products as ``sample_weight``). A dict ``{class: weight}`` (classes left out
        weigh 1; weights finite and >= 0); "balanced": ``n_samples / (n_classes ·
        count(class))`` as ``sklearn.utils.class_weight.compute_class_weight`` computes it, the
        counts weighted by ``sample_weight`` when given (``LogisticRegression``'s rule: a row
        of weight 2 counts as two rows). ``partial_fit`` refuses "balanced", as
        ``SGDClassifier`` does (one call's rows do not give the classes' frequencies): compute
        the weights once with ``compute_class_weight`` and pass them as a dict. For a multilabel
        ``y`` (an indicator matrix of k columns): "balanced", or a list of k dicts, one per column
        of ``y`` with the keys 0 and 1, as scikit-learn's trees take ``class_weight`` for several
        outputs (``compute_sample_weight``): each row's weight is the product over the columns
        of its value's weight (with "balanced", each column balanced on its own). A single dict
        is refused for a multilabel ``y``, as the trees refuse it.
    optimizer_options : dict, optional
        Keywords of fastgd's own optimizers (``solver`` other than "sgd", "adam", "lbfgs").
    dtype : {"float32", "float64"} or None, default None
        None trains in the input's float dtype (float32 stays float32), as scikit-learn;
        "float32" or "float64" forces one.
    backend : {"numba", "numpy"}, default "numba"
    n_threads : int, optional
        As for :class:`fastgd.Network`.
    callbacks : callable, fastgd.callbacks.Callback, or a list of them, optional
        Passed to the fit of the network (``fastgd.Network.fit(callbacks=...)``): run after
        every epoch of a stochastic solver (every ``callback.every``-th), with the epoch
        (counted from 1 in each ``fit``/``partial_fit`` call), the fit's ``History`` (training
        loss, and with ``early_stopping`` the validation loss and score) and the network; a
        callback returning False (or raising ``fastgd.callbacks.StopTraining``) ends the fit
        after that epoch. So :class:`fastgd.callbacks.TensorBoard` and the other
        ``fastgd.callbacks`` work with the drop-in. ``solver="lbfgs"`` has no epochs and refuses
        them. ``clone`` (and so ``GridSearchCV``) copies them as any parameter (deep copies):
        a callback should open what it writes to in ``on_fit_begin``.
    dropout : float or list of float, default 0
        Inverted dropout on the hidden layers while training (``fastgd.Network``'s
        ``dropout``): one rate for every hidden layer or one per hidden layer, each in [0, 1);
        off in ``predict``, ``score`` and the validation score. Stochastic solvers only.

    Attributes
    ----------
    classes_, loss_, best_loss_, loss_curve_, validation_scores_, best_validation_score_, t_, coefs_, intercepts_,
    n_features_in_, feature_names_in_, n_iter_, n_layers_, n_outputs_, out_activation_
        scikit-learn's.
    validation_loss_curve_ : list of float or None
        With ``early_stopping=True``: the loss on the held-out validation rows after each epoch,
        one value per epoch beside ``validation_scores_`` (across warm starts, as they are);
        None otherwise (and with ``solver="lbfgs"``, absent, as ``loss_curve_``). The same loss
        as ``loss_curve_`` (log-loss: the mean cross-entropy of the softmax outputs, or of each
        logistic output summed over the outputs), computed by the network on the held-out rows
        at the end of the epoch, unweighted (as the validation score: neither ``sample_weight``
        nor ``class_weight`` enters it), and without ``alpha``'s penalty: the penalty does not
        depend on the rows, and ``loss_curve_`` includes it (as scikit-learn's) divided by each
        batch's total weight, which has no counterpart here. An epoch that diverged is NaN.
    network_ : fastgd.Network
        The trained network.
    optimizer_ : fastgd.optimizers.Optimizer
        The stochastic solver's optimizer (absent with "lbfgs").
    learning_rate_ : float or None
        The rate the next epoch would train with.

    Raises
    ------
    fastgd.memory.InsufficientMemoryError
        From ``fit`` and ``partial_fit``, before anything large is allocated, when the network
        and its training buffers would need more memory than this machine has available: a
        ``MemoryError`` and a ``ValueError`` naming ``hidden_layer_sizes`` (or ``batch_size``,
        ``validation_fraction``), the bytes needed and the bytes available.
    """

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        max_fun=15000,
        class_weight=None,
        optimizer_options=None,
        dtype=None,
        backend="numba",
        n_threads=None,
        callbacks=None,
        dropout=0.0,
    ):
        super().__init__(
            hidden_layer_sizes=hidden_layer_sizes,
            activation=activation,
            solver=solver,
            alpha=alpha,
            batch_size=batch_size,
            learning_rate=learning_rate,
            learning_rate_init=learning_rate_init,
            power_t=power_t,
            max_iter=max_iter,
            loss="log_loss",
            shuffle=shuffle,
            random_state=random_state,
            tol=tol,
            verbose=verbose,
            warm_start=warm_start,
            momentum=momentum,
            nesterovs_momentum=nesterovs_momentum,
            early_stopping=early_stopping,
            validation_fraction=validation_fraction,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            n_iter_no_change=n_iter_no_change,
            max_fun=max_fun,
            optimizer_options=optimizer_options,
            dtype=dtype,
            backend=backend,
            n_threads=n_threads,
            callbacks=callbacks,
            dropout=dropout,
        )
        self.class_weight = class_weight

    _parameter_constraints: dict = {
        **_BaseMLP._parameter_constraints,
        "class_weight": [dict, list, StrOptions({"balanced"}), None],
    }

    @property
    def _out_activation(self):
        return "softmax" if self._label_binarizer.y_type_ == "multiclass" else "logistic"

    @property
    def _validation_monitor(self):
        return "val_subset_accuracy" if self._label_binarizer.y_type_.startswith("multilabel") else "val_accuracy"

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(
            self, X, y, accept_sparse=["csr", "csc"], multi_output=True, dtype=(np.float64, np.float32), reset=reset
        )
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        # scikit-learn's rules (MLPClassifier._validate_input), with its messages.
        if not hasattr(self, "classes_") or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            self._check_y_columns(y, incremental)
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError(
                        "warm_start can only be used where `y` has the same classes as in the previous call to fit. "
                        f"Previously got {self.classes_}, `y` has {classes}"
                    )
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(
                    f"`y` has classes not in `self.classes_`. `self.classes_` has {self.classes_}. 'y' has {classes}."
                )
        return X, self._label_binarizer.transform(y).astype(bool)

    def _check_y_columns(self, y, incremental):
        # y shaped as the labels the estimator was fitted on (1-D labels, or an indicator matrix
        # of as many columns): said of y and its columns before the classes are compared.
        fitted = len(self.classes_) if self._label_binarizer.y_type_.startswith("multilabel") else None
        columns = y.shape[1] if y.ndim == 2 else None
        if columns == fitted:
            return
        call = "partial_fit" if incremental else "fit with warm_start=True"
        if fitted is None:
            raise ValueError(
                f"y has {columns} columns (a multilabel indicator matrix), but this estimator was fitted on 1-D class "
                f"labels: {call} needs y as 1-D labels, shape (n_samples,)"
            )
        given = "y is 1-D (class labels)" if columns is None else f"y has {columns} columns"
        raise ValueError(
            f"{given}, but this estimator was fitted on a multilabel indicator y of {fitted} columns: {call} needs "
            f"y with those {fitted} columns, shape (n_samples, {fitted})"
        )

    def _class_weighted(self, Y, sample_weight, incremental):
        """``sample_weight`` (None: ones) times each row's class weight (see ``class_weight``),
        float64; ``sample_weight`` unchanged without ``class_weight``. ``Y``: the binarized
        targets (n_samples, n_outputs)."""
        class_weight = self.class_weight
        if class_weight is None:
            return sample_weight
        balanced = isinstance(class_weight, str)  # (the constraint allows "balanced" only)
        if balanced and incremental:
            raise ValueError(
                "class_weight='balanced' is not supported by partial_fit (one call's rows do not give the classes' "
                "frequencies; SGDClassifier refuses it too): compute the weights once with "
                "sklearn.utils.class_weight.compute_class_weight('balanced', classes=classes, y=y) on enough of "
                "the training targets and pass them as class_weight={class: weight}"
            )
        if self._label_binarizer.y_type_.startswith("multilabel"):
            row_weight = self._multilabel_row_weight(Y, class_weight, sample_weight)
        else:
            if not isinstance(class_weight, (str, dict)):
                raise ValueError(
                    f"class_weight must be a dict {{class: weight}}, 'balanced' or None for 1-D class labels (a list "
                    f"of dicts is for a multilabel y, one per column), got a {type(class_weight).__name__}"
                )
            # Each row's class, as an index into classes_ (binary: one logistic column).
            rows = np.argmax(Y, axis=1) if Y.shape[1] > 1 else Y[:, 0].astype(np.intp)
            if balanced:
                weights = compute_class_weight(
                    "balanced", classes=np.arange(len(self.classes_)), y=rows, sample_weight=sample_weight
                )
            else:
                weights = _class_weights(class_weight, self.classes_.tolist(), "class_weight")
            row_weight = np.asarray(weights, dtype=np.float64)[rows]
        weight = row_weight if sample_weight is None else sample_weight * row_weight
        if not np.any(weight > 0):
            raise ValueError("class_weight (times sample_weight) gives every row a weight of 0: nothing to train on")
        return weight

    def _multilabel_row_weight(self, Y, class_weight, sample_weight):
        # The product over Y's columns of each row's value's weight, as compute_sample_weight
        # (the trees' multi-output rule), each column balanced on its own with "balanced".
        n_columns = Y.shape[1]
        if isinstance(class_weight, dict):
            raise ValueError(
                f"for a multilabel y, class_weight must be 'balanced' or a list of {n_columns} dicts (one per column "
                "of y, keys 0 and 1), as scikit-learn's trees take it; got a single dict"
            )
        if not isinstance(class_weight, str) and len(class_weight) != n_columns:
            raise ValueError(
                f"class_weight must hold one dict per column of y ({n_columns}), got a list of {len(class_weight)}"
            )
        expanded = []
        for column in range(n_columns):
            values = Y[:, column].astype(np.intp)
            if isinstance(class_weight, str):
                present = np.unique(values)
                weights = compute_class_weight("balanced", classes=present, y=values, sample_weight=sample_weight)
                expanded.append(np.asarray(weights, dtype=np.float64)[np.searchsorted(present, values)])
            else:
                weights = _class_weights(class_weight[column], [0, 1], f"class_weight[{column}]")
                expanded.append(np.asarray(weights, dtype=np.float64)[values])
        return np.prod(expanded, axis=0, dtype=np.float64)

    @_unchanged_on_error
    def fit(self, X, y, sample_weight=None):
        """Fit the model to ``X`` (n_samples, n_features), dense or sparse, and the class labels
        (or label indicator matrix) ``y``; ``sample_weight`` (n_samples,) optional."""
        return self._fit(X, y, sample_weight, incremental=False)

    def _check_solver(self):
        if not isinstance(self.solver, str) or self.solver not in STOCHASTIC_SOLVERS:
            raise AttributeError(
                f"partial_fit is only available for stochastic optimizers. {self.solver} is not stochastic."
            )
        return True

    @available_if(lambda est: est._check_solver())
    @_unchanged_on_error
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over ``(X, y)``; ``classes`` (every class of all the calls) is required on
        the first call."""
        if _first_partial_call(self, classes):
            self._label_binarizer = LabelBinarizer()
            if type_of_target(y).startswith("multilabel"):
                self._label_binarizer.fit(y)
            else:
                self._label_binarizer.fit(classes)
        return self._fit(X, y, sample_weight, incremental=True)

    def predict(self, X):
        """Class labels (n_samples,), or an indicator matrix for multilabel targets."""
        outputs = self._forward(X)
        if self.n_outputs_ == 1:
            outputs = outputs.ravel()
        return self._label_binarizer.inverse_transform(outputs)

    def predict_proba(self, X):
        """Class probabilities (n_samples, n_classes), in the order of ``classes_``."""
        outputs = self._forward(X)
        if self.n_outputs_ == 1:
            outputs = outputs.ravel()
        if outputs.ndim == 1:
            return np.vstack([1 - outputs, outputs]).T
        return outputs

    def predict_log_proba(self, X):
        """``log(predict_proba(X))``."""
        probabilities = self.predict_proba(X)
        return np.log(probabilities, out=probabilities)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


def _class_weights(weights, classes, name) -> list:
    """A ``{class: weight}`` dict as one float per class of ``classes`` (a list), 1 for a class
    it leaves out; a TypeError/ValueError naming ``name`` (and the key) for a key that is not a
    class, a weight that is not a real number, negative or not finite."""
    if not isinstance(weights, dict):
        raise TypeError(f"{name} must be a dict {{class: weight}}, got {type(weights).__name__}")
    unknown = [key for key in weights if not any(key == label for label in classes)]
    if unknown:
        raise ValueError(f"{name} has weights for {unknown}, which are not among the classes {classes}")
    checked = {}
    for key, weight in weights.items():
        if isinstance(weight, (bool, np.bool_)) or not isinstance(weight, Real):
            raise TypeError(f"{name}[{key!r}] must be a real number, got {type(weight).__name__}")
        try:
            value = float(weight)
        except OverflowError:  # an integer beyond any float
            value = math.inf
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name}[{key!r}] must be a finite number >= 0, got {weight!r}")
        checked[key] = value
    return [next((weight for key, weight in checked.items() if key == label), 1.0) for label in classes]


def _first_partial_call(clf, classes) -> bool:
    # scikit-learn's _check_partial_fit_first_call, with its messages.
    if getattr(clf, "classes_", None) is None and classes is None:
        raise ValueError("classes must be passed on the first call to partial_fit.")
    if classes is not None:
        if getattr(clf, "classes_", None) is not None:
            if not np.array_equal(clf.classes_, unique_labels(classes)):
                raise ValueError(
                    f"`classes={classes!r}` is not the same as on last call to partial_fit, was: {clf.classes_!r}"
                )
        else:
            clf.classes_ = unique_labels(classes)
            return True
    return False


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor: scikit-learn's ``MLPRegressor``, trained by fastgd.

    Parameters and attributes as :class:`MLPClassifier` (no ``class_weight``, no ``classes_``),
    and ``loss``.

    Parameters
    ----------
    loss : {"squared_error", "poisson"}, default "squared_error"
        "squared_error": identity outputs, ½ the squared error (summed over the outputs,
        averaged over the rows); "poisson": exp outputs, half the Poisson deviance (targets must
        be >= 0).
    hidden_layer_sizes, activation, solver, alpha, batch_size, learning_rate, learning_rate_init, power_t, max_iter,
    shuffle, random_state, tol, verbose, warm_start, momentum, nesterovs_momentum, early_stopping, validation_fraction,
    beta_1, beta_2, epsilon, n_iter_no_change, max_fun, optimizer_options, dtype, backend, n_threads
        As :class:`MLPClassifier`'s.
    callbacks : callable, fastgd.callbacks.Callback, or a list of them, optional
        As :class:`MLPClassifier`'s: run after every epoch of a stochastic solver (the fit's
        ``History`` holds ``val_loss`` and ``val_score``, the R², with ``early_stopping``).

    Attributes
    ----------
    loss_, best_loss_, loss_curve_, validation_scores_, best_validation_score_, t_, coefs_, intercepts_,
    n_features_in_, feature_names_in_, n_iter_, n_layers_, n_outputs_, out_activation_
        scikit-learn's.
    validation_loss_curve_ : list of float or None
        With ``early_stopping=True``: the loss on the held-out validation rows after each epoch
        (``loss``'s: ½ the squared error summed over the outputs, or half the Poisson deviance,
        averaged over the held-out rows), as :class:`MLPClassifier`'s: unweighted, without
        ``alpha``'s penalty; None otherwise.
    network_, optimizer_, learning_rate_
        As :class:`MLPClassifier`'s.
    """

    _parameter_constraints: dict = {
        **_BaseMLP._parameter_constraints,
        "loss": [StrOptions({"squared_error", "poisson"})],
    }

    def __init__(
        self,
        loss="squared_error",
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        max_fun=15000,
        optimizer_options=None,
        dtype=None,
        backend="numba",
        n_threads=None,
        callbacks=None,
        dropout=0.0,
    ):
        super().__init__(
            hidden_layer_sizes=hidden_layer_sizes,
            activation=activation,
            solver=solver,
            alpha=alpha,
            batch_size=batch_size,
            learning_rate=learning_rate,
            learning_rate_init=learning_rate_init,
            power_t=power_t,
            max_iter=max_iter,
            loss=loss,
            shuffle=shuffle,
            random_state=random_state,
            tol=tol,
            verbose=verbose,
            warm_start=warm_start,
            momentum=momentum,
            nesterovs_momentum=nesterovs_momentum,
            early_stopping=early_stopping,
            validation_fraction=validation_fraction,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            n_iter_no_change=n_iter_no_change,
            max_fun=max_fun,
            optimizer_options=optimizer_options,
            dtype=dtype,
            backend=backend,
            n_threads=n_threads,
            callbacks=callbacks,
            dropout=dropout,
        )

    _validation_monitor = "val_r2"

    @property
    def _out_activation(self):
        return "exp" if self.loss == "poisson" else "identity"

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(
            self,
            X,
            y,
            accept_sparse=["csr", "csc"],
            multi_output=True,
            y_numeric=True,
            dtype=(np.float64, np.float32),
            reset=reset,
        )
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if not reset:
            # y shaped as the targets the estimator was fitted on: said of y and its columns.
            fitted, columns = self.n_outputs_, (y.shape[1] if y.ndim == 2 else 1)
            if columns != fitted:
                call = "partial_fit" if incremental else "fit with warm_start=True"
                given = "y is 1-D (one target)" if y.ndim == 1 else f"y has {columns} columns"
                was = "a 1-D y (one target)" if fitted == 1 else f"y with {fitted} columns"
                shape = "(n_samples,)" if fitted == 1 else f"(n_samples, {fitted})"
                raise ValueError(f"{given}, but this estimator was fitted on {was}: {call} needs y of shape {shape}")
        return X, y

    @_unchanged_on_error
    def fit(self, X, y, sample_weight=None):
        """Fit the model to ``X`` (n_samples, n_features), dense or sparse, and the targets ``y``
        (n_samples,) or (n_samples, n_outputs); ``sample_weight`` (n_samples,) optional."""
        return self._fit(X, y, sample_weight, incremental=False)

    @_unchanged_on_error
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over ``(X, y)`` (with ``solver="lbfgs"``, as scikit-learn: an L-BFGS fit
        from the current parameters)."""
        return self._fit(X, y, sample_weight, incremental=True)

    def predict(self, X):
        """Predictions (n_samples,), or (n_samples, n_outputs) for several targets."""
        outputs = self._forward(X)
        return outputs.ravel() if outputs.shape[1] == 1 else outputs
