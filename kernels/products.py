"""Matrix products on blocks of flat buffers, row-major, with explicit offsets and leading
dimensions: no views are made (each would be reference-counted, and two threads counting
references to the same buffer fight over one cache line).

Three shapes occur in training, each one function:

* ``product_nn``: C = A @ B          (forward: activations times weights)
* ``product_tn``: C = Aᵀ @ B         (weight gradients: inputs transposed times local gradients)
* ``product_nt``: C = A @ Bᵀ         (local gradients of the layer below: deltas times weightsᵀ)

Below ``BLAS_MIN_MACS`` multiply-adds a product runs as compiled loops (a BLAS call costs about
a microsecond of dispatch and packing); above, as one single-threaded BLAS ``gemm`` call (SciPy's
BLAS, through Numba's ``numba_xxgemm`` helper). Either way every element of C is computed by
one call over the whole inner dimension, so a block's result does not depend on how the other
blocks were split among threads.
"""

import numpy as np
from numba import types
from numba.extending import overload

from .compat import address_of, blas_gemm, kernel
from .config import BLAS_MIN_MACS, JIT_OPTIONS

_N, _T = ord("n"), ord("t")
_ONE = {np.dtype(np.float32): np.ones(1, np.float32), np.dtype(np.float64): np.ones(1, np.float64)}
_ZERO = {np.dtype(np.float32): np.zeros(1, np.float32), np.dtype(np.float64): np.zeros(1, np.float64)}


def gemm(transpose_a, transpose_b, m, n, k, a, a_start, lda, b, b_start, ldb, c, c_start, ldc):
    """Row-major ``C = op(A) @ op(B)`` on blocks of flat buffers; callable from compiled code.

    op(A) is ``m × k`` starting at ``a[a_start]`` with row stride ``lda``; op(B) ``k × n``; C
    ``m × n`` at ``c[c_start]`` with row stride ``ldc``. ``transpose_a``/``transpose_b`` are the
    characters ``ord('n')`` or ``ord('t')``.
    """
    raise NotImplementedError("gemm is only callable from Numba-compiled code")


@overload(gemm, jit_options=JIT_OPTIONS)
def _gemm(transpose_a, transpose_b, m, n, k, a, a_start, lda, b, b_start, ldb, c, c_start, ldc):
    if not isinstance(a, types.Array):
        return None
    dtype = np.dtype(a.dtype.name)
    xxgemm, kind = blas_gemm(a.dtype)
    one, zero = _ONE[dtype], _ZERO[dtype]

    def impl(transpose_a, transpose_b, m, n, k, a, a_start, lda, b, b_start, ldb, c, c_start, ldc):
        # Column-major BLAS sees a row-major matrix as its transpose: Cᵀ = op(B)ᵀ op(A)ᵀ, with
        # the transpose flags unchanged.
        xxgemm(kind, transpose_b, transpose_a, n, m, k, address_of(one, 0), address_of(b, b_start), ldb,
               address_of(a, a_start), lda, address_of(zero, 0), address_of(c, c_start), ldc)  # fmt: skip

    return impl


@kernel(**JIT_OPTIONS)
def product_nn(m, n, k, a, a_start, lda, b, b_start, ldb, c, c_start, ldc):
    """``C[i, j] = Σ_p A[i, p] B[p, j]`` for an ``m × n`` block of C (A ``m × k``, B ``k × n``)."""
    if m * n * k >= BLAS_MIN_MACS:
        gemm(_N, _N, m, n, k, a, a_start, lda, b, b_start, ldb, c, c_start, ldc)
        return
    zero = c.dtype.type(0.0)
    for i in range(m):
        row = c_start + i * ldc
        for j in range(n):
            c[row + j] = zero
        for p in range(k):
            x = a[a_start + i * lda + p]
            b_row = b_start + p * ldb
            for j in range(n):
                c[row + j] += x * b[b_row + j]


@kernel(**JIT_OPTIONS)
def product_tn(m, n, k, a, a_start, lda, b, b_start, ldb, c, c_start, ldc):
    """``C[i, j] = Σ_p A[p, i] B[p, j]`` for an ``m × n`` block of C (A ``k × m`` read by columns
    from ``a_start``, B ``k × n``)."""
    if m * n * k >= BLAS_MIN_MACS:
        gemm(_T, _N, m, n, k, a, a_start, lda, b, b_start, ldb, c, c_start, ldc)
        return
    zero = c.dtype.type(0.0)
    for i in range(m):
        row = c_start + i * ldc
        for j in range(n):
            c[row + j] = zero
        for p in range(k):
            x = a[a_start + p * lda + i]
            b_row = b_start + p * ldb
            for j in range(n):
                c[row + j] += x * b[b_row + j]


@kernel(**JIT_OPTIONS)
def product_nt(m, n, k, a, a_start, lda, b, b_start, ldb, c, c_start, ldc):
    """``C[i, j] = Σ_p A[i, p] B[j, p]`` for an ``m × n`` block of C (A ``m × k``, B ``n × k``)."""
    if m * n * k >= BLAS_MIN_MACS:
        gemm(_N, _T, m, n, k, a, a_start, lda, b, b_start, ldb, c, c_start, ldc)
        return
    zero = c.dtype.type(0.0)
    for i in range(m):
        a_row = a_start + i * lda
        for j in range(n):
            b_row = b_start + j * ldb
            total = zero
            for p in range(k):
                total += a[a_row + p] * b[b_row + p]
            c[c_start + i * ldc + j] = total
