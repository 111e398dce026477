"""Numerics and compilation settings of the kernels, in one place: constants only.

Every compiled function takes its options from here (``kernels.jit`` applies them: kernels,
helpers, subroutines and the passes compiled as C functions). Nothing here changes Numba's or the
process's settings; it only reads the environment once, at import.

Environment
-----------
``FASTGD_NUMBA_CACHE=0``
    Compile without Numba's on-disk cache (``cache=True`` otherwise, see "Notes on caching" in
    Numba's documentation).
``NUMBA_DISABLE_JIT=1``
    Numba's own switch: every kernel runs as plain Python, so a debugger can step through the
    training loop (``DISABLE_JIT``). The passes, called by address, follow it too (``jit.compile_piece``).
"""

from __future__ import annotations

import os

import numba


def env_flag(name: str, default: bool) -> bool:
    """An on/off environment setting: ``0``, ``false``, ``no`` or ``off`` is off."""
    value = os.environ.get(name)
    if value is None or not value.strip():
        return default
    return value.strip().lower() not in {"0", "false", "no", "off"}


# Numba's documented switch (NUMBA_DISABLE_JIT, read into numba.config by Numba): when set,
# ``@njit`` returns the Python function, and the passes are plain Python functions too.
DISABLE_JIT = bool(numba.config.DISABLE_JIT)

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

# Element-wise updates that threads and ranks split into shards whose bounds change with their
# counts (the optimizer steps): every element must get the same operations whether it falls in
# a vectorised loop body or in its scalar remainder, or where a shard boundary falls would change
# the last bit of a parameter. ``contract`` breaks that (LLVM fused a * b + c into an FMA in one
# path and not the other: float32 AdamW over [0, 7), [7, 50), [50, 101) against [0, 101) differed
# by one ulp, and matched bit for bit without it); so can ``arcp`` and ``afn`` on x86, where LLVM
# may turn a float32 *vector* division or square root into an estimate plus a Newton step and
# the scalar one not. Only ``nsz`` is safe. (These loops are bound by memory, not arithmetic.)
SHARDED_FASTMATH_FLAGS = frozenset({"nsz"})

# FASTGD_NUMBA_CACHE=0 turns the on-disk compile cache off; so does a kernel source newer than
# its stamp (``kernels.stamps``: a cached function would not see an edit to another module).
CACHE_REQUESTED = env_flag("FASTGD_NUMBA_CACHE", True)

# Options of every compiled function. error_model="numpy" makes x / 0 give inf/nan like NumPy
# instead of raising, which keeps exception checks out of the inner loops; nogil lets fastgd's
# threads run kernels side by side.
BASE_OPTIONS = dict(nogil=True, fastmath=set(FASTMATH_FLAGS), error_model="numpy")
# The same with the exact flags (mathfn's functions and the kernels inlining them).
EXACT_OPTIONS = dict(BASE_OPTIONS, fastmath=set(EXACT_FASTMATH_FLAGS))

# Matrix products with fewer multiply-adds than this never go to BLAS (kernels.products): a BLAS
# call costs ~1-3 µs of dispatch and packing, and the compiled paths run small products faster.
BLAS_MIN_MACS = 1 << 20
# ... nor products with a side shorter than this: measured on a 256-256-256 float32 network,
# one thread (2-core Sapphire Rapids, BLAS held to one thread), µs per forward pass of m rows,
# BLAS against the micro-kernel: m = 16: 139 / 65, 32: 159 / 110, 64: 238 / 204, 128: 450 /
# 521, 256: 681 / 924. BLAS's packing does not pay for itself below ~100 rows.
BLAS_MIN_SIDE = 128
# A network calls BLAS at all only when a weight matrix has at least BLAS_MIN_WEIGHTS elements
# (smaller ones stay in a core's cache, where the micro-kernel beats BLAS at any batch size).
BLAS_MIN_WEIGHTS = 1 << 15
