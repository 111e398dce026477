"""``python -m fastgd bench --many``: many small models trained at once (``fastgd.fit_many``)
against the same models fitted one by one and against JAX's ``jax.jit(jax.vmap(train))``.

Two cases, each model with its own learning rate (0.05 to 0.5 across the models) and its own
initial weights, no shuffling (JAX's loop visits the batches in order too):

* ``xor``: 2-4-1 sigmoid, mse, full batch (the 4 rows), SGD, float64, 256 models, 2 000 epochs;
* ``small``: 32-64-1 tanh (identity output), mse, batches of 32 of 256 rows, SGD, float32, 64
  models, 50 epochs (400 steps each).

Each run is a fresh process, warm: fastgd with its compile cache filled and one call made before
the timing, JAX with its function compiled before the timing. Rounds are interleaved and the
best kept; the figure is nanoseconds per model-step (the run's time over models × steps).

``grid`` (the case ``grid``): a grid search on the digits (all 1 797, ``load_digits``), hidden
layer (64,), adam, ``max_iter=100``, ``random_state=0``, ``learning_rate_init`` in (1e-3, 3e-3,
1e-2) × ``alpha`` in (1e-4, 1e-3, 1e-2), 5 folds: scikit-learn's ``GridSearchCV(n_jobs=-1)``
over its ``MLPClassifier`` against ``fastgd.sklearn.GridSearchCV`` over fastgd's, with a warm
compile cache and with an empty one (a new ``NUMBA_CACHE_DIR``: every kernel compiled inside the
timing). The time is ``search.fit``'s; the best mean CV accuracy is printed beside it.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import tempfile

MANY_TIMEOUT = 900

CASES = {
    # name: (layer sizes, hidden activation, output activation, dtype, models, rows, batch, epochs)
    "xor": ((2, 4, 1), "sigmoid", "sigmoid", "float64", 256, 4, None, 2000),
    "small": ((32, 64, 1), "tanh", "identity", "float32", 64, 256, 32, 50),
}

_CHILD = """
import json, sys, time
import numpy as np
case, library = sys.argv[1], sys.argv[2]
sizes, hidden, output, dtype, models, rows, batch, epochs = json.loads(sys.argv[3])
rng = np.random.default_rng(0)
if case == "xor":
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=dtype)
    y = np.array([[0], [1], [1], [0]], dtype=dtype)
else:
    X = rng.normal(size=(rows, sizes[0])).astype(dtype)
    y = np.tanh(X[:, :1] - X[:, 1:2]).astype(dtype)
rates = np.linspace(0.05, 0.5, models)
steps = epochs * (-(-rows // (batch or rows)))
if library in ("fit_many", "one_by_one"):
    import fastgd
    def networks():
        return [fastgd.Network(list(sizes), activation=hidden, output_activation=output, loss="mse", dtype=dtype,
                               random_state=k) for k in range(models)]
    def train(nets):
        optimizers = [fastgd.SGD(lr=float(rate)) for rate in rates[: len(nets)]]
        if library == "fit_many":
            fastgd.fit_many(nets, X, y, optimizers=optimizers, epochs=epochs, batch_size=batch, shuffle=False)
        else:
            for net, optimizer in zip(nets, optimizers):
                net.fit(X, y, optimizer=optimizer, epochs=epochs, batch_size=batch, shuffle=False)
    train(networks()[:2])  # compiled (or loaded) before the timing
    nets = networks()
    start = time.perf_counter()
    train(nets)
    seconds = time.perf_counter() - start
else:
    import jax, jax.numpy as jnp
    jax.config.update("jax_enable_x64", dtype == "float64")
    act = {"sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh, "identity": lambda z: z}
    def init(key):
        params = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            key, sub = jax.random.split(key)
            limit = (6.0 / (n_in + n_out)) ** 0.5
            params.append((jax.random.uniform(sub, (n_in, n_out), dtype, -limit, limit), jnp.zeros(n_out, dtype)))
        return params
    def loss(params, xb, yb):
        a = xb
        for index, (W, b) in enumerate(params):
            a = (act[output] if index == len(params) - 1 else act[hidden])(a @ W + b)
        return 0.5 * jnp.mean(jnp.sum((a - yb) ** 2, axis=1))
    size = batch or rows
    Xb = jnp.asarray(X).reshape(-1, size, sizes[0])
    Yb = jnp.asarray(y).reshape(-1, size, sizes[-1])
    def train(params, lr):
        def step(params, data):
            grads = jax.grad(loss)(params, *data)
            return jax.tree_util.tree_map(lambda p, g: p - lr * g, params, grads), None
        def epoch(params, _):
            return jax.lax.scan(step, params, (Xb, Yb))[0], None
        return jax.lax.scan(epoch, params, None, length=epochs)[0]
    run = jax.jit(jax.vmap(train))
    params = jax.vmap(init)(jax.random.split(jax.random.PRNGKey(0), models))
    lrs = jnp.asarray(rates, dtype=dtype)
    jax.block_until_ready(run(params, lrs))  # compiled before the timing
    start = time.perf_counter()
    jax.block_until_ready(run(params, lrs))
    seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "model_steps": models * steps}))
"""

LIBRARIES = (("fit_many", "fastgd fit_many"), ("one_by_one", "fastgd one by one"), ("jax", "JAX vmap"))

_GRID_CHILD = """
import json, sys, time, warnings
library = sys.argv[1]
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
if library == "sklearn":
    from sklearn.model_selection import GridSearchCV
    from sklearn.neural_network import MLPClassifier
    n_jobs = -1
else:
    from fastgd.sklearn import GridSearchCV, MLPClassifier
    n_jobs = None
X, y = load_digits(return_X_y=True)
grid = {"learning_rate_init": [1e-3, 3e-3, 1e-2], "alpha": [1e-4, 1e-3, 1e-2]}
search = GridSearchCV(MLPClassifier(hidden_layer_sizes=(64,), max_iter=100, random_state=0), grid, cv=5, n_jobs=n_jobs)
start = time.perf_counter()
with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)
    search.fit(X, y)
print(json.dumps({"seconds": time.perf_counter() - start, "best_score": float(search.best_score_)}))
"""

GRID_RUNS = (
    ("scikit-learn n_jobs=-1", "sklearn", False),
    ("fastgd warm", "fastgd", False),
    ("fastgd cold", "fastgd", True),
)


def _grid_run(library, cold):
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="fastgd-cold-") as empty:
        if cold:
            env.update(NUMBA_CACHE_DIR=empty)
        done = subprocess.run(
            [sys.executable, "-c", _GRID_CHILD, library], capture_output=True, text=True, timeout=MANY_TIMEOUT, env=env
        )
    if done.returncode != 0:
        raise RuntimeError(f"--many grid with {library} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def grid(repeats=2, out=None):
    """The grid search of the module's docstring: prints its table, returns a row per run."""
    _grid_run("fastgd", False)  # the warm runs' cache filled (not timed)
    best = {}
    for _ in range(repeats):
        for label, library, cold in GRID_RUNS:
            result = _grid_run(library, cold)
            if label not in best or result["seconds"] < best[label]["seconds"]:
                best[label] = result
    base = best[GRID_RUNS[0][0]]["seconds"]
    header = f"{'grid search (9 x 5 folds)':<26} {'search s':>9} {'vs scikit-learn':>16} {'best CV accuracy':>17}"
    print(header, file=out)
    print("-" * len(header), file=out)
    rows = []
    for label, _, _ in GRID_RUNS:
        result = best[label]
        print(
            f"{label:<26} {result['seconds']:>9.2f} {base / result['seconds']:>15.2f}x {result['best_score']:>17.4f}",
            file=out,
        )
        rows.append(
            {
                "case": "grid",
                "library": label,
                "seconds": result["seconds"],
                "speedup": base / result["seconds"],
                "best_score": result["best_score"],
            }
        )
    return rows


def _run(case, library):
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, case, library, json.dumps(CASES[case])],
        capture_output=True,
        text=True,
        timeout=MANY_TIMEOUT,
    )
    if done.returncode != 0:
        raise RuntimeError(f"--many {case} with {library} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def many(cases=None, repeats=3, out=None):
    """The runs above (module docstring); prints the table and returns a row per case and library."""
    from importlib.util import find_spec

    from ..diagnostics import cpu_name

    cases = [*CASES, "grid"] if not cases else list(cases)
    unknown = sorted(set(cases) - {*CASES, "grid"})
    if unknown:
        raise ValueError(f"--many takes the cases {sorted(CASES)} and grid, got {unknown}")
    searched = "grid" in cases
    cases = [case for case in cases if case != "grid"]
    libraries = [entry for entry in LIBRARIES if entry[0] != "jax" or find_spec("jax") is not None]
    best = {}
    for _ in range(repeats):
        for case in cases:
            for library, _label in libraries:
                result = _run(case, library)
                ns = result["seconds"] / result["model_steps"] * 1e9
                best[case, library] = min(best.get((case, library), ns), ns)
    print(
        f"{datetime.date.today()}  CPU: {cpu_name()} ({os.cpu_count()} logical cores); ns per model-step, best of "
        f"{repeats} interleaved rounds, a process each",
        file=out,
    )
    header = f"{'case':<8} {'library':<20} {'ns/model-step':>14} {'fit_many is':>12}"
    if cases:
        print(header, file=out)
        print("-" * len(header), file=out)
    rows = []
    for case in cases:
        ours = best[case, "fit_many"]
        for library, label in libraries:
            ns = best[case, library]
            print(f"{case:<8} {label:<20} {ns:>14.1f} {ns / ours:>11.2f}x", file=out)
            rows.append({"case": case, "library": label, "ns_per_model_step": ns, "fit_many_speedup": ns / ours})
    if searched:
        rows += grid(repeats=min(repeats, 2), out=out)
    return rows
