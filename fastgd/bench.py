"""Benchmark workloads shared by ``python -m fastgd bench`` and the asv suite in ``benchmarks/``.

Each workload is a network, an optimizer, data and a number of optimizer steps. Figures are
measured side by side in one process: the Numba backend against the NumPy reference backend,
and the matrix-product throughput of the same machine (the GEMM roofline).
"""

from __future__ import annotations

import math
import os
import platform
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import optimizers
from .datasets import load_digits, xor
from .network import Network


@dataclass(frozen=True)
class Workload:
    name: str
    layer_sizes: tuple
    dtype: str
    make_optimizer: Callable[[], optimizers.Optimizer]
    batch_size: int | None
    steps: int
    rows: int
    activation: str = "sigmoid"
    loss: str = "mse"
    description: str = ""
    data: Callable = field(default=None, repr=False)

    def load(self):
        """(X, y) for training, made deterministically."""
        if self.data is not None:
            return self.data()
        rng = np.random.default_rng(0)
        # Drawn in the workload's dtype, so no float64 temporary inflates peak-memory figures.
        X = rng.standard_normal(size=(self.rows, self.layer_sizes[0]), dtype=self.dtype)
        y = rng.random(size=(self.rows, self.layer_sizes[-1]), dtype=self.dtype)
        return X, y

    @property
    def steps_per_epoch(self) -> int:
        return 1 if self.batch_size is None else math.ceil(self.rows / self.batch_size)

    @property
    def epochs(self) -> int:
        return math.ceil(self.steps / self.steps_per_epoch)

    def network(self, backend: str, n_threads=None) -> Network:
        return Network(
            list(self.layer_sizes),
            activation=self.activation,
            loss=self.loss,
            dtype=self.dtype,
            random_state=0,
            backend=backend,
            n_threads=n_threads,
        )

    def prepare(self, backend: str, n_threads=None, dtype=None):
        """(X, y, network, optimizer), with the kernels compiled (or loaded from the cache) by a
        one-batch fit of a copy, so that timing the real fit excludes compilation."""
        X, y = self.load()
        net = self.network(backend, n_threads)
        if dtype is not None:
            net = net.copy(dtype=dtype)
        rows = self.batch_size or len(X)
        net.copy().fit(X[:rows], y[:rows], optimizer=self.make_optimizer(), epochs=1, batch_size=self.batch_size)
        return X, y, net, self.make_optimizer()

    def flops_per_step(self) -> float:
        """Matrix-product FLOPs of one step: forward, weight gradients and hidden deltas."""
        batch = self.batch_size or self.rows
        sizes = self.layer_sizes
        macs = 0
        for layer, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            macs += 2 * batch * n_in * n_out  # forward and grad_W
            if layer > 0:
                macs += batch * n_in * n_out  # delta of the layer below
        return 2.0 * macs


def _digits():
    X_train, _, y_train, _ = load_digits()
    return X_train, y_train


DIGITS_SPLITS = 5


def digits_accuracy(backend="numba", splits=DIGITS_SPLITS):
    """Test accuracy of the ``digits`` workload's training run, one value per train/test split.

    Split ``s`` holds out 25 % of each class, drawn with ``random_state=s`` (``load_digits``);
    the network is the workload's (``random_state=0``), trained for its 200 epochs. One split
    of 450 test images moves the accuracy in steps of 0.0022, and splits differ by more than
    that (0.96-0.99 here), so the workload's accuracy is quoted as the mean over splits.

    Returns
    -------
    list of float, one per split
    """
    workload = WORKLOADS["digits"]
    accuracies = []
    for split in range(splits):
        X_train, X_test, y_train, y_test = load_digits(random_state=split)
        net = workload.network(backend)
        net.fit(X_train, y_train, optimizer=workload.make_optimizer(), epochs=workload.epochs, batch_size=workload.batch_size)
        accuracies.append(float(np.mean(net.predict(X_test).argmax(axis=1) == y_test)))
    return accuracies


WORKLOADS = {
    w.name: w
    for w in (
        Workload("xor", (2, 4, 1), "float64", lambda: optimizers.SGD(lr=0.1), None, 10_000, 4, data=xor,
                 description="classic XOR, full batch, SGD"),
        Workload("small", (32, 64, 1), "float32", lambda: optimizers.SGD(lr=0.1), 32, 2_000, 2_048,
                 description="small layers, batch 32, SGD"),
        Workload("mid", (784, 256, 128, 10), "float32", lambda: optimizers.Adam(lr=1e-3), 256, 200, 16_384,
                 description="MNIST-sized, batch 256, Adam"),
        Workload("large", (1024, 2048, 2048, 16), "float32", lambda: optimizers.SGD(lr=0.01, momentum=0.9), 4096, 4,
                 16_384, description="GEMM-bound, batch 4096, SGD momentum"),
        Workload("digits", (64, 64, 10), "float32", lambda: optimizers.Adam(lr=1e-3), 32, 200 * 43, 1_347,
                 loss="crossentropy", data=_digits, description="sklearn digits, softmax, batch 32, Adam, 200 epochs"),
    )  # fmt: skip
}


def time_fit(workload: Workload, backend: str, epochs: int | None = None, repeats: int = 1, n_threads=None):
    """Seconds for ``epochs`` (default: the workload's) epochs of training, best of ``repeats``;
    compilation is done first, outside the timing."""
    X, y, net, optimizer = workload.prepare(backend, n_threads)
    epochs = workload.epochs if epochs is None else epochs
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        net.fit(X, y, optimizer=optimizer, epochs=epochs, batch_size=workload.batch_size)
        best = min(best, time.perf_counter() - start)
    return best, net


def gemm_roofline(dtype="float32", sizes=((1024, 1024, 1024), (2048, 2048, 2048), (256, 784, 256)), repeats=3) -> float:
    """Best matrix-product GFLOP/s measured now (NumPy's BLAS, current thread settings)."""
    rng = np.random.default_rng(0)
    best = 0.0
    for m, k, n in sizes:
        a = rng.normal(size=(m, k)).astype(dtype)
        b = rng.normal(size=(k, n)).astype(dtype)
        out = np.empty((m, n), dtype=dtype)
        np.dot(a, b, out=out)
        for _ in range(repeats):
            start = time.perf_counter()
            np.dot(a, b, out=out)
            best = max(best, 2.0 * m * k * n / (time.perf_counter() - start) / 1e9)
    return best


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run(names=None, n_threads=None, out=None, repeats=3):
    """Print the benchmark table; returns its rows as dicts.

    Each backend is timed ``repeats`` times, the two interleaved, and the best time of each is
    kept: the machines this runs on are shared, and interleaving exposes both to the same noise.
    """
    import numba
    from threadpoolctl import threadpool_limits

    names = list(names or WORKLOADS)
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        raise ValueError(f"unknown workload(s) {unknown}; expected some of {list(WORKLOADS)}")
    threads = n_threads or numba.get_num_threads()
    with threadpool_limits(limits=threads, user_api="blas"):
        roofline = gemm_roofline()
    print(f"CPU: {cpu_name()} ({os.cpu_count()} logical cores), {threads} threads; "
          f"best float32 GEMM {roofline:.1f} GFLOP/s", file=out)  # fmt: skip
    header = f"{'workload':<8} {'backend':<7} {'samples/s':>12} {'speed-up':>9} {'% GEMM roofline':>16} {'threads':>8}"
    print(header, file=out)
    print("-" * len(header), file=out)
    rows = []
    for name in names:
        workload = WORKLOADS[name]
        samples = workload.epochs * workload.rows
        steps = workload.epochs * workload.steps_per_epoch
        best = {"numpy": math.inf, "numba": math.inf}
        for _ in range(repeats):
            for backend in best:
                with threadpool_limits(limits=threads, user_api="blas"):
                    seconds, _ = time_fit(workload, backend, n_threads=threads)
                best[backend] = min(best[backend], seconds)
        for backend in ("numba", "numpy"):
            seconds = best[backend]
            roof = 100.0 * workload.flops_per_step() * steps / seconds / 1e9 / roofline
            row = dict(workload=name, backend=backend, samples_per_second=samples / seconds,
                       speedup=best["numpy"] / seconds, roofline_percent=roof, threads=threads,
                       seconds=seconds)  # fmt: skip
            rows.append(row)
            print(f"{name:<8} {backend:<7} {row['samples_per_second']:>12.4g} {row['speedup']:>8.2f}x "
                  f"{roof:>15.1f}% {threads:>8}", file=out)  # fmt: skip
    if "digits" in names:
        accuracies = digits_accuracy()
        seconds = min(row["seconds"] for row in rows if row["workload"] == "digits" and row["backend"] == "numba")
        print(f"digits: {WORKLOADS['digits'].epochs} epochs in {seconds:.3f} s (numba, after compilation); test accuracy "
              f"{np.mean(accuracies):.4f}, mean of {len(accuracies)} train/test splits "
              f"({', '.join(f'{a:.4f}' for a in accuracies)})", file=out)  # fmt: skip
    return rows
