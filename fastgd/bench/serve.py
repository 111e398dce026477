"""``python -m fastgd bench --serve``: predictions as a threaded web service makes them.

The network is a small classifier a service would hold: 64-256-256-10, relu hidden layers, a
softmax output, float32, ``n_threads=1``, random weights (``random_state=0``). Each request is
``net.predict(X)`` on 32 rows of float32. Python threads (1, then 2) call ``predict`` on the
same network object at once, for a fixed wall time after a warm-up, and the requests they
complete per second are counted. The same is measured for a NumPy forward pass of the same
weights (``np.maximum(X @ W0 + b0, 0)`` ... softmax) with BLAS held to one thread
(threadpoolctl's ``threadpool_limits(1)``), the way a service runs NumPy beside its own threads.

Each (variant, threads) runs in a process of its own (``python -m fastgd.bench.serve VARIANT
THREADS SECONDS``, one JSON line), rounds interleaved (fastgd, NumPy, fastgd, NumPy...), the
best kept. Targets: on one thread fastgd serves at least 1.5x NumPy's requests; two threads
serve at least 1.7x one thread's.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np

LAYER_SIZES = (64, 256, 256, 10)
REQUEST_ROWS = 32
VARIANTS = ("fastgd", "numpy")
THREADS = (1, 2)
# Distinct request arrays, cycled through (a service never sees the same array twice in a row).
REQUESTS = 64
TARGET_VS_NUMPY = 1.5
TARGET_SCALING = 1.7
TIMEOUT = 300


def _network():
    from ..network import Network

    return Network(
        list(LAYER_SIZES), activation="relu", loss="crossentropy", dtype="float32", random_state=0, n_threads=1
    )


def _requests():
    rng = np.random.default_rng(0)
    return [rng.standard_normal((REQUEST_ROWS, LAYER_SIZES[0]), dtype=np.float32) for _ in range(REQUESTS)]


def numpy_forward(weights, biases):
    """The NumPy forward pass of ``weights``/``biases``: relu hidden layers, a softmax output."""
    layers = list(zip(weights, biases))

    def forward(X):
        a = X
        for W, b in layers[:-1]:
            a = np.maximum(a @ W + b, 0)
        W, b = layers[-1]
        z = a @ W + b
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    return forward


def _serve(call, requests, threads, seconds):
    """Requests completed per second by ``threads`` Python threads, each calling ``call`` on
    the requests in turn until ``seconds`` have passed; (requests, wall seconds)."""
    counts = [0] * threads
    errors = []
    start_line = threading.Barrier(threads + 1)
    deadline = [0.0]

    def client(index):
        done, k = 0, index * (len(requests) // threads)
        start_line.wait()
        stop = deadline[0]
        try:
            while True:  # at least one request each; the wall time runs to the last one's end
                call(requests[k % len(requests)])
                done += 1
                k += 1
                if time.perf_counter() >= stop:
                    break
        except BaseException as error:  # reported by the main thread
            errors.append(error)
        counts[index] = done

    clients = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(threads)]
    for thread in clients:
        thread.start()
    start = time.perf_counter()
    deadline[0] = start + seconds
    start_line.wait()
    for thread in clients:
        thread.join()
    wall = time.perf_counter() - start
    if errors:
        raise errors[0]
    return sum(counts), wall


def measure(variant, threads, seconds):
    """One (variant, threads) measurement in this process: a warm-up, then ``seconds`` of
    requests from ``threads`` threads. Returns requests/s and the largest difference between
    the variant's outputs and the other's on the first request (both are computed here)."""
    from threadpoolctl import threadpool_limits

    import fastgd

    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    net = _network()
    requests = _requests()
    forward = numpy_forward([np.array(W) for W in net.weights], [np.array(b) for b in net.biases])
    # fastgd as a service holds it (n_threads=1 on the network, nothing else set); NumPy's BLAS
    # on one thread, for the process (every Python thread's calls).
    limits = threadpool_limits(limits=1, user_api="blas") if variant == "numpy" else contextlib.nullcontext()
    with limits:
        call = net.predict if variant == "fastgd" else forward
        start = time.perf_counter()
        call(requests[0])  # compiles, or loads the compile cache
        first_seconds = time.perf_counter() - start
        difference = float(np.max(np.abs(net.predict(requests[0]) - forward(requests[0]))))
        _serve(call, requests, threads, min(0.5, max(seconds / 4, 0.05)))  # warm-up, the same threads
        count, wall = _serve(call, requests, threads, seconds)
    version = fastgd.__version__ if variant == "fastgd" else np.__version__
    return dict(
        variant=variant,
        threads=threads,
        requests=count,
        seconds=wall,
        requests_per_second=count / wall,
        us_per_request=wall / max(count, 1) * threads * 1e6,
        first_call_seconds=first_seconds,
        max_abs_difference=difference,
        version=version,
    )


def _ratio(value):
    return f"{value:.2f}" if value >= 0.1 else f"{value:.2g}"


def _child(variant, threads, seconds):
    done = subprocess.run(
        [sys.executable, "-m", "fastgd.bench.serve", variant, str(threads), repr(float(seconds))],
        capture_output=True,
        text=True,
        timeout=TIMEOUT + 4 * seconds,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        raise RuntimeError(f"serve {variant} on {threads} thread(s) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def serve(seconds=2.0, repeats=3, threads=THREADS, out=None):
    """Print the serving table (module docstring) and return its rows, one per (variant,
    threads): requests/s, the ratio to NumPy's on as many threads (``vs_numpy``) and, for more
    than one thread, the ratio to the variant's one-thread figure (``scaling``)."""
    from ..diagnostics import cpu_name

    if seconds <= 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    threads = tuple(threads)
    best = {}
    for _ in range(repeats):
        for count in threads:
            for variant in VARIANTS:
                result = _child(variant, count, seconds)
                key = variant, count
                if key not in best or result["requests_per_second"] > best[key]["requests_per_second"]:
                    best[key] = result
    sizes = "-".join(str(n) for n in LAYER_SIZES)
    print(
        f"{datetime.date.today()}  CPU: {cpu_name()} ({os.cpu_count()} logical cores); {sizes} relu/softmax float32, "
        "n_threads=1, "
        f"predict on {REQUEST_ROWS} rows per request; NumPy with BLAS on one thread; {seconds:g} s per run, best of "
        f"{repeats} "
        f"interleaved rounds, a process each",
        file=out,
    )
    header = f"{'variant':<8} {'threads':>7} {'requests/s':>11} {'µs/request':>11} {'vs NumPy':>9} {'vs 1 thread':>12}"
    print(header, file=out)
    print("-" * len(header), file=out)
    rows = []
    for variant in VARIANTS:
        for count in threads:
            result = best[variant, count]
            rate = result["requests_per_second"]
            vs_numpy = rate / best["numpy", count]["requests_per_second"]
            scaling = rate / best[variant, threads[0]]["requests_per_second"] if count != threads[0] else None
            rows.append(
                dict(
                    result,
                    vs_numpy=vs_numpy,
                    scaling=scaling,
                    repeats=repeats,
                    layer_sizes=list(LAYER_SIZES),
                    request_rows=REQUEST_ROWS,
                )
            )
            cell = f"{_ratio(scaling):>11}x" if scaling is not None else f"{'':>12}"
            print(
                f"{variant:<8} {count:>7} {rate:>11.0f} {result['us_per_request']:>11.1f} {_ratio(vs_numpy):>8}x "
                f"{cell}",
                file=out,
            )
    difference = max(row["max_abs_difference"] for row in rows)
    print(
        f"targets: fastgd on 1 thread >= {TARGET_VS_NUMPY}x NumPy; 2 threads >= {TARGET_SCALING}x 1 thread "
        f"(fastgd and NumPy outputs differ by at most {difference:.2g})",
        file=out,
    )
    return rows


def main(argv):
    variant, threads, seconds = argv[0], int(argv[1]), float(argv[2])
    print(json.dumps(measure(variant, threads, seconds)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
