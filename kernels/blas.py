"""Direct BLAS ``gemm`` from compiled code, on sub-blocks of arrays without copying them.

``np.dot`` inside Numba multiplies whole contiguous arrays only. Training splits its matrix
products into fixed blocks of output rows that threads compute independently (each element is
computed by exactly one call with the full inner dimension, so results do not depend on the
thread count), and a block of columns of a C-contiguous matrix is not contiguous. This calls the
same BLAS Numba's ``np.dot`` uses (SciPy's, through Numba's ``numba_xxgemm`` helper) with explicit
leading dimensions.
"""

import numpy as np
from numba import njit, prange, types
from numba.extending import overload
from numba.np.linalg import _BLAS, ensure_blas, get_blas_kind

from .._config import JIT_OPTIONS, MAX_BLOCKS, MIN_BLOCK_ROWS, PARALLEL_JIT_OPTIONS
from .elementwise import activate_in_place, multiply_by_derivative

_ONE = {np.dtype(np.float32): np.ones(1, np.float32), np.dtype(np.float64): np.ones(1, np.float64)}
_ZERO = {np.dtype(np.float32): np.zeros(1, np.float32), np.dtype(np.float64): np.zeros(1, np.float64)}
_N = ord("n")
# What ``parallel_gemm`` does to each block of C right after computing it, on the same thread
# (the block is still in that core's cache, and elementwise work is split like the product).
EPILOGUE_NONE = 0
EPILOGUE_BIAS_ACTIVATION = 1  # C += bias (aux, shape (n,)), then C = f(C)
EPILOGUE_DERIVATIVE = 2  # C *= f'(A) with A the layer output (aux, laid out like C)
_T = ord("t")


def gemm(transpose_a, transpose_b, m, n, k, a, lda, b, ldb, accumulate, c, ldc):
    """Row-major ``C = op(A) @ op(B)`` (``+ C`` when ``accumulate``) on raw blocks.

    ``a``, ``b``, ``c`` are arrays whose first element is the block's first element (a view
    like ``x[row:]`` or ``x[row, col:]``); ``lda``/``ldb``/``ldc`` are the row strides in
    elements of the arrays they were cut from. op(A) is ``m × k``, op(B) ``k × n``, C ``m × n``.
    Callable from compiled code only.
    """
    raise NotImplementedError("gemm is only callable from Numba-compiled code")


@overload(gemm, jit_options=JIT_OPTIONS)
def _gemm(transpose_a, transpose_b, m, n, k, a, lda, b, ldb, accumulate, c, ldc):
    if not isinstance(a, types.Array):
        return None
    ensure_blas()
    dtype = np.dtype(a.dtype.name)
    xxgemm = _BLAS().numba_xxgemm(a.dtype)
    kind = ord(get_blas_kind(a.dtype))
    one, zero = _ONE[dtype], _ZERO[dtype]

    def impl(transpose_a, transpose_b, m, n, k, a, lda, b, ldb, accumulate, c, ldc):
        # Column-major BLAS sees a row-major matrix as its transpose: C^T = op(B)^T op(A)^T, and
        # the transpose flags carry over unchanged.
        flag_a = _T if transpose_a else _N
        flag_b = _T if transpose_b else _N
        beta = one if accumulate else zero
        xxgemm(kind, flag_b, flag_a, n, m, k, one.ctypes, b.ctypes, ldb, a.ctypes, lda, beta.ctypes, c.ctypes, ldc)

    return impl


@njit(**JIT_OPTIONS)
def _epilogue(epilogue, c, first, ldc, rows, n, aux, activation):
    # The epilogue of one block of `rows` rows of C starting at c[first] (see parallel_gemm).
    # A function of its own: in the parallel loop's body it cost ~8 s more compilation.
    for i in range(rows):
        start = first + i * ldc
        row = c[start : start + n]
        if epilogue == EPILOGUE_BIAS_ACTIVATION:
            for j in range(n):
                row[j] += aux[j]
            activate_in_place(row, activation)
        else:
            multiply_by_derivative(aux[start : start + n], row, activation)


@njit(**PARALLEL_JIT_OPTIONS)
def parallel_gemm(transpose_a, transpose_b, m, n, k, a, a_offset, lda, b, b_offset, ldb, c, c_offset, ldc, epilogue, aux, activation):
    """``gemm`` with C's rows split into fixed blocks that Numba's threads compute in parallel,
    each block followed by an elementwise epilogue on it.

    ``a``, ``b``, ``c`` are flat (1-D) buffers and the offsets say where each matrix starts in
    them. Every element of C is computed by exactly one single-threaded BLAS call over the whole
    inner dimension, and the blocks depend on ``m`` only, so the result is bitwise the same on
    any number of threads.

    ``epilogue`` (``EPILOGUE_*``) with ``aux`` (flat) and an activation code: none; add the bias
    ``aux[:n]`` to every row and apply the activation (not softmax); or multiply by the
    activation's derivative written through the layer output ``aux``, which is laid out like C
    (``aux[c_offset + i * ldc + j]`` belongs to ``C[i, j]``).
    """
    n_blocks = min(max(m // MIN_BLOCK_ROWS, 1), MAX_BLOCKS)
    block_rows = (m + n_blocks - 1) // n_blocks
    for block in prange(n_blocks):
        start = block * block_rows
        rows = min(m, start + block_rows) - start
        if rows > 0:
            # Row `start` of op(A) begins `start` rows into A, or `start` columns if transposed.
            a_start = a_offset + (start if transpose_a else start * lda)
            gemm(transpose_a, transpose_b, rows, n, k, a[a_start:], lda, b[b_offset:], ldb, False, c[c_offset + start * ldc :], ldc)
            if epilogue != EPILOGUE_NONE:
                _epilogue(epilogue, c, c_offset + start * ldc, ldc, rows, n, aux, activation)
