"""Numerics and compilation settings of the kernels, in one place: constants only.

Every kernel takes its options from here (``JIT_OPTIONS``) and is defined through
:func:`fastgd.kernels.compat.kernel`, which adds fastgd's compile cache (see ``compat``). Nothing
here changes Numba's or the process's settings.
"""

import os

# LLVM fast-math flags we allow. Deliberately not ``nnan``/``ninf`` (which the blanket boolean
# form adds): those let LLVM assume no NaN/inf exists and delete the very checks that detect
# divergence.
#   nsz      ignore the sign of zero
#   arcp     x / y may become x * (1 / y)
#   contract fuse a * b + c into an FMA
#   afn      approximate math functions where the backend offers them
#   reassoc  reorder sums, which is what lets LLVM vectorise reductions
FASTMATH_FLAGS = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})

# The vectorisable exp/tanh in mathfn.py rely on the order of their operations (Cody-Waite range
# reduction): they get no ``reassoc``, which would let LLVM fold the two halves of ln 2.
EXACT_FASTMATH_FLAGS = frozenset({"nsz", "arcp", "contract"})


def env_flag(name: str, default: bool) -> bool:
    """An on/off environment setting: ``0``, ``false``, ``no`` or ``off`` is off."""
    value = os.environ.get(name)
    if value is None or not value.strip():
        return default
    return value.strip().lower() not in {"0", "false", "no", "off"}


# FASTGD_NUMBA_CACHE=0 turns the on-disk compile cache off.
CACHE = env_flag("FASTGD_NUMBA_CACHE", True)

# Options of every kernel. error_model="numpy" makes x / 0 give inf/nan like NumPy instead of
# raising, which keeps exception checks out of the inner loops; nogil lets fastgd's threads run
# kernels side by side. No kernel is called through a C function pointer (pieces are called by
# address with Numba's own calling convention: compat.call_piece), so none gets the C wrapper
# Numba would otherwise compile for each. No kernel allocates (every buffer comes from Python),
# so none needs Numba's reference counting (``_nrt``, checked in compat): its atomic increments
# and decrements on every array passed were most of the cost of calling a small piece (XOR's
# step: 2.1-2.5 µs with them, 1.2-1.7 without). A view made in compiled code must then never
# reach Python (it would arrive as the array it views): only whole arrays do. (The cache is
# added by compat.kernel, not by Numba's cache=True.)
JIT_OPTIONS = dict(nogil=True, fastmath=set(FASTMATH_FLAGS), error_model="numpy", no_cfunc_wrapper=True, _nrt=False)
EXACT_JIT_OPTIONS = dict(JIT_OPTIONS, fastmath=set(EXACT_FASTMATH_FLAGS))
# Kernels only other kernels call (pieces, helpers): no Python wrapper either, whose unboxing of
# every argument is a good part of a small kernel's compile time. Python reaches a piece through
# a trampoline (kernels.pieces.run).
INTERNAL_OPTIONS = dict(JIT_OPTIONS, no_cpython_wrapper=True)

# Matrix products with fewer multiply-adds than this run as compiled code (kernels.microkernel):
# a BLAS call costs ~1-3 µs of dispatch and packing, and the micro-kernel runs small products
# faster (32x64x64: ~90 GFLOP/s on one core against ~48 for SciPy's BLAS); from here on BLAS's
# packing pays (256x256x784: BLAS ~86 GFLOP/s, the micro-kernel ~42).
BLAS_MIN_MACS = 1 << 20
# Paths a network may take at all (``products.paths``: only their product pieces are bound and
# compiled for it): BLAS only when a weight matrix has at
# least BLAS_MIN_WEIGHTS elements (smaller ones stay in a core's cache, where the micro-kernel
# beats BLAS at any batch size), the micro-kernel only when one has at least TILE_MIN_WEIGHTS.
BLAS_MIN_WEIGHTS = 1 << 15
TILE_MIN_WEIGHTS = 1 << 8
