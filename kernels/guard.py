"""Guards of the compiled training loop: stop requests from another thread, and finiteness."""

from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .._config import JIT_OPTIONS


@intrinsic
def _atomic_load(typingctx, array, index):
    # The flag is written by another thread while the kernel runs. An atomic (monotonic) load
    # keeps LLVM from hoisting the read out of the training loop as loop-invariant.
    if not isinstance(array, types.Array) or array.dtype != types.int64:
        return None
    signature = types.int64(array, types.intp)

    def codegen(context, builder, sig, args):
        array_type = sig.args[0]
        ary = context.make_array(array_type)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, array_type, ary, [args[1]], wraparound=False)
        return builder.load_atomic(pointer, "monotonic", 8)

    return signature, codegen


@njit(inline="always", **JIT_OPTIONS)
def read_flag(control, index):
    """``control[index]``, read so that a write from another thread is seen while a loop runs."""
    return _atomic_load(control, index)


@njit(inline="always", **JIT_OPTIONS)
def all_finite(values):
    """True when no element of the contiguous array ``values`` is NaN or infinite.

    One vectorisable pass: ``v * 0`` is 0 for finite v and NaN otherwise. (This relies on the
    fast-math flags excluding ``nnan``/``ninf``, without which LLVM would fold it to 0.)
    """
    flat = values.reshape(values.size)
    total = flat.dtype.type(0)
    for i in range(flat.size):
        total += flat[i] * flat.dtype.type(0)
    return total == 0


@njit(inline="always", **JIT_OPTIONS)
def copy_into(destination, source):
    """``destination[...] = source`` for contiguous arrays of the same size (a plain loop, which
    compiles far faster than Numba's slice assignment)."""
    to = destination.reshape(destination.size)
    frm = source.reshape(source.size)
    for i in range(frm.size):
        to[i] = frm[i]
