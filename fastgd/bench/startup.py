"""Start-up figures (``python -m fastgd bench --cold``): what a user waits for before training.

Every figure is a fresh process with its own compile cache (``NUMBA_CACHE_DIR``; a cold fit's
helper process, which ends within the fit, is part of what it measures):

* per workload, ``import fastgd`` plus its first one-epoch fit with an empty cache, then again
  with the cache that run filled (warm);
* in one process whose cache holds only one configuration's kernels (the digits network's, as
  its first fit left them), the first fit of each of seven settings never used before
  (``NEW_SETTINGS``: other activations, losses, optimizers, the other dtype, another product
  path, clipping, validation and early stopping), each two epochs on 300 rows;
* ``python -m fastgd compile``: every kernel of both dtypes, from an empty cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from .workloads import WORKLOADS

TIMEOUT = 600

_COLD_CHILD = """
import json, sys, time
start = time.perf_counter()
import fastgd
from fastgd.bench.workloads import WORKLOADS
from fastgd.kernels.compile import CompileLog
imported = time.perf_counter()
w = WORKLOADS[sys.argv[1]]
X, Y = w.data()
with CompileLog() as log:
    w.network().fit(X, Y, optimizer=w.make_optimizer(), epochs=1, batch_size=w.batch_size, shuffle=False)
done = time.perf_counter()
print(json.dumps(dict(imported=imported - start, done=done - start, functions=log.functions, passes=log.passes)))
"""

# Functions listed in the breakdown of a cold fit's compile time.
BREAKDOWN_FUNCTIONS = 6

# (label, Network arguments, fit arguments): the seven tries, each new to the cache.
NEW_SETTINGS = (
    (
        "tanh/sigmoid/mse/SGD(nesterov) f64",
        dict(activation="tanh", output_activation="sigmoid", loss="mse", dtype="float64"),
        dict(optimizer=("sgd", dict(lr=0.05, momentum=0.9, nesterov=True))),
    ),
    (
        "relu/sigmoid/binary_crossentropy/Adam f64",
        dict(activation="relu", loss="binary_crossentropy", dtype="float64"),
        dict(optimizer=("adam", {})),
    ),
    (
        "leaky_relu/softmax/crossentropy/RMSprop(centered) f64",
        dict(activation="leaky_relu", loss="crossentropy", dtype="float64"),
        dict(optimizer=("rmsprop", dict(centered=True))),
    ),
    (
        "sigmoid/identity/sse/Adagrad f64",
        dict(activation="sigmoid", output_activation="identity", loss="sse", dtype="float64"),
        dict(optimizer=("adagrad", {})),
    ),
    (
        "identity/tanh/mse/AdamW f32",
        dict(activation="identity", output_activation="tanh", loss="mse", dtype="float32"),
        dict(optimizer=("adamw", {})),
    ),
    (
        "relu/softmax/crossentropy/Momentum f32, 300 hidden, clip_grad_norm",
        dict(activation="relu", loss="crossentropy", dtype="float32", hidden=300),
        dict(optimizer=("momentum", {}), clip_grad_norm=1.0),
    ),
    (
        "tanh/softmax/crossentropy/Adam(amsgrad) f32, 500-200 hidden, validation + early stopping",
        dict(activation="tanh", loss="crossentropy", dtype="float32", hidden=(500, 200)),
        dict(optimizer=("adam", dict(amsgrad=True)), validation_split=0.2, early_stopping=True),
    ),
)

_SETTINGS_CHILD = """
import json, sys, time
import numpy as np
import fastgd
from fastgd.bench.startup import NEW_SETTINGS
from fastgd.datasets import load_digits
from fastgd.optimizers import OPTIMIZERS

X, _, y, _ = load_digits()
X, y = X[:300], y[:300]
# The one configuration the cache holds: the digits network, as a first fit compiles it.
net = fastgd.Network([64, 64, 10], activation="sigmoid", loss="crossentropy", dtype="float32", random_state=0)
start = time.perf_counter()
net.fit(X, y, optimizer=fastgd.Adam(lr=1e-3), epochs=1, batch_size=32)
results = {"first configuration": time.perf_counter() - start}
for label, network, options in NEW_SETTINGS:
    network, options = dict(network), dict(options)
    hidden = network.pop("hidden", 64)
    sizes = [64, *(hidden if isinstance(hidden, tuple) else (hidden,)), 10]
    name, hyper = options.pop("optimizer")
    target = y if network["loss"] == "crossentropy" else np.eye(10)[y]
    net = fastgd.Network(sizes, random_state=0, **network)
    start = time.perf_counter()
    net.fit(X, target, optimizer=OPTIMIZERS[name](**hyper), epochs=2, batch_size=32, **options)
    results[label] = time.perf_counter() - start
print(json.dumps(results))
"""


def _environment(cache):
    return dict(os.environ, NUMBA_CACHE_DIR=cache)


def _run(code, args, cache):
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=_environment(cache), timeout=TIMEOUT
    )
    if done.returncode != 0:
        raise RuntimeError(f"start-up measurement failed:\n{done.stderr[-3000:]}")
    return done.stdout


def breakdown(run) -> str:
    """Where a cold fit's compile time went in its own process (``kernels.compile.CompileLog``):
    Numba's type inference and its lowering (which includes LLVM's optimisation and code
    generation), summed over functions, the rest, and the functions that took longest, each its
    own seconds (its callees' compiles taken out). The passes compile in a helper process meanwhile (see
    ``kernels.compile.prepare``), outside these figures."""
    passes, functions = run["passes"], run["functions"]
    compiled = sum(functions.values())
    typing, lowering = passes.get("typing", 0.0), passes.get("lowering", 0.0)
    top = sorted(functions.items(), key=lambda item: -item[1])[:BREAKDOWN_FUNCTIONS]
    return (
        f"         compiled here {compiled:.2f} s: type inference {typing:.2f} s, lowering with LLVM's "
        f"optimisation {lowering:.2f} s, the rest (Numba's other passes, the cache) "
        f"{compiled - typing - lowering:.2f} s; longest: " + ", ".join(f"{name} {seconds:.2f}" for name, seconds in top)
    )


def cold_start(names=None, out=None, settings=True, compile_all=True):
    """Print and return the start-up figures (see the module's docstring)."""
    names = list(names or WORKLOADS)
    results = {"workloads": {}}
    print(f"{'workload':<8} {'import s':>9} {'cold: import + 1-epoch fit s':>29} {'warm s':>8}", file=out)
    for name in names:
        with tempfile.TemporaryDirectory(prefix="fastgd-cold-") as cache:
            cold, warm = (json.loads(_run(_COLD_CHILD, [name], cache).splitlines()[-1]) for _ in range(2))
        results["workloads"][name] = (cold["done"], warm["done"])
        results.setdefault("breakdown", {})[name] = dict(functions=cold["functions"], passes=cold["passes"])
        print(f"{name:<8} {cold['imported']:>9.2f} {cold['done']:>29.2f} {warm['done']:>8.2f}", file=out, flush=True)
        print(breakdown(cold), file=out, flush=True)
    if settings:
        with tempfile.TemporaryDirectory(prefix="fastgd-settings-") as cache:
            found = json.loads(_run(_SETTINGS_CHILD, [], cache).splitlines()[-1])
        results["settings"] = found
        print(
            "\none process, its cache holding one configuration's kernels: first fit of a setting never used before",
            file=out,
        )
        for label, seconds in found.items():
            print(f"  {seconds:6.2f} s  {label}", file=out, flush=True)
    if compile_all:
        with tempfile.TemporaryDirectory(prefix="fastgd-compile-") as cache:
            import time

            start = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "fastgd", "compile"],
                capture_output=True,
                text=True,
                env=_environment(cache),
                timeout=TIMEOUT,
            )
            seconds = time.perf_counter() - start
        results["compile"] = seconds
        print(
            f"\npython -m fastgd compile (both dtypes, empty cache): {seconds:.1f} s "
            f"({done.stdout.strip().splitlines()[-1]})",
            file=out,
        )
    return results
