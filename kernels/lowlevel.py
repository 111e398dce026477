"""Low-level operations that Numba has no function for, written with Numba's documented
extension API, each with a plain-Python twin.

Every operation here is a Python function (what runs under ``NUMBA_DISABLE_JIT=1``, or when
called from the interpreter) with an ``@overload`` for compiled code, which uses an
``@intrinsic`` written as in Numba's documentation:

* "Extending Numba > Low-level extension API > Implementing intrinsics": the ``@intrinsic``
  decorator, its ``codegen(context, builder, signature, args)`` with llvmlite's IR builder, and
  the example that turns an integer into a pointer with ``builder.inttoptr``;
* "Extending Numba > High-level extension API": ``@overload``;
* "Supported NumPy features > ndarray attributes": ``arr.ctypes.data``, an array's address;
* "Creating C callbacks with @cfunc": ``numba.carray``, an array over a pointer.

No private name of Numba is used: ``context.get_value_type`` and ``context.cast`` are the
target context's methods the documentation's intrinsic examples call.

Pointers: compiled code passes the pieces (``kernels.pieces``) typed pointers into flat buffers
(``pointer``) and a piece sees them as arrays (``view``). In plain Python a "pointer" is the
NumPy view that starts there, so the same code runs both ways.

The overloads are not ``inline="always"``: Numba would then type each one's body again at every
call site (the training loop has hundreds), whereas as ordinary functions they are typed once per
signature and LLVM inlines them anyway. Measured on a cold xor fit, one process: the loop's
compile 7.8 -> 6.3 s, the whole fit 8.3 -> 6.7 s with the helper process; a step 0.93 -> 0.86 µs.
(A side effect: Numba refuses ``lowlevel.view(...)`` written as an attribute call, which it
takes for ``ndarray.view``; compiled code imports ``view`` by name.)
"""

from __future__ import annotations

import ctypes
import os
import platform
import time

import numpy as np
from llvmlite import ir
from numba import carray, types
from numba.extending import intrinsic, overload

# --------------------------------------------------------------------------- pointers


def pointer(array, start):
    """A pointer to element ``start`` of a C-contiguous array's flat storage (in Python: the
    flat view from there on)."""
    return array.reshape(-1)[start:]


def advance(data, count):
    """The pointer ``count`` elements after ``data``."""
    return data[count:]


def element_size(data):
    """Bytes per element of what a pointer points at."""
    return data.itemsize


def view(data, count):
    """The ``count`` elements a pointer points at, as a 1-D array (``numba.carray``)."""
    return data[:count]


def view2(data, rows, columns):
    """``rows × columns`` elements from a pointer, as a row-major 2-D array."""
    return data[: rows * columns].reshape(rows, columns)


@intrinsic
def _address_as_pointer(typingctx, address, start, model):
    # ``model``'s element type at ``address`` + ``start`` elements: inttoptr (the documented
    # example), then a getelementptr by ``start``.
    if not isinstance(address, types.Integer) or not isinstance(start, types.Integer) or not isinstance(model, types.Array):
        return None
    result = types.CPointer(model.dtype)

    def codegen(context, builder, signature, args):
        base = builder.inttoptr(args[0], context.get_value_type(result))
        offset = context.cast(builder, args[1], signature.args[1], types.intp)
        return builder.gep(base, [offset])

    return result(address, start, model), codegen


@overload(pointer)
def _pointer(array, start):
    if not isinstance(array, types.Array):
        return None

    def impl(array, start):
        return _address_as_pointer(array.ctypes.data, start, array)

    return impl


@intrinsic
def _advance(typingctx, data, count):
    if not isinstance(data, types.CPointer) or not isinstance(count, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        return builder.gep(args[0], [context.cast(builder, args[1], signature.args[1], types.intp)])

    return data(data, count), codegen


@overload(advance)
def _ol_advance(data, count):
    if isinstance(data, types.CPointer):
        return lambda data, count: _advance(data, count)


@overload(element_size)
def _element_size(data):
    if isinstance(data, types.CPointer):
        size = data.dtype.bitwidth // 8
        return lambda data: size


@overload(view)
def _view(data, count):
    if not isinstance(data, types.CPointer):
        return None
    return lambda data, count: carray(data, count)


@overload(view2)
def _view2(data, rows, columns):
    if not isinstance(data, types.CPointer):
        return None
    return lambda data, rows, columns: carray(data, (rows, columns))


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


@intrinsic
def _load_acquire(typingctx, data):
    if not (isinstance(data, types.CPointer) and data.dtype == types.int64):
        return None

    def codegen(context, builder, signature, args):
        return builder.load_atomic(args[0], "acquire", 8)

    return types.int64(data), codegen


@intrinsic
def _store_release(typingctx, data, value):
    if not (isinstance(data, types.CPointer) and data.dtype == types.int64):
        return None

    def codegen(context, builder, signature, args):
        builder.store_atomic(context.cast(builder, args[1], signature.args[1], types.int64), args[0], "release", 8)
        return context.get_dummy_value()

    return types.void(data, value), codegen


@intrinsic
def _fetch_add(typingctx, data, value):
    if not (isinstance(data, types.CPointer) and data.dtype == types.int64):
        return None

    def codegen(context, builder, signature, args):
        return builder.atomic_rmw("add", args[0], context.cast(builder, args[1], signature.args[1], types.int64), "acq_rel")

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
        return lambda array, index, value: _store_release(pointer(array, index), value)


@overload(atomic_add)
def _atomic_add(array, index, value):
    if _int64_array(array):
        return lambda array, index, value: _fetch_add(pointer(array, index), value)


# --------------------------------------------------------------------------- waiting

# The CPU's spin-wait hint on x86 (``pause``), an LLVM intrinsic; nothing elsewhere.
_PAUSE = "llvm.x86.sse2.pause" if platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86") else None


def spin_pause():
    """The CPU's spin-wait hint (x86 ``pause``; nothing in Python or on other CPUs)."""


@intrinsic
def _pause(typingctx):
    def codegen(context, builder, signature, args):
        if _PAUSE is not None:
            function_type = ir.FunctionType(ir.VoidType(), [])
            function = builder.module.globals.get(_PAUSE) or ir.Function(builder.module, function_type, _PAUSE)
            builder.call(function, [])
        return context.get_dummy_value()

    return types.void(), codegen


@overload(spin_pause)
def _spin_pause():
    return lambda: _pause()


def call_void(address):
    """Call the C function ``int f(void)`` at ``address`` (0: nothing); in Python, nothing."""


@intrinsic
def _call_int_void(typingctx, address):
    if not isinstance(address, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        function_type = ir.FunctionType(ir.IntType(32), [])
        function = builder.inttoptr(context.cast(builder, args[0], signature.args[0], types.int64), function_type.as_pointer())
        builder.call(function, [])
        return context.get_dummy_value()

    return types.void(address), codegen


@overload(call_void)
def _call_void(address):
    def impl(address):
        if address != 0:
            _call_int_void(address)

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
            return CLOCK_WINDOWS, ctypes.cast(kernel32.QueryPerformanceCounter, ctypes.c_void_p).value, int(frequency.value)
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
    if not (isinstance(address, types.Integer) and isinstance(argument, types.Integer) and isinstance(data, types.CPointer)):
        return None

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        target = context.cast(builder, args[0], signature.args[0], types.int64)
        value = context.cast(builder, args[1], signature.args[1], types.int64)
        with builder.if_else(builder.icmp_signed(">=", value, ir.Constant(ir.IntType(64), 0))) as (with_id, without):
            with with_id:
                function_type = ir.FunctionType(i32, [i32, args[2].type])
                builder.call(builder.inttoptr(target, function_type.as_pointer()), [builder.trunc(value, i32), args[2]])
            with without:
                function_type = ir.FunctionType(i32, [args[2].type])
                builder.call(builder.inttoptr(target, function_type.as_pointer()), [args[2]])
        return context.get_dummy_value()

    return types.void(address, argument, data), codegen


@overload(monotonic_ns)
def _monotonic_ns(kind, address, parameter, scratch):
    def impl(kind, address, parameter, scratch):
        if kind == CLOCK_POSIX:
            _call_clock(address, parameter, pointer(scratch, 0))
            return scratch[0] * 1_000_000_000 + scratch[1]
        if kind == CLOCK_WINDOWS:
            _call_clock(address, np.int64(-1), pointer(scratch, 0))
            ticks = scratch[0]
            return (ticks // parameter) * 1_000_000_000 + (ticks % parameter) * 1_000_000_000 // parameter
        return np.int64(0)

    return impl


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


def _bitcast(source, target):
    @intrinsic
    def cast(typingctx, value):
        def codegen(context, builder, signature, args):
            value = context.cast(builder, args[0], signature.args[0], source)
            return builder.bitcast(value, context.get_value_type(target))

        return target(value), codegen

    return cast


_float32_from_bits = _bitcast(types.int32, types.float32)
_float64_from_bits = _bitcast(types.int64, types.float64)
_float64_bits = _bitcast(types.float64, types.int64)


@overload(float32_from_bits)
def _ol_float32_from_bits(bits):
    return lambda bits: _float32_from_bits(bits)


@overload(float64_from_bits)
def _ol_float64_from_bits(bits):
    return lambda bits: _float64_from_bits(bits)


@overload(float64_bits)
def _ol_float64_bits(value):
    return lambda value: _float64_bits(value)
