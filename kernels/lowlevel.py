"""Low-level operations Numba has no function for, written with its documented extension API,
each with a plain-Python twin (what runs under ``NUMBA_DISABLE_JIT=1`` or from the interpreter).

Documentation pages the code below follows (Numba's user manual unless said otherwise):

* "Extending Numba > Low-level extension API > Implementing intrinsics": ``@intrinsic``, its
  ``codegen(context, builder, signature, args)`` with llvmlite's IR builder, and the example
  that turns an integer into a pointer (``builder.inttoptr`` with ``context.get_value_type``);
* "Extending Numba > High-level extension API": ``@overload``;
* "Supported NumPy features > ndarray attributes": ``arr.ctypes.data``, an array's address;
* "Creating C callbacks with @cfunc": ``numba.carray``, an array over a pointer;
* llvmlite's "IR builder" reference: ``load_atomic``, ``store_atomic``, ``atomic_rmw``, ``call``.

Every intrinsic takes exactly the integer types it declares (``int64``, ``uintp``), so no
conversion between Numba's types is needed, and returns a value (``int64`` where C returns
nothing useful), so none needs a "no value" of Numba's.

Pointers. The training loop turns each buffer into a view without a reference count
(``unowned``: ``carray`` over the array's address), so that passing it to a helper or slicing it
costs no atomic increment; the matrix-product tile and BLAS take typed pointers (``pointer``).
"""

from __future__ import annotations

import ctypes
import os
import platform
import time
import weakref

import numpy as np
from llvmlite import ir
from numba import carray, types
from numba.extending import intrinsic, overload

from .jit import helper

_I64 = ir.IntType(64)

# --------------------------------------------------------------------------- pointers


@helper
def span(start, count):
    """``range(start, start + count)`` over unsigned integers, for compiled loops (Numba cannot
    return a range to Python; under NUMBA_DISABLE_JIT this is the plain function). Indexing
    by it needs neither a slice (each view's creation and end call the runtime's reference
    count) nor Numba's wraparound test for negative indices (which keeps LLVM from vectorising
    a loop whose index is an offset plus the loop's counter)."""
    return range(np.uint64(start), np.uint64(start + count))


def pointer(array, start):
    """A pointer to element ``start`` of a C-contiguous array's flat storage (in Python: the
    flat view from there on)."""
    return array.reshape(-1)[start:]


def unowned(array):
    """The same elements as a 1-D view that holds no reference to the array's memory (in compiled
    code, ``carray`` over its address; in Python, the flat view). The caller keeps the array
    alive for as long as the view is used."""
    return array.reshape(-1)


def unowned2(array):
    """``unowned`` of a C-contiguous 2-D array, as a 2-D view."""
    return array


@intrinsic
def _address_as_pointer(typingctx, address, start, model):
    # ``model``'s element type at ``address``, ``start`` elements on: inttoptr (the documented
    # example), then getelementptr.
    if address != types.uintp or start != types.int64 or not isinstance(model, types.Array):
        return None
    result = types.CPointer(model.dtype)

    def codegen(context, builder, signature, args):
        base = builder.inttoptr(args[0], context.get_value_type(result))
        return builder.gep(base, [args[1]])

    return result(address, start, model), codegen


@overload(pointer)
def _pointer(array, start):
    if isinstance(array, types.Array):
        return lambda array, start: _address_as_pointer(array.ctypes.data, np.int64(start), array)


@overload(unowned)
def _unowned(array):
    if isinstance(array, types.Array):
        return lambda array: carray(_address_as_pointer(array.ctypes.data, np.int64(0), array), array.size)


@overload(unowned2)
def _unowned2(array):
    if isinstance(array, types.Array) and array.ndim == 2:
        return lambda array: carray(_address_as_pointer(array.ctypes.data, np.int64(0), array), array.shape)


# --------------------------------------------------------------------------- addresses
# A compiled pass (``passes.piece``) receives its arguments as one record in memory, by the
# record's address; it views the arrays the record names by their addresses.


def address(array, index):
    """The address (int64) of element ``index`` of a C-contiguous array."""
    return int(array.ctypes.data) + int(index) * array.itemsize


@overload(address)
def _address(array, index):
    if isinstance(array, types.Array):
        size = array.dtype.bitwidth // 8 if isinstance(array.dtype, types.Number) else array.dtype.size
        return lambda array, index: np.int64(array.ctypes.data) + np.int64(index) * size


def as_array(address, count, like):
    """The ``count`` elements at ``address`` as a 1-D array of ``like``'s dtype (``like``: any
    array of that dtype), holding no reference to the memory (the caller keeps it alive)."""
    dtype = like.dtype
    if count <= 0:
        return np.zeros(0, dtype=dtype)
    buffer = (ctypes.c_char * (int(count) * dtype.itemsize)).from_address(int(address))
    return np.frombuffer(buffer, dtype=dtype, count=int(count))


@intrinsic
def _typed_pointer(typingctx, address, like):
    # ``like``'s element type at ``address`` (int64): inttoptr, as the documented example.
    if address != types.int64 or not isinstance(like, types.Array):
        return None
    result = types.CPointer(like.dtype)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(result))

    return result(address, like), codegen


@overload(as_array)
def _as_array(address, count, like):
    if isinstance(like, types.Array):
        return lambda address, count, like: carray(_typed_pointer(np.int64(address), like), count)


@intrinsic
def _call_piece(typingctx, address, first, second, third):
    # int64 f(int64, int64, int64) at ``address``.
    if any(x != types.int64 for x in (address, first, second, third)):
        return None

    def codegen(context, builder, signature, args):
        function_type = ir.FunctionType(_I64, [_I64, _I64, _I64])
        return builder.call(builder.inttoptr(args[0], function_type.as_pointer()), list(args[1:]))

    return types.int64(address, first, second, third), codegen


# address -> the Python function behind it (a piece under NUMBA_DISABLE_JIT, which has no
# compiled code: ``call_piece`` in plain Python calls it).
PIECES = {}


def call_piece(address, first, second, third):
    """Call the compiled piece ``int64 f(int64, int64, int64)`` at ``address``."""
    return int(PIECES[int(address)](first, second, third))


@overload(call_piece)
def _ol_call_piece(address, first, second, third):
    return lambda address, first, second, third: _call_piece(
        np.int64(address), np.int64(first), np.int64(second), np.int64(third)
    )


# --------------------------------------------------------------------------- atomics


def atomic_load(array, index):
    """``array[index]`` of an int64 array, read with acquire ordering in compiled code (a write
    another thread released before is seen; LLVM cannot hoist the read out of a loop)."""
    return array[index]


def atomic_store(array, index, value):
    """``array[index] = value`` (int64) with release ordering in compiled code."""
    array[index] = value


def atomic_add(array, index, value):
    """``array[index] += value`` (int64), atomically in compiled code; returns the value before."""
    before = array[index]
    array[index] = before + value
    return before


def _int64_pointer(data):
    return isinstance(data, types.CPointer) and data.dtype == types.int64


@intrinsic
def _load_acquire(typingctx, data):
    if not _int64_pointer(data):
        return None

    def codegen(context, builder, signature, args):
        return builder.load_atomic(args[0], "acquire", 8)

    return types.int64(data), codegen


@intrinsic
def _store_release(typingctx, data, value):
    if not _int64_pointer(data) or value != types.int64:
        return None

    def codegen(context, builder, signature, args):
        builder.store_atomic(args[1], args[0], "release", 8)
        return args[1]

    return types.int64(data, value), codegen


@intrinsic
def _fetch_add(typingctx, data, value):
    if not _int64_pointer(data) or value != types.int64:
        return None

    def codegen(context, builder, signature, args):
        return builder.atomic_rmw("add", args[0], args[1], "acq_rel")

    return types.int64(data, value), codegen


def _int64_array(array):
    return isinstance(array, types.Array) and array.dtype == types.int64


@overload(atomic_load)
def _atomic_load(array, index):
    if _int64_array(array):
        return lambda array, index: _load_acquire(pointer(array, index))


@overload(atomic_store)
def _atomic_store(array, index, value):
    if _int64_array(array):
        return lambda array, index, value: _store_release(pointer(array, index), np.int64(value))


@overload(atomic_add)
def _atomic_add(array, index, value):
    if _int64_array(array):
        return lambda array, index, value: _fetch_add(pointer(array, index), np.int64(value))


# --------------------------------------------------------------------------- waiting

# The CPU's spin-wait hint on x86, LLVM's ``llvm.x86.sse2.pause`` (named in LLVM's X86 intrinsics,
# llvm/include/llvm/IR/IntrinsicsX86.td); nothing on other CPUs.
_PAUSE = "llvm.x86.sse2.pause" if platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86") else None


def spin_pause():
    """The CPU's spin-wait hint (x86 ``pause``; nothing in Python or on other CPUs)."""
    return 0


@intrinsic
def _pause(typingctx):
    def codegen(context, builder, signature, args):
        if _PAUSE is not None:
            function = builder.module.globals.get(_PAUSE) or ir.Function(
                builder.module, ir.FunctionType(ir.VoidType(), []), _PAUSE
            )
            builder.call(function, [])
        return ir.Constant(_I64, 0)

    return types.int64(), codegen


@overload(spin_pause)
def _spin_pause():
    return lambda: _pause()


# --------------------------------------------------------------------------- calls to C


@intrinsic
def _call_int(typingctx, address):
    # int f(void) at ``address``.
    if address != types.int64:
        return None

    def codegen(context, builder, signature, args):
        function_type = ir.FunctionType(ir.IntType(32), [])
        result = builder.call(builder.inttoptr(args[0], function_type.as_pointer()), [])
        return builder.sext(result, _I64)

    return types.int64(address), codegen


def call_void(address):
    """Call the C function ``int f(void)`` at ``address`` (0: nothing); in Python, nothing."""
    return 0


@overload(call_void)
def _call_void(address):
    def impl(address):
        if address != 0:
            return _call_int(np.int64(address))
        return np.int64(0)

    return impl


@intrinsic
def _call_int64_int64(typingctx, address, first, second):
    # int64 f(int64, int64) at ``address`` (a ctypes callback into Python: it takes the GIL).
    if address != types.int64 or first != types.int64 or second != types.int64:
        return None

    def codegen(context, builder, signature, args):
        function_type = ir.FunctionType(_I64, [_I64, _I64])
        return builder.call(builder.inttoptr(args[0], function_type.as_pointer()), [args[1], args[2]])

    return types.int64(address, first, second), codegen


# address -> the Python function behind a callback (``kernels.train.PythonCall`` registers its
# own), so that ``call_python`` in plain Python (NUMBA_DISABLE_JIT) calls it too.
CALLBACKS = weakref.WeakValueDictionary()


def call_python(address, kind, argument):
    """Call the ctypes callback ``int64 f(int64, int64)`` at ``address`` (0: none; answers 0):
    the training loop's way into Python (``kernels.train.PythonCall``)."""
    function = CALLBACKS.get(int(address))
    return 0 if function is None else int(function(kind, argument))


@overload(call_python)
def _call_python(address, kind, argument):
    def impl(address, kind, argument):
        if address == 0:
            return np.int64(0)
        return _call_int64_int64(np.int64(address), np.int64(kind), np.int64(argument))

    return impl


def yield_address() -> int:
    """The address of the C library's "let another thread run" call (POSIX ``sched_yield``,
    Windows ``SwitchToThread``), found through ctypes; 0 where there is none. Passed to compiled
    code at run time (``call_void``), so the code stays cacheable."""
    try:
        if os.name == "nt":  # pragma: no cover - Windows
            function = ctypes.WinDLL("kernel32").SwitchToThread
        else:
            function = ctypes.CDLL(None).sched_yield
        return ctypes.cast(function, ctypes.c_void_p).value or 0
    except (OSError, AttributeError):
        return 0


# --------------------------------------------------------------------------- clock

CLOCK_NONE = 0  # no clock: time does not advance (timed visits never fall due)
CLOCK_POSIX = 1  # int clock_gettime(clockid, struct timespec *): two 64-bit fields
CLOCK_WINDOWS = 2  # BOOL QueryPerformanceCounter(LARGE_INTEGER *), ticks at a known frequency


def clock_source():
    """``(kind, address, parameter)`` of a monotonic clock compiled code can read
    (``monotonic_ns``): POSIX ``clock_gettime`` with CLOCK_MONOTONIC, Windows
    ``QueryPerformanceCounter`` with its frequency, else ``CLOCK_NONE``."""
    try:
        if os.name == "nt":  # pragma: no cover - Windows
            kernel32 = ctypes.WinDLL("kernel32")
            frequency = ctypes.c_int64()
            kernel32.QueryPerformanceFrequency(ctypes.byref(frequency))
            return (
                CLOCK_WINDOWS,
                ctypes.cast(kernel32.QueryPerformanceCounter, ctypes.c_void_p).value,
                int(frequency.value),
            )
        if hasattr(time, "CLOCK_MONOTONIC") and ctypes.sizeof(ctypes.c_long) == 8:
            function = ctypes.CDLL(None).clock_gettime
            return CLOCK_POSIX, ctypes.cast(function, ctypes.c_void_p).value, int(time.CLOCK_MONOTONIC)
    except (OSError, AttributeError):
        pass
    return CLOCK_NONE, 0, 0


def monotonic_ns(kind, address, parameter, scratch):
    """Monotonic nanoseconds from the clock ``clock_source`` found (``scratch``: two int64 of
    room); in Python, ``time.monotonic_ns()``."""
    return time.monotonic_ns()


@intrinsic
def _call_clock(typingctx, address, argument, data):
    # int f(int, int64 *) when ``argument`` >= 0 (clock_gettime), else int f(int64 *).
    if address != types.int64 or argument != types.int64 or not _int64_pointer(data):
        return None

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        target, value, scratch = args
        with builder.if_else(builder.icmp_signed(">=", value, ir.Constant(_I64, 0))) as (with_id, without):
            with with_id:
                function_type = ir.FunctionType(i32, [i32, scratch.type])
                builder.call(builder.inttoptr(target, function_type.as_pointer()), [builder.trunc(value, i32), scratch])
            with without:
                function_type = ir.FunctionType(i32, [scratch.type])
                builder.call(builder.inttoptr(target, function_type.as_pointer()), [scratch])
        return ir.Constant(_I64, 0)

    return types.int64(address, argument, data), codegen


@overload(monotonic_ns)
def _monotonic_ns(kind, address, parameter, scratch):
    def impl(kind, address, parameter, scratch):
        if kind == CLOCK_POSIX:
            _call_clock(np.int64(address), np.int64(parameter), pointer(scratch, 0))
            return scratch[0] * 1_000_000_000 + scratch[1]
        if kind == CLOCK_WINDOWS:
            _call_clock(np.int64(address), np.int64(-1), pointer(scratch, 0))
            ticks = scratch[0]
            return (ticks // parameter) * 1_000_000_000 + (ticks % parameter) * 1_000_000_000 // parameter
        return np.int64(0)

    return impl


# --------------------------------------------------------------------------- select


def select(condition, if_true, if_false):
    """``if_true if condition else if_false``, as one LLVM ``select`` in compiled code: no branch,
    so straight-line code that uses it stays one basic block (Numba may inline it anywhere, and
    LLVM vectorises loops over it). In Python, ``numpy.where`` when an argument is an array (the
    NumPy twins run the same element rules on whole arrays)."""
    if np.ndim(condition) == 0 and np.ndim(if_true) == 0 and np.ndim(if_false) == 0:
        return if_true if condition else if_false
    return np.where(condition, if_true, if_false)


@intrinsic
def _select(typingctx, condition, if_true, if_false):
    if condition != types.boolean or if_true != if_false or not isinstance(if_true, (types.Float, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        return builder.select(args[0], args[1], args[2])

    return if_true(condition, if_true, if_false), codegen


@overload(select)
def _ol_select(condition, if_true, if_false):
    if isinstance(if_true, (types.Float, types.Integer)) and if_true == if_false:
        return lambda condition, if_true, if_false: _select(condition, if_true, if_false)


# --------------------------------------------------------------------------- bit casts


def float32_from_bits(bits):
    """The float32 whose bit pattern is the int32 ``bits`` (what C does with a union)."""
    return np.array(bits, dtype=np.int32).view(np.float32)[()]


def float64_from_bits(bits):
    """The float64 whose bit pattern is the int64 ``bits``."""
    return np.array(bits, dtype=np.int64).view(np.float64)[()]


def float64_bits(value):
    """The int64 bit pattern of a float64."""
    return np.array(value, dtype=np.float64).view(np.int64)[()]


def float32_bits(value):
    """The int32 bit pattern of a float32."""
    return np.array(value, dtype=np.float32).view(np.int32)[()]


def _bitcast(source, target):
    @intrinsic
    def cast(typingctx, value):
        if value != source:
            return None

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(target))

        return target(value), codegen

    return cast


_float32_from_bits = _bitcast(types.int32, types.float32)
_float64_from_bits = _bitcast(types.int64, types.float64)
_float64_bits = _bitcast(types.float64, types.int64)
_float32_bits = _bitcast(types.float32, types.int32)


@overload(float32_from_bits)
def _ol_float32_from_bits(bits):
    return lambda bits: _float32_from_bits(np.int32(bits))


@overload(float64_from_bits)
def _ol_float64_from_bits(bits):
    return lambda bits: _float64_from_bits(np.int64(bits))


@overload(float64_bits)
def _ol_float64_bits(value):
    return lambda value: _float64_bits(np.float64(value))


@overload(float32_bits)
def _ol_float32_bits(value):
    return lambda value: _float32_bits(np.float32(value))
