"""asv benchmarks of fastgd's training, every figure lower-is-better.

The workloads are defined here with fastgd's public API only (``Network``, the optimizers,
``fit``, ``predict``), so that any commit with that API can be benchmarked (backfilling history
with ``asv run``), and every benchmark's ``version`` is a hash of its workloads' definitions: a
changed workload starts a new series instead of bending an old one.

* ``Training.time_fit``: seconds for a fit of the workload's steps (Numba backend, one thread:
  pinned, since thread counts differ between machines and a shared machine's second core is the
  noisiest part of a measurement).
* ``Training.track_fit_allocation``: bytes the fit itself allocates at its peak (tracemalloc,
  which sees NumPy's buffers), beside ``peakmem_fit``, the whole process's peak (import and
  compilation included).
* ``TwoThreads.time_fit``: the ``mid`` fit on two threads.
* ``RatioToNumPy.track_time_ratio``: fastgd's time over its NumPy backend's, best of 3 each,
  interleaved in one process: 0.01 means 100x faster.
* ``Accuracy.track_digits_error``: the digits recipe's test error (1 − accuracy), mean of five
  train/test splits: deterministic, so any change is a real one.
* ``EpochWork.time_fit``: the digits network's fit bare, with validation data, early stopping,
  both, or a per-epoch callback (what ``python -m fastgd bench --epoch-work`` compares).
* ``GridSearch.time_search``: scikit-learn's ``GridSearchCV`` with ``fastgd.sklearn.MLPClassifier``
  (``python -m fastgd bench --grid``'s warm run); skipped where scikit-learn is not installed.

Compilation (or loading the compile cache) happens in ``setup``, outside the timings.
"""

import hashlib
import json
import time
import tracemalloc

import numpy as np

import fastgd

# name -> (layer sizes, dtype, optimizer class and options, batch size, rows, epochs, loss)
WORKLOADS = {
    "xor": dict(
        sizes=[2, 4, 1], dtype="float64", optimizer=["SGD", {"lr": 0.1}], batch=None, rows=4, epochs=20000, loss="sse"
    ),
    "small": dict(
        sizes=[32, 64, 1], dtype="float32", optimizer=["SGD", {"lr": 0.1}], batch=32, rows=2048, epochs=32, loss="mse"
    ),
    "mid": dict(
        sizes=[784, 256, 128, 10],
        dtype="float32",
        optimizer=["Adam", {"lr": 1e-3}],
        batch=256,
        rows=8192,
        epochs=1,
        loss="mse",
    ),
    "large": dict(
        sizes=[1024, 2048, 2048, 16],
        dtype="float32",
        optimizer=["SGD", {"lr": 0.01, "momentum": 0.9}],
        batch=4096,
        rows=4096,
        epochs=1,
        loss="mse",
    ),
    "digits": dict(
        sizes=[64, 64, 10],
        dtype="float32",
        optimizer=["Adam", {"lr": 1e-3}],
        batch=32,
        rows=1347,
        epochs=40,
        loss="crossentropy",
    ),
}


def _version(*names):
    spec = json.dumps({name: WORKLOADS[name] for name in names}, sort_keys=True)
    return hashlib.sha256(spec.encode()).hexdigest()[:16]


def _data(name):
    spec = WORKLOADS[name]
    if name == "digits":
        from fastgd.datasets import load_digits

        X, _, y, _ = load_digits()
        return X.astype(spec["dtype"]), y
    rng = np.random.default_rng(0)
    sizes = spec["sizes"]
    if name == "xor":
        return np.array([[0, 0], [0, 1], [1, 0], [1, 1]], float), np.array([[0], [1], [1], [0]], float)
    X = rng.standard_normal(size=(spec["rows"], sizes[0])).astype(spec["dtype"])
    return X, rng.random(size=(spec["rows"], sizes[-1])).astype(spec["dtype"])


def _network(name, backend="numba", n_threads=1):
    spec = WORKLOADS[name]
    return fastgd.Network(
        spec["sizes"],
        activation="sigmoid",
        loss=spec["loss"],
        dtype=spec["dtype"],
        random_state=0,
        backend=backend,
        n_threads=n_threads,
    )


def _optimizer(name):
    cls, options = WORKLOADS[name]["optimizer"]
    return getattr(fastgd, cls)(**options)


class _Fit:
    """A workload ready to train: data, a network, compiled kernels."""

    def __init__(self, name, backend="numba", n_threads=1):
        self.name, self.spec = name, WORKLOADS[name]
        self.X, self.y = _data(name)
        self.net = _network(name, backend, n_threads)
        rows = self.spec["batch"] or len(self.X)
        # Compile (or load the cache) outside the measurement.
        self.net.copy().fit(
            self.X[:rows], self.y[:rows], optimizer=_optimizer(name), epochs=1, batch_size=self.spec["batch"]
        )

    def __call__(self):
        self.net.copy().fit(
            self.X,
            self.y,
            optimizer=_optimizer(self.name),
            epochs=self.spec["epochs"],
            batch_size=self.spec["batch"],
            shuffle=False,
        )


# Every timed fit lasts at least ~20 ms (shorter ones were at the mercy of the scheduler: a 2.7 ms
# fit read 4.1 ± 1 ms in one run of identical code), and half a second of warm-up runs first.
class _TimedFit:
    # asv's timing settings of the time_fit benchmarks (a base without benchmarks of its own).
    number = 1
    repeat = (5, 20, 60.0)
    min_run_count = 5
    rounds = 2
    warmup_time = 0.5
    timeout = 600


class Training(_TimedFit):
    params = list(WORKLOADS)
    param_names = ["workload"]
    version = _version(*WORKLOADS)

    def setup(self, workload):
        self.fit = _Fit(workload)

    def time_fit(self, workload):
        self.fit()

    def track_fit_allocation(self, workload):
        tracemalloc.start()
        try:
            self.fit()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    track_fit_allocation.unit = "bytes"

    def peakmem_fit(self, workload):
        self.fit()


class TwoThreads(_TimedFit):
    params = ["mid"]
    param_names = ["workload"]
    version = _version("mid")

    def setup(self, workload):
        self.fit = _Fit(workload, n_threads=2)

    def time_fit(self, workload):
        self.fit()


class RatioToNumPy:
    params = ["xor", "small", "digits"]
    param_names = ["workload"]
    version = _version("xor", "small", "digits")
    repeat = 1
    number = 1
    rounds = 2
    warmup_time = 0
    timeout = 600

    def setup(self, workload):
        self.fits = {backend: _Fit(workload, backend) for backend in ("numba", "numpy")}

    def track_time_ratio(self, workload):
        best = {backend: np.inf for backend in self.fits}
        for _ in range(3):
            for backend, fit in self.fits.items():
                start = time.perf_counter()
                fit()
                best[backend] = min(best[backend], time.perf_counter() - start)
        return best["numba"] / best["numpy"]

    track_time_ratio.unit = "time ratio"


class Accuracy:
    version = "digits-recipe-1"
    repeat = 1
    number = 1
    rounds = 1
    warmup_time = 0
    timeout = 600

    def setup(self):
        _Fit("digits")

    def track_digits_error(self):
        from fastgd.datasets import load_digits

        errors = []
        for split in range(5):
            X_train, X_test, y_train, y_test = load_digits(random_state=split)
            net = fastgd.Network(
                [64, 64, 10], activation="sigmoid", loss="crossentropy", dtype="float32", random_state=0
            )
            net.fit(X_train, y_train, optimizer=fastgd.Adam(lr=1e-3), epochs=200, batch_size=32)
            errors.append(float(np.mean(net.predict(X_test).argmax(axis=1) != y_test)))
        return float(np.mean(errors))

    track_digits_error.unit = "error rate"


# The per-epoch work users add to a fit (``python -m fastgd bench --epoch-work`` measures the same
# against the bare fit, interleaved): the digits network, 200 epochs of 1 200 rows.
EPOCH_WORK = dict(
    sizes=[64, 100, 10],
    activation="relu",
    dtype="float32",
    optimizer=["Adam", {"lr": 1e-3}],
    batch=200,
    rows=1200,
    epochs=200,
    validation_rows=300,
    patience=1000,
)


def _no_op_callback(epoch, history, network):
    return None


class EpochWork(_TimedFit):
    """A digits fit bare, with validation data, with early stopping (patience longer than the
    fit, so every variant trains the same epochs), both, and with a per-epoch callback."""

    params = ["bare", "validation", "early_stopping", "both", "callback"]
    param_names = ["variant"]
    version = hashlib.sha256(json.dumps(EPOCH_WORK, sort_keys=True).encode()).hexdigest()[:16]

    def setup(self, variant):
        from fastgd.datasets import load_digits

        spec = EPOCH_WORK
        X_train, X_val, y_train, y_val = load_digits()
        self.X, self.y = X_train[: spec["rows"]].astype(spec["dtype"]), y_train[: spec["rows"]]
        validation = (X_val[: spec["validation_rows"]], y_val[: spec["validation_rows"]])
        patience = spec["patience"]
        self.options = {
            "bare": {},
            "validation": dict(validation_data=validation),
            "early_stopping": dict(early_stopping=True, patience=patience),
            "both": dict(validation_data=validation, early_stopping=True, patience=patience),
            "callback": dict(callbacks=[_no_op_callback]),
        }[variant]
        self.net = fastgd.Network(
            spec["sizes"],
            activation=spec["activation"],
            loss="crossentropy",
            dtype=spec["dtype"],
            random_state=0,
            n_threads=1,
        )
        self._fit(epochs=1)  # compile (or load the cache) outside the measurement

    def _fit(self, epochs):
        cls, options = EPOCH_WORK["optimizer"]
        self.net.copy().fit(
            self.X,
            self.y,
            optimizer=getattr(fastgd, cls)(**options),
            epochs=epochs,
            batch_size=EPOCH_WORK["batch"],
            **self.options,
        )

    def time_fit(self, variant):
        self._fit(EPOCH_WORK["epochs"])


# scikit-learn's GridSearchCV with fastgd's estimator, as ``python -m fastgd bench --grid`` runs
# it (there against scikit-learn's own): activation x solver on the digits, 3 folds.
GRID = dict(
    param_grid={"activation": ["relu", "tanh", "logistic"], "solver": ["sgd", "adam"]},
    cv=3,
    hidden_layer_sizes=[100],
    max_iter=200,
    random_state=0,
)


class GridSearch:
    version = hashlib.sha256(json.dumps(GRID, sort_keys=True).encode()).hexdigest()[:16]
    number = 1
    repeat = (1, 3, 120.0)
    rounds = 1
    warmup_time = 0
    timeout = 900

    def setup(self):
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise NotImplementedError("scikit-learn is not installed") from None  # asv skips the benchmark
        self.X, self.y = load_digits(return_X_y=True)
        self._search()  # compile (or load the cache) outside the measurement

    def _search(self):
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.model_selection import GridSearchCV

        from fastgd.sklearn import MLPClassifier

        model = MLPClassifier(
            hidden_layer_sizes=tuple(GRID["hidden_layer_sizes"]),
            max_iter=GRID["max_iter"],
            random_state=GRID["random_state"],
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            GridSearchCV(model, GRID["param_grid"], cv=GRID["cv"]).fit(self.X, self.y)

    def time_search(self):
        self._search()
