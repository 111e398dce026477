"""Tables of everything a network can be built from: activations, losses, initializers.

One table per kind, keyed by the public name. The kernels see only the integer codes; tests and
benchmarks walk these tables (and ``OPTIMIZERS_UNDER_TEST`` in :mod:`fastgd.optimizers`), so
adding an activation or loss is a kernel branch, a reference-table entry and a row here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .kernels import activations as codes_a
from .kernels import losses as codes_l


@dataclass(frozen=True)
class Activation:
    name: str
    code: int
    output_only: bool = False  # softmax normalises a whole row: only meaningful on the output layer


@dataclass(frozen=True)
class Loss:
    name: str
    code: int
    mean: bool  # averaged over rows (True) or summed (sse)
    required_output: str | None  # the output activation this loss is defined for, if any
    default_output: str | None  # the output activation used when none is given
    formula: str


ACTIVATIONS = {
    a.name: a
    for a in (
        Activation("identity", codes_a.IDENTITY),
        Activation("sigmoid", codes_a.SIGMOID),
        Activation("tanh", codes_a.TANH),
        Activation("relu", codes_a.RELU),
        Activation("leaky_relu", codes_a.LEAKY_RELU),
        Activation("softmax", codes_a.SOFTMAX, output_only=True),
    )
}

LOSSES = {
    loss.name: loss
    for loss in (
        Loss("sse", codes_l.SSE, mean=False, required_output=None, default_output=None, formula="½ Σ_rows ‖a − y‖²"),
        Loss("mse", codes_l.MSE, mean=True, required_output=None, default_output=None, formula="(1/2n) Σ_rows ‖a − y‖²"),
        Loss(
            "binary_crossentropy",
            codes_l.BINARY_CROSSENTROPY,
            mean=True,
            required_output="sigmoid",
            default_output="sigmoid",
            formula="−(1/n) Σ_rows Σ_j [y log a + (1 − y) log(1 − a)]",
        ),
        Loss(
            "crossentropy",
            codes_l.CROSSENTROPY,
            mean=True,
            required_output="softmax",
            default_output="softmax",
            formula="−(1/n) Σ_rows Σ_j y_j log a_j",
        ),
    )
}


def _uniform(rng, n_in, n_out):
    return rng.uniform(-1.0, 1.0, size=(n_in, n_out))


def _xavier_uniform(rng, n_in, n_out):
    limit = np.sqrt(6.0 / (n_in + n_out))
    return rng.uniform(-limit, limit, size=(n_in, n_out))


def _xavier_normal(rng, n_in, n_out):
    return rng.normal(0.0, np.sqrt(2.0 / (n_in + n_out)), size=(n_in, n_out))


def _he_uniform(rng, n_in, n_out):
    limit = np.sqrt(6.0 / n_in)
    return rng.uniform(-limit, limit, size=(n_in, n_out))


def _he_normal(rng, n_in, n_out):
    return rng.normal(0.0, np.sqrt(2.0 / n_in), size=(n_in, n_out))


# Weight initializers: (rng, n_in, n_out) -> float64 (n_in, n_out). Biases always start at zero.
INITIALIZERS: dict[str, Callable] = {
    "uniform": _uniform,  # U[-1, 1), the classic XOR code's draw
    "xavier_uniform": _xavier_uniform,  # U[-a, a), a = sqrt(6 / (n_in + n_out))
    "xavier_normal": _xavier_normal,  # N(0, 2 / (n_in + n_out))
    "he_uniform": _he_uniform,  # U[-a, a), a = sqrt(6 / n_in)
    "he_normal": _he_normal,  # N(0, 2 / n_in)
}

DTYPES = {"float32": np.dtype(np.float32), "float64": np.dtype(np.float64)}

BACKENDS = ("numba", "numpy")


def lookup(table: dict, value, argument: str):
    """``table[value]`` with a ValueError/TypeError that names the argument and the choices."""
    if not isinstance(value, str):
        raise TypeError(f"{argument} must be a string, one of {sorted(table)}; got {type(value).__name__}")
    try:
        return table[value]
    except KeyError:
        raise ValueError(f"unknown {argument} {value!r}; expected one of {sorted(table)}") from None
