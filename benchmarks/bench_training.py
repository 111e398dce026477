"""asv benchmarks: training throughput of both backends on the workloads of ``fastgd.bench``.

Every benchmark compiles (or loads from Numba's on-disk cache) in ``setup``, outside the timing.
``FASTGD_BENCH_QUICK=1`` trains one epoch per workload instead of the full step count, for the CI
smoke run (``asv run --quick``) that keeps the suite from rotting.
"""

import os
import time

import numpy as np

from fastgd.bench import WORKLOADS

QUICK = os.environ.get("FASTGD_BENCH_QUICK") == "1"
BACKENDS = ["numba", "numpy"]


def _prepare(workload_name, backend, dtype=None):
    workload = WORKLOADS[workload_name]
    X, y, net, optimizer = workload.prepare(backend, dtype=dtype)
    epochs = 1 if QUICK else workload.epochs
    return workload, X, y, net, optimizer, epochs


class Training:
    """Time, throughput and peak memory of each workload's training run, per backend."""

    params = (list(WORKLOADS), BACKENDS)
    param_names = ["workload", "backend"]
    number = 1
    repeat = (1, 5, 60.0)
    warmup_time = 0
    timeout = 900

    def setup(self, workload, backend):
        self.workload, self.X, self.y, self.net, self.optimizer, self.epochs = _prepare(workload, backend)

    def _fit(self):
        self.net.fit(self.X, self.y, optimizer=self.optimizer, epochs=self.epochs, batch_size=self.workload.batch_size)

    def time_fit(self, workload, backend):
        self._fit()

    def track_samples_per_second(self, workload, backend):
        start = time.perf_counter()
        self._fit()
        return self.epochs * len(self.X) / (time.perf_counter() - start)

    track_samples_per_second.unit = "samples/s"

    def peakmem_fit(self, workload, backend):
        self._fit()


class Dtype:
    """The digits workload in both precisions: float32 must not be slower than float64."""

    params = (["float32", "float64"], BACKENDS)
    param_names = ["dtype", "backend"]
    number = 1
    repeat = (1, 5, 30.0)
    warmup_time = 0
    timeout = 300

    def setup(self, dtype, backend):
        self.workload, self.X, self.y, self.net, self.optimizer, self.epochs = _prepare("digits", backend, dtype)

    def time_fit(self, dtype, backend):
        self.net.fit(self.X, self.y, optimizer=self.optimizer, epochs=self.epochs, batch_size=self.workload.batch_size)


class SpeedUp:
    """Speed-up of the Numba backend over the NumPy reference, both timed in the same process."""

    params = list(WORKLOADS)
    param_names = ["workload"]
    number = 1
    repeat = 1
    warmup_time = 0
    timeout = 900

    def setup(self, workload):
        self.runs = {backend: _prepare(workload, backend) for backend in BACKENDS}

    def track_speedup(self, workload):
        seconds = {}
        for backend, (w, X, y, net, optimizer, epochs) in self.runs.items():
            best = np.inf
            for _ in range(1 if QUICK else 3):
                start = time.perf_counter()
                net.fit(X, y, optimizer=optimizer, epochs=epochs, batch_size=w.batch_size)
                best = min(best, time.perf_counter() - start)
            seconds[backend] = best
        return seconds["numpy"] / seconds["numba"]

    track_speedup.unit = "x"


class Accuracy:
    """Test accuracy of the digits workload (mean over five train/test splits), per backend."""

    params = BACKENDS
    param_names = ["backend"]
    number = 1
    repeat = 1
    warmup_time = 0
    timeout = 300

    def setup(self, backend):
        _prepare("digits", backend)  # compile outside the measurement

    def track_digits_accuracy(self, backend):
        from fastgd.bench import digits_accuracy

        return float(np.mean(digits_accuracy(backend, splits=1 if QUICK else 5)))

    track_digits_accuracy.unit = "fraction"


class Progress:
    """The progress bar must not slow training measurably: digits with verbose 0 and 1."""

    params = [0, 1]
    param_names = ["verbose"]
    number = 1
    repeat = (1, 5, 30.0)
    warmup_time = 0
    timeout = 300

    def setup(self, verbose):
        import io

        self.workload, self.X, self.y, self.net, self.optimizer, self.epochs = _prepare("digits", "numba")
        self.sink = io.StringIO()

    def time_fit(self, verbose):
        import contextlib

        with contextlib.redirect_stderr(self.sink):
            self.net.fit(
                self.X, self.y, optimizer=self.optimizer, epochs=self.epochs, batch_size=self.workload.batch_size, verbose=verbose
            )
