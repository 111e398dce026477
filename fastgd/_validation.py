"""Argument checks for the public API.

Every check raises before anything is modified, with a message that names the argument and says
what was expected: ``TypeError`` for a wrong kind of value, ``ValueError`` for a wrong value.
"""

from __future__ import annotations

import numbers

import numpy as np

from .kernels.losses import ANY_TARGETS, CLASS_TARGETS, COUNT_TARGETS, UNIT_TARGETS

# dtype kinds accepted as data: floats as they are; bools and integers are converted to the
# network's float dtype. Everything else (complex, object, strings, dates) is refused.
_CONVERTIBLE_KINDS = "fiub"


def as_array(value, name: str) -> np.ndarray:
    if value is None:
        raise TypeError(f"{name} must be an array, got None")
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as exc:  # ragged nested lists and the like
        raise ValueError(f"{name} could not be read as an array: {exc}") from None
    if array.dtype.kind not in _CONVERTIBLE_KINDS:
        raise TypeError(f"{name} must hold real numbers (float, int or bool), got dtype {array.dtype}")
    return array


# Rows checked at a time: ``np.isfinite`` of a whole array allocates a bool per entry (12.5 GB
# for a 50 GB float32 memory map); a block at a time needs this many.
_FINITE_BLOCK_ENTRIES = 1 << 20


def _finite(array: np.ndarray, name: str) -> None:
    rows = max(1, _FINITE_BLOCK_ENTRIES // max(1, array.size // max(1, array.shape[0]))) if array.ndim else 1
    for start in range(0, max(1, array.shape[0] if array.ndim else 1), rows):
        block = array[start : start + rows] if array.ndim else array
        if not np.isfinite(block).all():
            raise ValueError(f"{name} contains NaN or infinity (after conversion to {array.dtype})")


def as_matrix(value, name: str, dtype, n_cols: int | None = None, rows: int | None = None) -> np.ndarray:
    """A finite, non-empty, C-contiguous 2-D array of ``dtype`` (a copy only when needed)."""
    array = as_array(value, name)
    if array.ndim != 2:
        hint = (
            " (use x.reshape(-1, 1) for a single feature or x.reshape(1, -1) for a single row)"
            if array.ndim == 1
            else ""
        )
        raise ValueError(f"{name} must be 2-D (rows, features), got shape {array.shape}{hint}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {array.shape}")
    if n_cols is not None and array.shape[1] != n_cols:
        raise ValueError(f"{name} has {array.shape[1]} columns; the network expects {n_cols}")
    if rows is not None and array.shape[0] != rows:
        raise ValueError(f"{name} has {array.shape[0]} rows but X has {rows}")
    with np.errstate(over="ignore"):  # an overflow to inf is reported by _finite below
        array = np.ascontiguousarray(array, dtype=dtype)
    _finite(array, name)
    return array


def as_targets(value, name: str, dtype, n_out: int, rows: int, loss=None) -> np.ndarray:
    """Targets as a (rows, n_out) array of ``dtype``, checked against what ``loss`` (a loss's
    declaration, ``kernels.losses.LossSpec``; None: any targets) takes (``LossSpec.targets``).

    For class targets (crossentropy), a 1-D array of integer class labels in [0, n_out) is
    turned into one-hot rows; a 2-D array is taken as one-hot or class probabilities. Otherwise
    a 1-D array is accepted when the network has a single output.
    """
    kind = ANY_TARGETS if loss is None else loss.targets
    array = as_array(value, name)
    if array.ndim == 1:
        if array.shape[0] != rows:
            raise ValueError(f"{name} has {array.shape[0]} rows but X has {rows}")
        if kind == CLASS_TARGETS:
            return _one_hot(array, name, dtype, n_out)
        if n_out != 1:
            raise ValueError(
                f"{name} must be 2-D (rows, {n_out}) for a network with {n_out} outputs, got shape {array.shape}"
            )
        array = array.reshape(-1, 1)
    target = as_matrix(array, name, dtype, n_cols=n_out, rows=rows)
    if kind in (CLASS_TARGETS, UNIT_TARGETS) and ((target < 0).any() or (target > 1).any()):
        raise ValueError(f"{name} must lie in [0, 1] for the {loss.name} loss (one-hot rows or probabilities)")
    if kind == COUNT_TARGETS and (target < 0).any():
        raise ValueError(f"{name} must be >= 0 for the {loss.name} loss (counts or rates)")
    return target


def _one_hot(array: np.ndarray, name: str, dtype, n_out: int) -> np.ndarray:
    if array.dtype.kind == "f":
        if not np.isfinite(array).all() or (array != np.round(array)).any():
            raise ValueError(f"{name} holds class labels, which must be whole numbers")
    elif array.dtype.kind == "b":
        raise TypeError(f"{name} holds class labels, which must be integers, got bool")
    if array.size and (array.min() < 0 or array.max() >= n_out):
        raise ValueError(f"{name} has labels outside 0..{n_out - 1} (the network has {n_out} outputs)")
    target = np.zeros((array.shape[0], n_out), dtype=dtype)
    target[np.arange(array.shape[0]), array.astype(np.int64)] = 1
    return target


def as_sample_weight(value, dtype, rows: int) -> np.ndarray:
    """Non-negative finite row weights with a positive sum; ``None`` means all ones."""
    if value is None:
        return np.ones(rows, dtype=dtype)
    array = as_array(value, "sample_weight")
    if array.ndim != 1 or array.shape[0] != rows:
        raise ValueError(f"sample_weight must be 1-D with one weight per row of X ({rows}), got shape {array.shape}")
    array = np.ascontiguousarray(array, dtype=dtype)
    _finite(array, "sample_weight")
    if (array < 0).any():
        raise ValueError("sample_weight must be >= 0")
    if array.sum() <= 0:
        raise ValueError("sample_weight must have a positive sum")
    return array


def as_int(value, name: str, minimum: int, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        kind = "an int or None" if allow_none else "an int"
        raise TypeError(f"{name} must be {kind}, got {type(value).__name__}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def as_bool(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return bool(value)


def as_real(value, name: str, minimum: float | None = None) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    try:
        value = float(value)
    except OverflowError:  # an int beyond any float
        raise ValueError(f"{name} must be finite, got an integer of {len(str(abs(value)))} digits") from None
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value
