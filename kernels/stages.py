# stamp: af1e04b1f77180ea3a626eb45bae7987
"""The training loop's optional stages, each compiled on its own as a C callback over the
loop's bundles and passed to the loop as a first-class function: ``condition`` (clipping and
gradient health, ``kernels.condition``), ``monitor`` (validation and the stopping rule,
``kernels.epoch_end``), ``visit`` (visits to Python) and ``exchange`` (the sum over ranks,
``kernels.exchange``). A fit that needs a stage gets it; one that does not gets a stub of the
same signature that does nothing, so a plain fit compiles none of them.

Each stage's signature is built from the Numba types of the loop's bundles for one dtype
(``bundle_types``), which every fit of that dtype shares.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np
from numba import cfunc, typeof, types

from . import condition as condition_module
from . import epoch_end, exchange, layout, optim
from .config import BASE_OPTIONS, DISABLE_JIT
from .jit import CACHE
from .pieces import LOG, bundle_type, quiet


class Stages(NamedTuple):
    """The loop's optional stages (see the module's docstring)."""

    condition: object
    monitor: object
    visit: object
    exchange: object


KINDS = Stages._fields


def readonly(data):
    """``data`` with read-only views of its arrays: the loop is compiled for read-only inputs
    (it never writes them), so that read-only arrays (memory maps, broadcasts) and writable ones
    share one compiled loop."""
    views = []
    for array in data:
        if array.flags.writeable:
            array = array.view()
            array.setflags(write=False)
        views.append(array)
    return type(data)(*views)


def sample_bundles(dtype):
    """(architecture, state, data, work, settings, end) of the types every fit in ``dtype``
    uses (tiny sizes)."""
    dtype = np.dtype(dtype)
    architecture = layout.make_architecture((1, 1), [0])
    n_params = architecture.n_params
    state = layout.TrainState(np.zeros(n_params, dtype), np.zeros((1, n_params), dtype), np.zeros(1, np.int64))
    data = readonly(layout.Data(np.zeros((1, 1), dtype), np.zeros((1, 1), dtype), np.ones(1, dtype)))
    work = layout.make_work(architecture, 1, 1, 1, 1, dtype)
    settings = layout.make_settings(loss=0, optimizer=0, batch_size=1, lr=0.1, hyper=np.zeros(1))
    return architecture, state, data, work, settings, layout.make_epoch_end(architecture, dtype, 1)


_TYPES = {}


def bundle_types(dtype) -> dict:
    """The Numba types of the loop's arguments for ``dtype``, by name."""
    dtype = np.dtype(dtype)
    if dtype not in _TYPES:
        architecture, state, data, work, settings, end = sample_bundles(dtype)
        _TYPES[dtype] = dict(control=typeof(np.zeros(1, np.int64)), params=typeof(state.params), architecture=typeof(architecture),
                             state=typeof(state), data=typeof(data), work=typeof(work), settings=typeof(settings), end=typeof(end),
                             pieces=bundle_type(dtype), updates=types.UniTuple(_update_type(dtype), len(optim.SPECS)))  # fmt: skip
    return _TYPES[dtype]


def _update_type(dtype):
    from .pieces import function_type

    return function_type("update", dtype)


def signature(kind: str, dtype):
    """The C signature of stage ``kind`` for ``dtype``."""
    t = bundle_types(dtype)
    i64, f64 = types.int64, types.float64
    if kind == "condition":  # mode, tid, n_threads, control, params, architecture, work, epoch, lo, local, settings
        return i64(i64, i64, i64, t["control"], t["params"], t["architecture"], t["work"], i64, i64, i64, t["settings"])
    if kind == "monitor":  # tid, n_threads, control, pieces, architecture, params, end, epoch, train_loss, loss, gemm
        return i64(i64, i64, t["control"], t["pieces"], t["architecture"], t["params"], t["end"], i64, f64, i64, i64)
    if kind == "visit":  # channel, kind, epoch
        return i64(i64, i64, i64)
    if kind == "exchange":  # mode, tid, n_threads, control, channel, grads, scalars, sample_weight, order, batch_size, value
        work, data = t["work"], t["data"]
        return f64(i64, i64, i64, t["control"], i64, _field(work, "grads"), _field(work, "scalars"), _field(data, "sample_weight"),
                   _field(work, "order"), i64, f64)  # fmt: skip
    raise ValueError(f"unknown stage {kind!r}")


def _field(named_tuple_type, name):
    return named_tuple_type.types[named_tuple_type.fields.index(name)]


def stage_type(kind: str, dtype):
    return types.FunctionType(signature(kind, dtype))


def stages_type(dtype):
    return types.NamedTuple([stage_type(kind, dtype) for kind in KINDS], Stages)


# The stubs: the same arguments, nothing done.
def condition_stub(mode, tid, n_threads, control, params, architecture, work, epoch, lo, local, settings):
    return np.int64(0)


def monitor_stub(tid, n_threads, control, pieces, architecture, params, end, epoch, train_loss, loss, gemm):
    return np.int64(0)


def visit_stub(channel, kind, epoch):
    return np.int64(0)


def exchange_stub(mode, tid, n_threads, control, channel, grads, scalars, sample_weight, order, batch_size, value):
    return value


FUNCTIONS = Stages(condition_module.condition, epoch_end.monitor, epoch_end.visit, exchange.exchange)
STUBS = Stages(condition_stub, monitor_stub, visit_stub, exchange_stub)
# Stages that take the GIL (objmode) are compiled without nogil.
_TAKES_GIL = ("visit", "exchange")

_COMPILED = {}


def compiled(kind: str, dtype, stub=False):
    """Stage ``kind`` (or its stub) for ``dtype``, compiled (or loaded from Numba's cache) the
    first time; the Python function under NUMBA_DISABLE_JIT."""
    dtype = np.dtype(dtype)
    key = (kind, dtype, bool(stub))
    found = _COMPILED.get(key)
    if found is None:
        function = getattr(STUBS if stub else FUNCTIONS, kind)
        if DISABLE_JIT:
            found = function
        else:
            options = {key: value for key, value in BASE_OPTIONS.items() if key != "nogil" or kind not in _TAKES_GIL}
            start = time.perf_counter()
            with quiet():
                found = cfunc(signature(kind, dtype), cache=CACHE, **options)(function)
            LOG.append((f"stage:{kind}{' (stub)' if stub else ''}", dtype.name, time.perf_counter() - start))
        _COMPILED[key] = found
    return found


def bind(dtype, needed) -> Stages:
    """The ``Stages`` of a fit: the stages in ``needed`` (names of ``KINDS``), stubs for the
    others."""
    return Stages(*(compiled(kind, dtype, stub=kind not in needed) for kind in KINDS))
