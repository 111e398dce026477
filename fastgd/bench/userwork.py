"""Benchmarks of the work users run, not of single steps: ``python -m fastgd bench --grid`` and
``--epoch-work``.

``grid`` (scikit-learn's estimators against fastgd's, the one import line changed):
``GridSearchCV`` over ``activation`` (relu, tanh, logistic) × ``solver`` (sgd, adam) on the
digits (all 1 797 images, ``load_digits``), 3 folds, ``hidden_layer_sizes=(100,)``,
``max_iter=200``, ``random_state=0``, everything else scikit-learn's defaults (so ``tol`` stops
most fits early). Each run is a fresh process: scikit-learn; fastgd with its compile cache warm;
fastgd with an empty cache (a new temporary ``NUMBA_CACHE_DIR``, so every kernel it needs is
compiled inside the timing); and fastgd warm with ``n_jobs=2``. The
time is the search's (``search.fit``), not the import's. Rounds are interleaved, the best kept;
the table gives each setting's mean CV accuracy for both libraries.

``dropout_cost`` (``--dropout``): µs per step with dropout 0.2 and 0.5 on every hidden layer
against none, for the MNIST-sized network (784-256-128-10 relu, float32, Adam, batch 256) and
the digits network (64-100-10 relu, float32, Adam, batch 200), in one warm process, rounds
interleaved, best kept.

``epoch_work``: the digits network (64-100-10, relu, softmax/cross-entropy, float32, Adam,
batch 200, 200 epochs on 1 200 rows): a bare fit, with validation data (300 held-out rows, a
quarter as many as it trains on),
with early stopping on the training loss (patience 1 000: it never stops, so every variant
trains 200 epochs), both (early stopping on the validation loss), and with a per-epoch callback
that does nothing; each variant's time over the
bare fit's; and fastgd's ``MLPClassifier`` with its default ``tol`` against a bare fit of as many
epochs as it ran; then what validation costs per epoch for 16, 100, 300 and 450 validation rows
(the fit with that many, less the bare fit, over its epochs), and per validation row (the slope
from 16 to 450 rows). Measured in one warm process,
interleaved, best of the rounds.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import tempfile

GRID_TIMEOUT = 1800

_GRID_CHILD = """
import json, sys, time, warnings
library, n_jobs = sys.argv[1], int(sys.argv[2])
start = time.perf_counter()
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV
if library == "sklearn":
    from sklearn.neural_network import MLPClassifier
else:
    from fastgd.sklearn import MLPClassifier
X, y = load_digits(return_X_y=True)
grid = {"activation": ["relu", "tanh", "logistic"], "solver": ["sgd", "adam"]}
search = GridSearchCV(MLPClassifier(hidden_layer_sizes=(100,), max_iter=200, random_state=0), grid, cv=3, n_jobs=n_jobs)
imported = time.perf_counter()
with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)
    search.fit(X, y)
done = time.perf_counter()
results = search.cv_results_
scores = {p["activation"] + "/" + p["solver"]: float(s) for p, s in zip(results["params"], results["mean_test_score"])}
print(json.dumps({"import_seconds": imported - start, "search_seconds": done - imported, "scores": scores}))
"""

GRID_RUNS = (
    ("scikit-learn", "sklearn", 1, False),
    ("fastgd warm", "fastgd", 1, False),
    ("fastgd cold", "fastgd", 1, True),
    ("fastgd warm n_jobs=2", "fastgd", 2, False),
)


def _grid_run(library, n_jobs, cold):
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="fastgd-cold-") as empty:
        if cold:
            env.update(NUMBA_CACHE_DIR=empty)
        done = subprocess.run(
            [sys.executable, "-c", _GRID_CHILD, library, str(n_jobs)],
            capture_output=True,
            text=True,
            timeout=GRID_TIMEOUT,
            env=env,
        )
    if done.returncode != 0:
        raise RuntimeError(f"the grid search with {library} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def grid(repeats=2, out=None):
    """The grid search above (module docstring); prints the table and returns the best runs."""
    import sklearn

    from ..diagnostics import cpu_name

    # A warm cache for the warm runs: one search beforehand (its time is not counted).
    _grid_run("fastgd", 1, False)
    best = {}
    for _ in range(repeats):
        for label, library, n_jobs, cold in GRID_RUNS:
            result = _grid_run(library, n_jobs, cold)
            if label not in best or result["search_seconds"] < best[label]["search_seconds"]:
                best[label] = result
    print(
        f"{datetime.date.today()}  CPU: {cpu_name()} ({os.cpu_count()} logical cores); scikit-learn "
        f"{sklearn.__version__}; "
        f"GridSearchCV activation x solver on the digits, 3 folds, best of {repeats} interleaved rounds, a process "
        "each",
        file=out,
    )
    base = best["scikit-learn"]["search_seconds"]
    header = f"{'run':<22} {'search s':>9} {'vs scikit-learn':>16}"
    print(header, file=out)
    print("-" * len(header), file=out)
    for label, _, _, _ in GRID_RUNS:
        seconds = best[label]["search_seconds"]
        print(f"{label:<22} {seconds:>9.2f} {base / seconds:>15.2f}x", file=out)
    one, two = best["fastgd warm"]["search_seconds"], best["fastgd warm n_jobs=2"]["search_seconds"]
    print(f"fastgd n_jobs=2 against n_jobs=1: {one / two:.2f}x", file=out)
    print(f"{'mean CV accuracy':<22} {'scikit-learn':>12} {'fastgd':>8} {'difference':>11}", file=out)
    ours, theirs = best["fastgd warm"]["scores"], best["scikit-learn"]["scores"]
    for setting in theirs:
        print(
            f"{setting:<22} {theirs[setting]:>12.4f} {ours[setting]:>8.4f} {ours[setting] - theirs[setting]:>+11.4f}",
            file=out,
        )
    return best


def epoch_work(repeats=5, out=None):
    """The per-epoch-work benchmark (module docstring); prints and returns each variant's ratio
    to the bare fit."""
    import time

    import numpy as np

    from ..datasets import load_digits
    from ..network import Network
    from ..optimizers import Adam
    from ..training import EarlyStopping

    X_train, X_val, y_train, y_val = load_digits()
    X_train, y_train = X_train[:1200].astype(np.float32), y_train[:1200]
    X_val, y_val = X_val[:300], y_val[:300]

    def callback(epoch, history, network):
        return None

    variants = {
        "bare": {},
        "validation": dict(validation_data=(X_val, y_val)),
        "early stopping": dict(early_stopping=EarlyStopping(patience=1000)),
        "both": dict(validation_data=(X_val, y_val), early_stopping=EarlyStopping(patience=1000, monitor="val_loss")),
        "callback": dict(callbacks=[callback]),
    }
    # (validation of these many rows, for its cost per epoch)
    rows_counts = (16, 100, 300, 450)
    variants.update(
        {f"validation {rows} rows": dict(validation_data=(X_val[:rows], y_val[:rows])) for rows in rows_counts}
    )

    def fit(options):
        net = Network([64, 100, 10], activation="relu", loss="crossentropy", dtype="float32", random_state=0)
        start = time.perf_counter()
        net.fit(X_train, y_train, optimizer=Adam(lr=1e-3), epochs=200, batch_size=200, **options)
        return time.perf_counter() - start

    import warnings

    from sklearn.exceptions import ConvergenceWarning

    from ..sklearn import MLPClassifier

    def estimator():
        # scikit-learn's estimator with its default tol (it stops when the training loss has
        # not improved by 1e-4 for 10 epochs): timed against a bare fit of as many epochs.
        model = MLPClassifier(hidden_layer_sizes=(100,), batch_size=200, random_state=0)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(X_train, y_train)
        return time.perf_counter() - start, model.n_iter_

    def bare(epochs):
        net = Network([64, 100, 10], activation="relu", loss="crossentropy", dtype="float32", random_state=0)
        start = time.perf_counter()
        net.fit(X_train, y_train, optimizer=Adam(lr=1e-3), epochs=epochs, batch_size=200)
        return time.perf_counter() - start

    for options in variants.values():
        fit(options)  # compile (or load) first
    epochs = estimator()[1]
    bare(epochs)
    best = {}
    for _ in range(repeats):
        for name, options in variants.items():
            best[name] = min(best.get(name, float("inf")), fit(options))
        best["estimator"] = min(best.get("estimator", float("inf")), estimator()[0])
        best["bare, as many epochs"] = min(best.get("bare, as many epochs", float("inf")), bare(epochs))
    print(
        f"{datetime.date.today()}  digits 64-100-10 relu float32, Adam, batch 200, 200 epochs of 1 200 rows; "
        f"best of {repeats} interleaved rounds",
        file=out,
    )
    by_rows = {name for name in variants if name.endswith(" rows")}
    for name in variants:
        if name not in by_rows:
            print(f"{name:<16} {best[name] * 1e3:>8.1f} ms {best[name] / best['bare']:>6.2f}x the bare fit", file=out)
    ratio = best["estimator"] / best["bare, as many epochs"]
    print(
        f"{'estimator (tol)':<16} {best['estimator'] * 1e3:>8.1f} ms {ratio:>6.2f}x a bare fit of its {epochs} epochs "
        f"({best['bare, as many epochs'] * 1e3:.1f} ms)",
        file=out,
    )
    costs = ", ".join(
        f"{rows} rows {(best[f'validation {rows} rows'] - best['bare']) / 200 * 1e6:.1f}" for rows in rows_counts
    )
    # (the slope needs no bare fit: its noise, ~5 % here, is the size of these costs)
    first, last = rows_counts[0], rows_counts[-1]
    slope = (best[f"validation {last} rows"] - best[f"validation {first} rows"]) / 200 / (last - first) * 1e6
    print(f"validation's cost per epoch, µs: {costs}; per row from {first} to {last} rows: {slope:.3f}", file=out)
    return {**{name: best[name] / best["bare"] for name in variants}, "estimator": ratio}


def dropout_cost(repeats=5, out=None, rates=(0.0, 0.2, 0.5)):
    """Dropout's cost per step (module docstring); prints and returns a row per network and rate."""
    import time

    import numpy as np

    from ..diagnostics import cpu_name
    from ..network import Network
    from ..optimizers import Adam

    rng = np.random.default_rng(0)
    cases = {
        "mid 784-256-128-10": ((784, 256, 128, 10), 256, rng.normal(size=(4096, 784)).astype(np.float32)),
        "digits 64-100-10": ((64, 100, 10), 200, rng.normal(size=(1200, 64)).astype(np.float32)),
    }
    labels = {name: rng.integers(0, 10, size=X.shape[0]) for name, (_, _, X) in cases.items()}
    nets = {}
    for name, (sizes, batch, X) in cases.items():
        for rate in rates:
            net = Network(sizes, activation="relu", loss="crossentropy", dtype="float32", random_state=0, dropout=rate)
            net.fit(
                X[:batch], labels[name][:batch], optimizer=Adam(lr=1e-3), epochs=1, batch_size=batch
            )  # compile / load
            nets[name, rate] = net
    best = {}
    for _ in range(repeats):
        for (name, rate), net in nets.items():
            sizes, batch, X = cases[name]
            epochs = 3
            start = time.perf_counter()
            net.fit(X, labels[name], optimizer=Adam(lr=1e-3), epochs=epochs, batch_size=batch)
            per_step = (time.perf_counter() - start) / (epochs * -(-X.shape[0] // batch)) * 1e6
            best[name, rate] = min(best.get((name, rate), np.inf), per_step)
    print(
        f"{datetime.date.today()}  CPU: {cpu_name()} ({os.cpu_count()} logical cores); dropout on every hidden layer, "
        "float32, "
        f"Adam; best of {repeats} interleaved rounds, one warm process",
        file=out,
    )
    header = f"{'network':<22} {'dropout':>8} {'µs/step':>9} {'vs none':>8}"
    print(header, file=out)
    print("-" * len(header), file=out)
    rows = []
    for (name, rate), seconds in best.items():
        ratio = seconds / best[name, 0.0]
        print(f"{name:<22} {rate:>8.1f} {seconds:>9.1f} {ratio:>7.2f}x", file=out)
        rows.append({"network": name, "dropout": rate, "us_per_step": seconds, "vs_none": ratio})
    return rows
