# stamp: ee6d537bef4b826ecb3d32c06d9de0e1
"""The training loop's optional stages, passed to the loop as first-class functions:
``condition`` (clipping and gradient health, ``kernels.condition``) and ``monitor``
(validation and the stopping rule, ``kernels.epoch_end``), each compiled on its own as a C
callback over the loop's bundles, only for fits that need it (others get a stub of the same
signature that does nothing); and ``python``, the fit's way into Python (visits for callbacks,
the progress bar and checkpoints; the exchange between ranks), a ``PythonCall``.

Each stage's signature is built from the Numba types of the loop's bundles for one dtype
(``bundle_types``), which every fit of that dtype shares, so the loop compiled for a dtype takes
any stages.
"""

from __future__ import annotations

import ctypes
import time
from typing import NamedTuple

import numpy as np
from numba import cfunc, typeof, types

from . import condition as condition_module
from . import epoch_end, layout
from .config import BASE_OPTIONS, DISABLE_JIT
from .jit import CACHE, cached
from .phases import phases_type
from .pieces import LOG, bundle_type, quiet


class Stages(NamedTuple):
    """The loop's optional stages (see the module's docstring)."""

    condition: object
    monitor: object
    python: object


COMPILED_KINDS = ("condition", "monitor")


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
                             pieces=bundle_type(dtype), phases=phases_type(dtype))  # fmt: skip
    return _TYPES[dtype]


PYTHON_SIGNATURE = types.int64(types.int64, types.int64)  # (kind, argument) -> answer


def signature(kind: str, dtype):
    """The signature of stage ``kind`` for ``dtype``."""
    if kind == "python":
        return PYTHON_SIGNATURE
    t = bundle_types(dtype)
    i64, f64 = types.int64, types.float64
    if kind == "condition":  # mode, tid, n_threads, control, params, architecture, work, epoch, lo, local, settings
        return i64(i64, i64, i64, t["control"], t["params"], t["architecture"], t["work"], i64, i64, i64, t["settings"])
    if kind == "monitor":  # tid, n_threads, control, phases, pieces, architecture, params, end, epoch, train_loss, loss, gemm
        return i64(i64, i64, t["control"], t["phases"], t["pieces"], t["architecture"], t["params"], t["end"], i64, f64, i64, i64)
    raise ValueError(f"unknown stage {kind!r}")


def stages_type(dtype):
    return types.NamedTuple([types.FunctionType(signature(kind, dtype)) for kind in Stages._fields], Stages)


# The stubs: the same arguments, nothing done.
def condition_stub(mode, tid, n_threads, control, params, architecture, work, epoch, lo, local, settings):
    return np.int64(0)


def monitor_stub(tid, n_threads, control, phases, pieces, architecture, params, end, epoch, train_loss, loss, gemm):
    return np.int64(0)


def python_stub(kind, argument):
    return np.int64(0)


FUNCTIONS = {"condition": condition_module.condition, "monitor": epoch_end.monitor}
STUBS = {"condition": condition_stub, "monitor": monitor_stub, "python": python_stub}

_COMPILED = {}


def compiled(kind: str, dtype, stub=False):
    """Stage ``kind`` (or its stub) for ``dtype``, compiled (or loaded from Numba's cache) the
    first time; the Python function under NUMBA_DISABLE_JIT."""
    dtype = np.dtype(dtype)
    key = (kind, dtype, bool(stub))
    found = _COMPILED.get(key)
    if found is None:
        function = STUBS[kind] if stub else FUNCTIONS[kind]
        if DISABLE_JIT:
            found = function
        else:
            start = time.perf_counter()
            with quiet():
                found = cached(cfunc, function, sig=signature(kind, dtype), cache=CACHE, **BASE_OPTIONS)
            LOG.append((f"stage:{kind}{' (stub)' if stub else ''}", dtype.name, time.perf_counter() - start))
        _COMPILED[key] = found
    return found


def bind(dtype, needed, python=None) -> Stages:
    """The ``Stages`` of a fit: the compiled stages in ``needed`` (names of
    ``COMPILED_KINDS``), stubs for the others, and ``python`` (a ``PythonCall``, or None)."""
    stages = [compiled(kind, dtype, stub=kind not in needed) for kind in COMPILED_KINDS]
    return Stages(*stages, python if python is not None else compiled("python", dtype, stub=True))


# --------------------------------------------------------------------------- into Python
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_int64, ctypes.c_int64)


class PythonCall(types.WrapperAddressProtocol):
    """A Python function ``function(kind, argument) -> int`` that compiled code calls as a
    first-class function: a ctypes callback (which takes the GIL for the call) presented to Numba
    through its documented Wrapper Address Protocol ("First-class function objects").

    An exception the function raises cannot cross compiled code: it is kept in ``error`` (the
    first one), the call answers ``failed`` (1: stop training after this epoch), and the caller
    raises it once the compiled call has returned (``raise_error``).
    """

    def __init__(self, function, failed=1):
        self.function, self.failed, self.error = function, int(failed), None

        def trampoline(kind, argument):
            if self.error is not None:
                return self.failed
            try:
                return int(function(int(kind), int(argument)))
            except BaseException as error:  # handed to the caller by raise_error
                self.error = error
                return self.failed

        self._python = trampoline
        self._callback = _CALLBACK(trampoline)

    def __wrapper_address__(self):
        return ctypes.cast(self._callback, ctypes.c_void_p).value

    def signature(self):
        return PYTHON_SIGNATURE

    def __call__(self, kind, argument):
        return self._python(kind, argument)

    def for_loop(self):
        """What the loop gets: this object compiled, its Python trampoline under
        NUMBA_DISABLE_JIT."""
        return self._python if DISABLE_JIT else self

    def raise_error(self):
        """Raise the exception the function raised, if any (once)."""
        error, self.error = self.error, None
        if error is not None:
            raise error
