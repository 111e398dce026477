"""asv benchmarks: training throughput of each backend (compilation happens in setup)."""

import numpy as np

import fastgd
from fastgd.datasets import load_digits, xor


class XOR:
    """The classic 2-4-1 sigmoid network, full batch, SGD lr 0.1."""

    params = ["numba", "numpy"]
    param_names = ["backend"]

    def setup(self, backend):
        self.X, self.y = xor()
        self.net = fastgd.Network([2, 4, 1], loss="sse", init="uniform", random_state=0, backend=backend)
        self.optimizer = fastgd.SGD(lr=0.1)
        self.net.fit(self.X, self.y, optimizer=self.optimizer, epochs=1)  # compile / load cache
        self.epochs = 10_000 if backend == "numba" else 500

    def time_fit(self, backend):
        self.net.fit(self.X, self.y, optimizer=self.optimizer, epochs=self.epochs)

    def track_samples_per_second(self, backend):
        import time

        start = time.perf_counter()
        self.net.fit(self.X, self.y, optimizer=self.optimizer, epochs=self.epochs)
        return 4 * self.epochs / (time.perf_counter() - start)

    track_samples_per_second.unit = "samples/s"


class Digits:
    """64-64-10 tanh/softmax, crossentropy, Adam, batch 32."""

    params = (["numba", "numpy"], ["float32", "float64"])
    param_names = ["backend", "dtype"]

    def setup(self, backend, dtype):
        self.X, _, self.y, _ = load_digits()
        self.net = fastgd.Network([64, 64, 10], activation="tanh", loss="crossentropy", dtype=dtype, random_state=0, backend=backend)
        self.optimizer = fastgd.Adam(lr=1e-3)
        self.net.fit(self.X, self.y, optimizer=self.optimizer, epochs=1, batch_size=32)

    def time_fit_10_epochs(self, backend, dtype):
        self.net.fit(self.X, self.y, optimizer=self.optimizer, epochs=10, batch_size=32)

    def peakmem_fit_10_epochs(self, backend, dtype):
        self.net.fit(self.X, self.y, optimizer=self.optimizer, epochs=10, batch_size=32)
