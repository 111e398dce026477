"""``python -m fastgd bench``: the benchmark workloads trained side by side.

Every measurement runs in a process of its own (``worker``), rounds interleaved across the
libraries so that each sees the same machine, and the best of ``repeats`` rounds is kept. The
table gives each library's µs per step and fastgd's speed-up over it (its time divided by
fastgd's), and for fastgd the share of the GEMM roofline (the best float32 matrix product
measured in the same run) its matrix-product FLOPs reach.

Without ``peers`` the libraries are fastgd and its own NumPy backend; with ``peers`` also
PyTorch, JAX and scikit-learn (those not installed are skipped with a note; ``pip install
"fastgd[peers]"`` adds JAX and scikit-learn, PyTorch's CPU build is the user's to install).
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import os
import subprocess
import sys

from .workloads import WORKLOADS, Workload
from .worker import LIBRARIES, REQUIRES

__all__ = ["WORKLOADS", "Workload", "run", "cold_start", "digits_accuracy"]

# A worker that takes longer than this is stopped (large with scikit-learn, three runs: ~15 s).
WORKER_TIMEOUT = 900


def available(library) -> bool:
    return all(importlib.util.find_spec(module) is not None for module in REQUIRES.get(library, ()))


def _worker(library, workload, threads):
    command = [sys.executable, "-m", "fastgd.bench.worker", library, workload, str(threads or 0)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=WORKER_TIMEOUT)
    if done.returncode != 0:
        raise RuntimeError(f"{library} on {workload} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(names=None, n_threads=None, repeats=3, peers=False, out=None):
    """Print the benchmark table; returns its rows as dicts."""
    from ..diagnostics import cpu_name

    names = list(names or WORKLOADS)
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        raise ValueError(f"unknown workload(s) {unknown}; expected some of {list(WORKLOADS)}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    libraries = ["fastgd", "fastgd-numpy"] + (["torch", "jax", "sklearn"] if peers else [])
    missing = [lib for lib in libraries if not available(lib)]
    libraries = [lib for lib in libraries if lib not in missing]
    from .._threads import default_threads

    threads = n_threads or default_threads()
    roofline = _worker("roofline", "-", threads)["gflops"]
    print(f"{datetime.date.today()}  CPU: {cpu_name()} ({os.cpu_count()} logical cores), {threads} threads; "
          f"best float32 GEMM {roofline:.1f} GFLOP/s; best of {repeats} interleaved rounds, one process per run", file=out)  # fmt: skip
    for lib in missing:
        print(f"({lib} skipped: {', '.join(REQUIRES[lib])} not installed)", file=out)
    header = f"{'workload':<8} {'library':<13} {'µs/step':>11} {'fastgd is':>10} {'% roofline':>10} {'compile s':>9} {'final loss':>11}  version"
    print(header, file=out)
    print("-" * len(header), file=out)
    rows = []
    for name in names:
        workload = WORKLOADS[name]
        best = {}
        for _ in range(repeats):
            for lib in libraries:
                result = _worker(lib, name, n_threads)
                if lib not in best or result["seconds"] < best[lib]["seconds"]:
                    best[lib] = result
        fastgd_seconds = best["fastgd"]["seconds"]
        for lib in libraries:
            result = best[lib]
            speedup = result["seconds"] / fastgd_seconds
            roof = 100.0 * workload.flops_per_step() * workload.steps / result["seconds"] / 1e9 / roofline
            row = dict(result, speedup=speedup, roofline_percent=roof, threads=threads, roofline_gflops=roofline)
            rows.append(row)
            loss = "" if result.get("final_loss") is None else f"{result['final_loss']:.5g}"
            print(f"{name:<8} {lib:<13} {result['us_per_step']:>11.4g} {speedup:>9.2f}x {roof:>9.1f}% "
                  f"{result['compile_seconds']:>9.2f} {loss:>11}  {result['version']}", file=out)  # fmt: skip
    if "digits" in names:
        accuracies = digits_accuracy()
        print(f"digits: test accuracy {sum(accuracies) / len(accuracies):.4f} (fastgd), mean of {len(accuracies)} train/test "
              f"splits ({', '.join(f'{a:.4f}' for a in accuracies)})", file=out)  # fmt: skip
    return rows


_COLD_CHILD = """
import sys, time
start = time.perf_counter()
import fastgd
from fastgd.bench.workloads import WORKLOADS
imported = time.perf_counter()
w = WORKLOADS[sys.argv[1]]
X, Y = w.data()
w.network().fit(X, Y, optimizer=w.make_optimizer(), epochs=1, batch_size=w.batch_size, shuffle=False)
done = time.perf_counter()
print(imported - start, done - start)
"""


def cold_start(names=None, out=None):
    """Start-up of each workload: a fresh process with an empty compile cache (its own
    ``NUMBA_CACHE_DIR``), ``import fastgd`` plus the first one-epoch fit; then the same with the
    cache that run filled. Returns ``{workload: (cold seconds, warm seconds)}``."""
    import tempfile

    names = list(names or WORKLOADS)
    results = {}
    print(f"{'workload':<8} {'import s':>9} {'cold: import + 1-epoch fit s':>29} {'warm s':>8}", file=out)
    for name in names:
        with tempfile.TemporaryDirectory(prefix="fastgd-cold-") as cache:
            env = dict(os.environ, NUMBA_CACHE_DIR=cache)
            times = []
            for _ in range(2):
                done = subprocess.run([sys.executable, "-c", _COLD_CHILD, name], capture_output=True, text=True, env=env,
                                      timeout=WORKER_TIMEOUT)  # fmt: skip
                if done.returncode != 0:
                    raise RuntimeError(f"cold start of {name} failed:\n{done.stderr[-3000:]}")
                times.append([float(v) for v in done.stdout.split()[-2:]])
        results[name] = (times[0][1], times[1][1])
        print(f"{name:<8} {times[0][0]:>9.2f} {times[0][1]:>29.2f} {times[1][1]:>8.2f}", file=out, flush=True)
    return results


DIGITS_SPLITS = 5


def digits_accuracy(backend="numba", splits=DIGITS_SPLITS):
    """Test accuracy of the ``digits`` workload's recipe, one value per train/test split.

    Split ``s`` holds out 25 % of each class, drawn with ``random_state=s`` (``load_digits``); the
    network is the workload's (64-64-10 sigmoid/softmax, ``random_state=0``), trained with Adam
    (lr 1e-3), batch 32, for 200 epochs, shuffled. One split of 450 test images moves the
    accuracy in steps of 0.0022, and splits differ by more than that, so the recipe's accuracy is
    quoted as the mean over splits.
    """
    import numpy as np

    from ..datasets import load_digits
    from ..network import Network
    from ..optimizers import Adam

    accuracies = []
    for split in range(splits):
        X_train, X_test, y_train, y_test = load_digits(random_state=split)
        net = Network([64, 64, 10], activation="sigmoid", loss="crossentropy", dtype="float32", random_state=0, backend=backend)
        net.fit(X_train, y_train, optimizer=Adam(lr=1e-3), epochs=200, batch_size=32)
        accuracies.append(float(np.mean(net.predict(X_test).argmax(axis=1) == y_test)))
    return accuracies
