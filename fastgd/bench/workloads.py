"""The benchmark workloads: one table, read by ``python -m fastgd bench``, the peer workers and the
tests. Each is a network, an optimizer, data made deterministically, and a number of steps.

Every library trains the same thing: the same layer sizes and activations, the same initial
weights (drawn by fastgd's ``Network(random_state=0)``), the same data in the same order (no
shuffling), the same loss (½‖a − y‖² averaged over rows, or cross-entropy) and optimizer.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class Workload:
    name: str
    layer_sizes: tuple
    dtype: str
    optimizer: str  # "sgd", "momentum" (SGD with momentum 0.9) or "adam"
    lr: float
    batch_size: int | None  # None: full batch
    rows: int
    epochs: int
    loss: str = "mse"  # or "crossentropy" (softmax output)
    description: str = ""
    # Network's activation= (the hidden layers', and the output layer's unless crossentropy's
    # softmax): a name of fastgd.registry.ACTIVATIONS (bench --activations sweeps them).
    activation: str = "sigmoid"

    @property
    def batch(self) -> int:
        return self.rows if self.batch_size is None else self.batch_size

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.rows // self.batch)

    @property
    def steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def data(self):
        """(X, Y) of the workload's dtype; Y one-hot for crossentropy."""
        if self.name == "xor":
            from ..datasets import xor

            X, Y = xor()
            return X.astype(self.dtype), Y.astype(self.dtype)
        if self.name == "digits":
            from ..datasets import load_digits

            X, _, y, _ = load_digits()
            X, y = X[: self.rows].astype(self.dtype), y[: self.rows]
            return X, np.eye(10, dtype=self.dtype)[y]
        rng = np.random.default_rng(0)
        X = rng.standard_normal(size=(self.rows, self.layer_sizes[0]), dtype=self.dtype)
        Y = rng.random(size=(self.rows, self.layer_sizes[-1]), dtype=self.dtype)
        return X, Y

    def network(self, backend="numba", n_threads=None):
        """The workload's fastgd network (its initial weights are every library's)."""
        from ..network import Network

        loss = "crossentropy" if self.loss == "crossentropy" else "mse"
        return Network(
            list(self.layer_sizes),
            activation=self.activation,
            loss=loss,
            dtype=self.dtype,
            random_state=0,
            backend=backend,
            n_threads=n_threads,
        )

    def make_optimizer(self):
        from .. import optimizers

        if self.optimizer == "adam":
            return optimizers.Adam(lr=self.lr)
        if self.optimizer == "momentum":
            return optimizers.SGD(lr=self.lr, momentum=0.9)
        return optimizers.SGD(lr=self.lr)

    def flops_per_step(self) -> float:
        """Matrix-product FLOPs of one step: forward, weight gradients and hidden deltas."""
        macs = 0
        for layer, (n_in, n_out) in enumerate(zip(self.layer_sizes[:-1], self.layer_sizes[1:])):
            macs += 2 * self.batch * n_in * n_out
            if layer > 0:
                macs += self.batch * n_in * n_out
        return 2.0 * macs


def resolve(spec) -> Workload:
    """A workload by name, or a variant of one: ``NAME[,activation=ACTIVATION][,dtype=DTYPE]``
    (what ``bench --activations`` hands its workers, e.g. ``small,activation=gelu,dtype=float64``)."""
    name, *changes = str(spec).split(",")
    if name not in WORKLOADS:
        raise ValueError(f"unknown workload {name!r}; expected one of {list(WORKLOADS)}")
    fields = {}
    for change in changes:
        field, separator, value = change.partition("=")
        if not separator or field not in ("activation", "dtype") or field in fields:
            raise ValueError(f"workload {spec!r}: expected NAME[,activation=ACTIVATION][,dtype=DTYPE]")
        fields[field] = value
    return replace(WORKLOADS[name], **fields) if fields else WORKLOADS[name]


WORKLOADS = {
    w.name: w
    for w in (
        Workload("xor", (2, 4, 1), "float64", "sgd", 0.1, None, 4, 10_000, description="classic XOR, full batch, SGD"),
        Workload("small", (32, 64, 1), "float32", "sgd", 0.1, 32, 2_048, 32, description="small layers, batch 32, SGD"),
        Workload(
            "mid",
            (784, 256, 128, 10),
            "float32",
            "adam",
            1e-3,
            256,
            16_384,
            4,
            description="MNIST-sized, batch 256, Adam",
        ),
        Workload(
            "large",
            (1024, 2048, 2048, 16),
            "float32",
            "momentum",
            0.01,
            4096,
            16_384,
            1,
            description="GEMM-bound, batch 4096, SGD momentum 0.9",
        ),
        Workload(
            "narrow",
            (16, 16, 16, 1),
            "float32",
            "adam",
            1e-3,
            256,
            16_384,
            16,
            description="narrow layers, batch 256, Adam: per-step overhead, not FLOPs",
        ),
        Workload(
            "digits",
            (64, 64, 10),
            "float32",
            "adam",
            1e-3,
            32,
            1_344,
            200,
            loss="crossentropy",
            description="digits, softmax + cross-entropy, batch 32, Adam, 200 epochs",
        ),
    )
}
