"""scikit-learn estimators backed by fastgd: ``MLPClassifier`` and ``MLPRegressor``.

Importing this module imports scikit-learn (an optional extra: ``pip install "fastgd[sklearn]"``);
``import fastgd`` alone does not. The parameters follow scikit-learn's ``MLPClassifier`` /
``MLPRegressor`` where fastgd has the same thing, so the estimators drop into ``Pipeline`` and
``GridSearchCV``.
"""

from __future__ import annotations

import functools
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .network import Network
from .optimizers import OPTIMIZERS

# scikit-learn's activation names -> fastgd's.
_ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu", "leaky_relu": "leaky_relu"}


def _unchanged_on_error(method):
    """Run a fit method so that when it raises, the estimator is exactly as it was: every
    attribute it had, and none it did not (training works on new objects or copies, so a
    shallow snapshot suffices). Parameters are validated first, by scikit-learn's own
    ``_parameter_constraints`` machinery."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        snapshot = dict(self.__dict__)
        try:
            self._validate_params()
            self._check_hidden_sizes()
            return method(self, *args, **kwargs)
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(snapshot)
            raise

    return wrapper


class _BaseMLP(BaseEstimator):
    _parameter_constraints: dict = {
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "activation": [StrOptions({"identity", "logistic", "tanh", "relu", "leaky_relu"})],
        "solver": [StrOptions(set(OPTIMIZERS))],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "batch_size": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval(Real, 0, None, closed="left")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "optimizer_options": [dict, None],
        "dtype": [StrOptions({"float32", "float64"})],
        "backend": [StrOptions({"numba", "numpy"})],
        "n_threads": [Interval(Integral, 1, None, closed="left"), None],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        activation="relu",
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate_init=0.001,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=10,
        optimizer_options=None,
        dtype="float64",
        backend="numba",
        n_threads=None,
        verbose=0,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.optimizer_options = optimizer_options
        self.dtype = dtype
        self.backend = backend
        self.n_threads = n_threads
        self.verbose = verbose

    # -- helpers ------------------------------------------------------------------------------

    def _hidden(self):
        sizes = self.hidden_layer_sizes
        if isinstance(sizes, (int, np.integer)) and not isinstance(sizes, (bool, np.bool_)):
            sizes = (sizes,)
        if isinstance(sizes, (str, bytes)) or not isinstance(sizes, (tuple, list, np.ndarray)):
            raise TypeError(f"hidden_layer_sizes must be an int or a sequence of ints, got {type(sizes).__name__}")
        for size in sizes:
            if isinstance(size, (bool, np.bool_)) or not isinstance(size, (int, np.integer)):
                raise TypeError(f"hidden_layer_sizes must hold ints, got {size!r}")
            if size < 1:
                raise ValueError(f"hidden_layer_sizes must hold ints >= 1, got {size!r}")
        return [int(s) for s in sizes]

    def _check_hidden_sizes(self):
        self._hidden()
        if self.optimizer_options is not None:
            # Build one optimizer now, so that a bad option is refused before anything changes.
            OPTIMIZERS[self.solver](lr=self.learning_rate_init, **self.optimizer_options)

    def _make_network(self, n_features, n_outputs):
        self.optimizer_ = OPTIMIZERS[self.solver](lr=self.learning_rate_init, **(self.optimizer_options or {}))
        self.network_ = Network(
            [n_features, *self._hidden(), n_outputs],
            activation=_ACTIVATIONS[self.activation],
            output_activation=self._output_activation,
            loss=self._loss,
            dtype=self.dtype,
            random_state=self.random_state,
            backend=self.backend,
            n_threads=self.n_threads,
            l2=self.alpha,
        )

    def _batch(self, n):
        if self.batch_size == "auto":
            return min(200, n)
        return self.batch_size

    def _fit(self, X, Y, incremental):
        if not incremental or not hasattr(self, "network_"):
            self._make_network(X.shape[1], Y.shape[1])
            self.loss_curve_, self.validation_scores_ = [], []
            self.best_loss_ = np.inf
        else:
            # Train a copy: if this call fails, the estimator keeps the network it had.
            self.network_ = self.network_.copy()
            self.optimizer_ = self.network_.optimizer or self.optimizer_
            self.loss_curve_, self.validation_scores_ = list(self.loss_curve_), list(self.validation_scores_)
        validation = self.early_stopping and not incremental
        history = self.network_.fit(
            X,
            Y,
            optimizer=self.optimizer_,
            epochs=1 if incremental else self.max_iter,
            batch_size=self._batch(X.shape[0]),
            shuffle=self.shuffle,
            validation_split=self.validation_fraction if validation else None,
            early_stopping=not incremental,
            patience=self.n_iter_no_change,
            min_delta=self.tol,
            restore_best=validation,
            verbose=self.verbose,
        )
        self.loss_curve_ += history.loss
        self.validation_scores_ += self._validation_scores(history, Y)
        self.best_loss_ = min([self.best_loss_, *history.loss])
        self.loss_ = history.loss[-1]
        self.n_iter_ = len(self.loss_curve_)
        self.t_ = self.network_.optimizer_steps
        return self

    # -- scikit-learn's fitted attributes, read from the network --------------------------------

    @property
    def coefs_(self):
        """Weight matrices, ``(n_in, n_out)`` per layer, input layer first, as scikit-learn's
        ``coefs_``: views into the network's parameters (writing into them changes the model)."""
        check_is_fitted(self, "network_")
        return list(self.network_.weights)

    @property
    def intercepts_(self):
        """Bias vectors, ``(n_out,)`` per layer, as scikit-learn's ``intercepts_`` (views)."""
        check_is_fitted(self, "network_")
        return list(self.network_.biases)

    @property
    def n_layers_(self):
        """Layers counting the input layer, as scikit-learn's ``n_layers_``."""
        check_is_fitted(self, "network_")
        return len(self.network_.layer_sizes)

    @property
    def n_outputs_(self):
        check_is_fitted(self, "network_")
        return self.network_.layer_sizes[-1]

    @property
    def out_activation_(self):
        check_is_fitted(self, "network_")
        return self._output_activation

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        return tags


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier trained by fastgd (softmax output, cross-entropy loss).

    Parameters are scikit-learn's ``MLPClassifier``'s where they mean the same, plus:

    - ``solver``: any fastgd optimizer name (adam, adamw, sgd, momentum, rmsprop, adagrad), built
      with ``lr=learning_rate_init`` and ``optimizer_options`` (e.g. ``{"momentum": 0.9}``);
    - ``alpha``: fastgd's ``l2`` penalty, ``(alpha/2)·ΣW²`` added to every batch's mean loss
      (scikit-learn divides it by the number of samples instead);
    - training stops when the training loss (or with ``early_stopping``, the loss on the last
      ``validation_fraction`` of the rows) has not improved by ``tol`` for ``n_iter_no_change``
      epochs; with ``early_stopping`` the best weights are restored;
    - ``dtype``, ``backend``, ``n_threads``: as for :class:`fastgd.Network`.

    Attributes: ``classes_``, ``coefs_`` and ``intercepts_`` (views into the network's weights and
    biases, laid out as scikit-learn's), ``n_layers_``, ``n_outputs_``, ``out_activation_``,
    ``n_iter_``, ``loss_curve_``, ``validation_scores_`` (validation accuracy per epoch with
    ``early_stopping``), ``best_loss_``, ``loss_``, ``t_``, ``n_features_in_``, ``network_`` (the
    trained :class:`fastgd.Network`).
    """

    _loss = "crossentropy"
    _output_activation = "softmax"

    @_unchanged_on_error
    def fit(self, X, y):
        X, y = validate_data(self, X, y, dtype=np.float64, reset=True)
        check_classification_targets(y)
        self.classes_ = np.unique(y)
        return self._fit(X, self._one_hot(y), incremental=False)

    @_unchanged_on_error
    def partial_fit(self, X, y, classes=None):
        first = not hasattr(self, "classes_")
        X, y = validate_data(self, X, y, dtype=np.float64, reset=first)
        check_classification_targets(y)
        if first:
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit")
            self.classes_ = np.unique(classes)
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError("classes differ from those of the first call to partial_fit")
        return self._fit(X, self._one_hot(y), incremental=True)

    def _one_hot(self, y):
        if len(self.classes_) < 2:
            raise ValueError(f"MLPClassifier needs at least 2 classes in y; got {len(self.classes_)} class")
        index = np.searchsorted(self.classes_, y)
        if np.any(index >= len(self.classes_)) or np.any(self.classes_[np.minimum(index, len(self.classes_) - 1)] != y):
            raise ValueError("y holds labels not seen in classes")
        return np.eye(len(self.classes_))[index]

    def _validation_scores(self, history, Y):
        return list(history.val_accuracy)

    def predict_proba(self, X):
        check_is_fitted(self, "network_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return self.network_.predict(X).astype(np.float64)

    def predict(self, X):
        probabilities = self.predict_proba(X)
        return self.classes_[np.argmax(probabilities, axis=1)]


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor trained by fastgd (identity output, ``mse`` loss).

    Parameters and attributes as :class:`MLPClassifier` (no ``classes_``); the default
    ``activation`` is relu. ``validation_scores_`` holds the R² on the validation rows per epoch
    with ``early_stopping`` (variance-weighted over outputs).
    """

    _loss = "mse"
    _output_activation = "identity"

    @_unchanged_on_error
    def fit(self, X, y):
        X, y = validate_data(self, X, y, dtype=np.float64, multi_output=True, y_numeric=True, reset=True)
        return self._fit(X, self._columns(y), incremental=False)

    @_unchanged_on_error
    def partial_fit(self, X, y):
        first = not hasattr(self, "network_")
        X, y = validate_data(self, X, y, dtype=np.float64, multi_output=True, y_numeric=True, reset=first)
        return self._fit(X, self._columns(y), incremental=True)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _columns(self, y):
        self._single_output = y.ndim == 1
        return y.reshape(-1, 1) if y.ndim == 1 else y

    def _validation_scores(self, history, Y):
        if not history.val_loss:
            return []
        n_val = int(np.ceil(self.validation_fraction * Y.shape[0]))
        Y_val = Y[-n_val:]
        total = float(((Y_val - Y_val.mean(axis=0)) ** 2).sum())
        # val_loss is (1/2n) Σ ‖a − y‖², so Σ (a − y)² = 2n · val_loss.
        return [1.0 - 2 * n_val * loss / total if total > 0 else 0.0 for loss in history.val_loss]

    def predict(self, X):
        check_is_fitted(self, "network_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        out = self.network_.predict(X).astype(np.float64)
        return out.ravel() if self._single_output else out
