# stamp: 835971e90f0b327891490f871efaf4b0
"""The pieces: the small kernels a network's configuration chooses, each compiled on its own as a
C callback (``numba.cfunc``) over pointers and sizes, once per dtype, and handed to the compiled
passes and training loop as first-class function values (Numba's "First-class function
objects"). The passes and the loop are compiled once per dtype and call whichever pieces they
are given; a piece's code is never compiled into a caller, so a setting never used before
compiles only the pieces it adds (one activation, one loss, one optimizer: ~0.3 s each).

Kinds, each with one signature (``signature``), so Numba type-checks every call: a function of
another signature is a typing error, never undefined behaviour:

* ``activation``: one per activation code (``activations.activation_piece``);
* ``loss``: one per loss code (``losses.loss_piece``);
* ``update``: one per optimizer code (``optim.update_piece``);
* ``product``: one per path, ``loops``, ``tiles``, ``blas`` (``kernels.products``).

A network's passes take a ``Pieces`` bundle: a tuple of every activation and every loss (indexed
by code) and the three product paths; the training loop also takes the tuple of updates
(indexed by optimizer code). Slots a network never calls hold another piece of their kind
(``bundle``), so nothing is compiled for them. Under ``NUMBA_DISABLE_JIT=1`` the pieces are the
plain Python functions, and their pointers are NumPy views (``kernels.lowlevel``).
"""

from __future__ import annotations

import contextlib
import ctypes
import time
import warnings
from typing import NamedTuple

import numpy as np
from numba.extending import typeof_impl
from numba import cfunc, types
from numba.core.errors import NumbaExperimentalFeatureWarning

from . import activations, losses, optim, products
from .config import BASE_OPTIONS, DISABLE_JIT
from .jit import CACHE, cached

DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
PATHS = ("loops", "tiles", "blas")  # products.LOOPS, TILES, BLAS
_PRODUCTS = {"loops": products.product_loops, "tiles": products.product_tiles, "blas": products.product_blas}


class Pieces(NamedTuple):
    """What the passes call (see the module's docstring): ``activations`` and ``losses`` by
    code, then the product paths."""

    activations: tuple
    losses: tuple
    loops: object
    tiles: object
    blas: object


def function(kind: str, name):
    """The Python function of piece ``(kind, name)``: ``name`` a code, or a product path."""
    if kind == "activation":
        return activations.activation_piece(name)
    if kind == "loss":
        return losses.loss_piece(name)
    if kind == "update":
        return optim.update_piece(name)
    if kind == "product":
        return _PRODUCTS[name]
    raise ValueError(f"unknown kind of piece {kind!r}")


def element_type(dtype):
    return {np.dtype(np.float32): types.float32, np.dtype(np.float64): types.float64}[np.dtype(dtype)]


def signature(kind: str, dtype):
    """The C signature every piece of ``kind`` is compiled with, for buffers of ``dtype``."""
    pointer, i64, n = types.CPointer(element_type(dtype)), types.int64, types.intp
    if kind == "activation":  # mode, rows, width, three blocks
        return types.void(i64, n, n, pointer, pointer, pointer)
    if kind == "loss":  # rows, width, z, a, y, scales, delta
        return types.float64(n, n, pointer, pointer, pointer, pointer, pointer)
    if kind == "update":  # first, stop, width, slots, params, grads, state, step, lr, hyper
        return types.void(n, n, n, n, pointer, pointer, pointer, i64, types.float64, types.CPointer(types.float64))
    if kind == "product":  # shape, m, n, k, a, lda, b, ldb, c, ldc, gemm
        return types.void(i64, n, n, n, pointer, n, pointer, n, pointer, n, i64)
    raise ValueError(f"unknown kind of piece {kind!r}")


def function_type(kind: str, dtype):
    """The Numba type of a piece of ``kind`` as a value (a first-class function)."""
    return types.FunctionType(signature(kind, dtype))


def bundle_type(dtype):
    """The Numba type of a ``Pieces`` of ``dtype``."""
    product = function_type("product", dtype)
    return types.NamedTuple([types.UniTuple(function_type("activation", dtype), len(activations.SPECS)),
                             types.UniTuple(function_type("loss", dtype), len(losses.SPECS)), product, product, product],
                            Pieces)  # fmt: skip


def updates_type(dtype):
    """The Numba type of the tuple of updates (``updates``)."""
    return types.UniTuple(function_type("update", dtype), len(optim.SPECS))


_COMPILED = {}
# (label, dtype name, seconds): what this process compiled or loaded, in order (for ``python -m
# fastgd compile`` and the start-up figures).
LOG = []


def label(kind: str, name) -> str:
    """A piece's name: ``activation:sigmoid``, ``loss:mse``, ``update:adam``, ``product:tiles``."""
    table = {"activation": activations.SPECS, "loss": losses.SPECS, "update": optim.SPECS}.get(kind)
    return f"{kind}:{table[name].name if table else name}"


def compiled(kind: str, name, dtype):
    """Piece ``(kind, name)`` for ``dtype``: a ``numba.cfunc`` (compiled, or loaded from Numba's
    cache, the first time), or the Python function under NUMBA_DISABLE_JIT."""
    dtype = np.dtype(dtype)
    key = (kind, name, dtype)
    found = _COMPILED.get(key)
    if found is None:
        python_function = function(kind, name)
        if DISABLE_JIT:
            found = python_function
        else:
            start = time.perf_counter()
            with quiet():
                found = cached(cfunc, python_function, sig=signature(kind, dtype), cache=CACHE, **BASE_OPTIONS)
            LOG.append((label(kind, name), dtype.name, time.perf_counter() - start))
        _COMPILED[key] = found
    return found


def is_loaded(kind: str, name, dtype) -> bool:
    """Whether this process has piece ``(kind, name)`` for ``dtype`` already."""
    return (kind, name, np.dtype(dtype)) in _COMPILED


@contextlib.contextmanager
def quiet():
    """A context in which Numba's note that first-class functions are "experimental" (since
    0.49) is not shown: fastgd's tests cover its use of them; the note is not the user's."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NumbaExperimentalFeatureWarning)
        yield


def _filled(kind, table_size, wanted, dtype):
    # A tuple of table_size pieces: the wanted codes' own, any other slot the first of them.
    wanted = sorted(set(int(code) for code in wanted))
    pieces = {code: compiled(kind, code, dtype) for code in wanted}
    first = pieces[wanted[0]]
    return tuple(pieces.get(code, first) for code in range(table_size))


def bundle(dtype, activation_codes, loss_code, paths=("loops",)) -> Pieces:
    """The ``Pieces`` of a network: its activations (``activation_codes``), its loss and the
    product ``paths`` it can take (``layout.paths``); other slots hold one of those. Built once
    per combination and ``seal``-ed: a compiled call's arguments are typed at every call, and
    typing a tuple of first-class functions element by element costs ~0.1 ms."""
    dtype = np.dtype(dtype)
    key = (dtype, tuple(sorted(set(int(code) for code in activation_codes))), int(loss_code), tuple(paths))
    found = _BUNDLES.get(key)
    if found is None:
        activation_slots = _filled("activation", len(activations.SPECS), activation_codes, dtype)
        loss_slots = _filled("loss", len(losses.SPECS), [loss_code], dtype)
        path_pieces = {path: compiled("product", path, dtype) for path in paths}
        loops = path_pieces.get("loops") or next(iter(path_pieces.values()))
        found = Pieces(activation_slots, loss_slots, loops, path_pieces.get("tiles", loops), path_pieces.get("blas", loops))
        if not DISABLE_JIT:
            seal(found, bundle_type(dtype))
        _BUNDLES[key] = found
    return found


_BUNDLES = {}

# --------------------------------------------------------------------------- argument types
# Numba types every argument of a compiled call at every call. A bundle of first-class functions
# built here (all of one dtype's signatures, by construction) is "sealed": its type is recorded
# once and returned by the typeof hook below (``numba.extending.typeof_impl``, the documented
# hook of "Extending Numba"), with the bundle kept alive so that its id stays its own. Any other
# bundle of these classes is typed element by element, as Numba types a tuple.
_SEALED = {}


def seal(value, numba_type):
    """Record ``numba_type`` as the type of ``value`` (a bundle this package built)."""
    _SEALED[id(value)] = (value, numba_type)
    return value


def typeof_element_by_element(value, context):
    """Numba's typing of a tuple (the type of each element), for a bundle not sealed."""
    element_types = [typeof_impl(item, context) for item in value]
    if any(item is None for item in element_types):
        return None
    return types.BaseTuple.from_types(element_types, type(value))


def register_bundle(cls):
    """Type sealed instances of the NamedTuple class ``cls`` by their record (``seal``)."""

    @typeof_impl.register(cls)
    def _typeof_bundle(value, context):
        found = _SEALED.get(id(value))
        if found is not None and found[0] is value:
            return found[1]
        return typeof_element_by_element(value, context)

    return cls


register_bundle(Pieces)


def updates(dtype, optimizer_code) -> tuple:
    """The tuple of updates for a fit with optimizer ``optimizer_code`` (its own in its slot)."""
    return _filled("update", len(optim.SPECS), [optimizer_code], dtype)


# --------------------------------------------------------------------------- from Python
# A compiled piece is called from Python through its ctypes interface (``CFunc.ctypes``), with
# pointers into the arrays; a Python piece (NUMBA_DISABLE_JIT) with the arrays' flat views.


def _pointer(array, start, pointer_type):
    flat = array.reshape(-1)
    if DISABLE_JIT:
        return flat[start:]
    return ctypes.cast(flat.ctypes.data + int(start) * flat.itemsize, pointer_type)


def call(kind: str, name, dtype, *arguments):
    """Call piece ``(kind, name)`` of ``dtype`` from Python: arrays are passed as ``(array,
    start)`` pairs (a pointer to that element of its C-contiguous storage), others as they are."""
    piece = compiled(kind, name, dtype)
    if DISABLE_JIT:
        return piece(*[_pointer(a[0], a[1], None) if isinstance(a, tuple) else a for a in arguments])
    interface = piece.ctypes
    values = [_pointer(a[0], a[1], ctype) if isinstance(a, tuple) else a for a, ctype in zip(arguments, interface.argtypes)]
    return interface(*values)


def call_update(code, params, grads, state, step, lr, hyper):
    """One optimizer step over all of ``params`` by the compiled update of optimizer ``code``
    (``state``: C-contiguous, one row per state buffer)."""
    vector = np.zeros(optim.HYPER_WIDTH)
    vector[: len(hyper)] = hyper
    n = params.size
    call("update", int(code), params.dtype, 0, n, n, state.shape[0], (params, 0), (grads, 0), (state, 0), int(step), float(lr),
         (vector, 0))  # fmt: skip
