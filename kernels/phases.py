# stamp: 1fb1ab09a96cb55e91df3309a90aaeef
"""The forward and backward passes (``kernels.passes``) as first-class functions: each compiled
on its own, once per dtype, as a C callback over the passes' arguments, so that the training
loop, the validation stage and the entry points call the same compiled code, and none of them
compiles it again inside itself (a callee linked into a caller is optimised again with it).
"""

from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np
from numba import cfunc, typeof, types

from . import layout
from .config import BASE_OPTIONS, DISABLE_JIT
from .jit import CACHE, cached
from .passes import backward_pass, forward_pass
from .pieces import LOG, bundle_type, quiet, register_bundle, seal


class Phases(NamedTuple):
    """The passes of one dtype, as first-class functions."""

    forward: object
    backward: object


FUNCTIONS = Phases(forward_pass, backward_pass)


def signature(kind: str, dtype):
    """The C signature of pass ``kind`` ("forward" or "backward") for ``dtype``."""
    dtype = np.dtype(dtype)
    vector = typeof(np.zeros(1, dtype))
    control = typeof(np.zeros(1, np.int64))
    sample = layout.make_architecture((1, 1), [0])
    architecture = typeof(sample)
    buffers = typeof(layout.make_buffers(sample, 1, dtype))
    pieces, i64, f64 = bundle_type(dtype), types.int64, types.float64
    if kind == "forward":  # tid, n_threads, control, pieces, architecture, params, x, rows, y, row_scale, buffers, loss, gemm, key, row0
        return i64(i64, i64, control, pieces, architecture, vector, vector, i64, vector, vector, buffers, i64, i64, i64, i64)
    if kind == "backward":  # tid, n_threads, control, pieces, architecture, params, grads, x, rows, buffers, l1, l2, gemm, key
        return i64(i64, i64, control, pieces, architecture, vector, vector, vector, i64, buffers, f64, f64, i64, i64)
    raise ValueError(f"unknown pass {kind!r}")


def phases_type(dtype):
    return types.NamedTuple([types.FunctionType(signature(kind, dtype)) for kind in Phases._fields], Phases)


_COMPILED = {}


def compiled(kind: str, dtype):
    """Pass ``kind`` for ``dtype``, compiled (or loaded from Numba's cache) the first time; the
    Python function under NUMBA_DISABLE_JIT."""
    dtype = np.dtype(dtype)
    key = (kind, dtype)
    found = _COMPILED.get(key)
    if found is None:
        function = getattr(FUNCTIONS, kind)
        if DISABLE_JIT:
            found = function
        else:
            start = time.perf_counter()
            with quiet():
                found = cached(cfunc, function, sig=signature(kind, dtype), cache=CACHE, **BASE_OPTIONS)
            LOG.append((f"pass:{kind}", dtype.name, time.perf_counter() - start))
        _COMPILED[key] = found
    return found


def bundle(dtype) -> Phases:
    """Both passes of ``dtype`` (one sealed bundle per dtype: ``pieces.seal``)."""
    dtype = np.dtype(dtype)
    found = _BUNDLES.get(dtype)
    if found is None:
        found = Phases(*(compiled(kind, dtype) for kind in Phases._fields))
        if not DISABLE_JIT:
            seal(found, phases_type(dtype))
        _BUNDLES[dtype] = found
    return found


_BUNDLES = {}
register_bundle(Phases)
