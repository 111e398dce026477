"""``python -m fastgd bench --float64``: what float64 costs against float32, per activation.

The digits network of the grid search (64-100-10, softmax/cross-entropy, Adam, batch 200) with
each hidden activation fastgd has, trained for 40 epochs of 1 200 rows in float32 and in float64,
on one thread: µs per step, and float64's over float32's. The products take twice the bytes and
half the vector lanes in float64, so 2x is the floor; what is above it is the activations'
arithmetic (``kernels/mathfn.py``: exp, tanh and log1p vectorise in both dtypes). Each
measurement runs in a process of its own, rounds interleaved, the best kept.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys

_CHILD = """
import json, sys, time
import numpy as np
import fastgd
from fastgd.datasets import load_digits
activation, dtype = sys.argv[1], sys.argv[2]
X, _, y, _ = load_digits()
X, y = X[:1200].astype(dtype), y[:1200]
net = fastgd.Network([64, 100, 10], activation=activation, loss="crossentropy", dtype=dtype, random_state=0,
                     n_threads=1)
net.copy().fit(X, y, optimizer=fastgd.Adam(lr=1e-3), epochs=1, batch_size=200)
best = float("inf")
for _ in range(3):
    copy = net.copy()
    start = time.perf_counter()
    copy.fit(X, y, optimizer=fastgd.Adam(lr=1e-3), epochs=40, batch_size=200, shuffle=False)
    best = min(best, time.perf_counter() - start)
print(json.dumps({"us_per_step": best / (40 * 6) * 1e6}))
"""


def float64_cost(repeats=3, out=None):
    """Prints and returns {activation: (float32 µs/step, float64 µs/step, ratio)}."""
    from ..diagnostics import cpu_name
    from ..registry import ACTIVATIONS

    activations = [name for name, spec in ACTIVATIONS.items() if not spec.output_only]
    best = {}
    for _ in range(repeats):
        for activation in activations:
            for dtype in ("float32", "float64"):
                done = subprocess.run(
                    [sys.executable, "-c", _CHILD, activation, dtype], capture_output=True, text=True, timeout=900
                )
                if done.returncode != 0:
                    raise RuntimeError(f"{activation} {dtype} failed:\n{done.stderr[-3000:]}")
                value = json.loads(done.stdout.strip().splitlines()[-1])["us_per_step"]
                best[activation, dtype] = min(best.get((activation, dtype), float("inf")), value)
    print(
        f"{datetime.date.today()}  CPU: {cpu_name()} ({os.cpu_count()} logical cores); digits 64-100-10 softmax, "
        "Adam, batch 200, "
        f"one thread; best of {repeats} interleaved rounds, a process each",
        file=out,
    )
    print(f"{'activation':<12} {'float32 µs':>11} {'float64 µs':>11} {'float64/float32':>16}", file=out)
    result = {}
    for activation in activations:
        single, double = best[activation, "float32"], best[activation, "float64"]
        result[activation] = (single, double, double / single)
        print(f"{activation:<12} {single:>11.1f} {double:>11.1f} {double / single:>15.2f}x", file=out)
    return result
