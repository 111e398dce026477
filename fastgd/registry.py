"""Tables of everything a network can be built from, by public name: activations and losses
(read from their one definition each, ``fastgd.kernels.activations.SPECS`` and
``fastgd.kernels.losses.SPECS``: the compiled forms, the NumPy twins, the names in other tools),
initializers, dtypes. Tests, benchmarks, conversions and the command line walk these tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Callable

import numpy as np

from .kernels import activations as _activations
from .kernels import losses as _losses


class ByName(Mapping):
    """A table's entries by public name, read from the table at each access: the table (code ->
    declaration) stays the one source, so an entry added to it is known here at once."""

    def __init__(self, table: dict):
        self._table = table

    def __getitem__(self, name):
        for spec in self._table.values():
            if spec.name == name:
                return spec
        raise KeyError(name)

    def __iter__(self):
        return (spec.name for spec in self._table.values())

    def __len__(self):
        return len(self._table)

    def __repr__(self):
        return f"ByName({list(self)})"


# name -> the activation's declaration (ActivationSpec: code, output_only, sklearn/torch/onnx names...).
ACTIVATIONS = ByName(_activations.SPECS)

# name -> the loss's declaration (LossSpec: code, mean, required_output, default_output, formula...).
LOSSES = ByName(_losses.SPECS)


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
