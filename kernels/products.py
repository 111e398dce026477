"""Matrix products on blocks of flat buffers, row-major, with explicit offsets and leading
dimensions: no views are made (each would be reference-counted, and two threads counting
references to the same buffer fight over one cache line).

Each path of each shape is a compiled piece of its own (``PIECES``, kind "product" in
``kernels.pieces``), all with one argument list, so a fit compiles only the paths its layer
sizes can take (``paths``):

* ``nn``: C = A @ B   (forward: activations times weights; and the local gradients of the
  layer below, δ @ Wᵀ, with Wᵀ transposed beforehand: ``transpose``)
* ``tn``: C = Aᵀ @ B  (weight gradients: inputs transposed times local gradients)
* ``nt``: C = A @ Bᵀ  (BLAS only, which transposes for free)

Three paths: from ``BLAS_MIN_MACS`` multiply-adds on, one single-threaded BLAS ``gemm`` call
(NumPy's OpenBLAS, else SciPy's through Numba's ``numba_xxgemm`` helper); below, the
register-blocked ``microkernel.tile`` when C has at least a vector's width of columns, else
loops that vectorise along the contiguous dimension. Every element of C is computed by one
call over the whole inner dimension in a fixed order, so a block's result does not depend on
how rows were split among threads.
"""

import numpy as np
from numba import njit, types
from numba.extending import overload

from .compat import address_of, blas_gemm, call_cblas_gemm, make_piece, unsigned
from .layout import CONTROL_DGEMM, CONTROL_ILP64, CONTROL_SGEMM, network_blas
from .config import JIT_OPTIONS, TILE_MIN_WEIGHTS
from .microkernel import TILE_ROWS, tile

_N, _T = ord("n"), ord("t")
_ONE = {np.dtype(np.float32): np.ones(1, np.float32), np.dtype(np.float64): np.ones(1, np.float64)}
_ZERO = {np.dtype(np.float32): np.zeros(1, np.float32), np.dtype(np.float64): np.zeros(1, np.float64)}
_INLINE = dict(JIT_OPTIONS, inline="always")


def gemm(control, transpose_a, transpose_b, m, n, k, a, a_start, lda, b, b_start, ldb, c, c_start, ldc):
    """Row-major ``C = op(A) @ op(B)`` on blocks of flat buffers; callable from compiled code.

    op(A) is ``m × k`` starting at ``a[a_start]`` with row stride ``lda``; op(B) ``k × n``; C
    ``m × n`` at ``c[c_start]`` with row stride ``ldc``. ``transpose_a``/``transpose_b`` are the
    characters ``ord('n')`` or ``ord('t')``. The BLAS is the one whose address ``control``
    carries (NumPy's OpenBLAS, ``layout.make_control``), else SciPy's through Numba.
    """
    raise NotImplementedError("gemm is only callable from Numba-compiled code")


@overload(gemm, jit_options=JIT_OPTIONS)
def _gemm(control, transpose_a, transpose_b, m, n, k, a, a_start, lda, b, b_start, ldb, c, c_start, ldc):
    if not isinstance(a, types.Array):
        return None
    dtype = np.dtype(a.dtype.name)
    xxgemm, kind = blas_gemm(a.dtype)
    one, zero = _ONE[dtype], _ZERO[dtype]
    slot = CONTROL_SGEMM if dtype == np.float32 else CONTROL_DGEMM

    def impl(control, transpose_a, transpose_b, m, n, k, a, a_start, lda, b, b_start, ldb, c, c_start, ldc):
        address = control[slot]
        if address != 0:
            call_cblas_gemm(address, control[CONTROL_ILP64], 111 if transpose_a == _N else 112, 111 if transpose_b == _N else 112, m, n,
                            k, address_of(a, a_start), lda, address_of(b, b_start), ldb, address_of(c, c_start), ldc)  # fmt: skip
        else:
            # Column-major BLAS sees a row-major matrix as its transpose: Cᵀ = op(B)ᵀ op(A)ᵀ,
            # with the transpose flags unchanged.
            xxgemm(kind, transpose_b, transpose_a, n, m, k, address_of(one, 0), address_of(b, b_start), ldb,
                   address_of(a, a_start), lda, address_of(zero, 0), address_of(c, c_start), ldc)  # fmt: skip

    return impl


def paths(meta, dtype):
    """(tiles, blas): which product paths a network can take at all, from its layer sizes
    only (blas: ``layout.network_blas``). A network binds (and compiles) only the product pieces of these paths, so one whose layers are all
    tiny compiles neither the micro-kernel nor the BLAS calls (XOR), and one whose weight
    matrices all fit in a core's cache never calls BLAS, at any batch size (the micro-kernel is
    faster there)."""
    lanes = 32 // np.dtype(dtype).itemsize
    sizes = [(int(n_in), int(n_out)) for n_in, n_out in meta[:, :2]]
    tiles = any(n_in * n_out >= TILE_MIN_WEIGHTS and max(n_in, n_out) >= lanes for n_in, n_out in sizes)
    return tiles, bool(network_blas.py_func(meta))


@njit(**_INLINE)
def _tiles(m, n, k, a, a_start, a_row_stride, a_col_stride, b, b_start, ldb, c, c_start, ldc):
    # C (m × n) tile by tile: TILE_ROWS rows at a time, then single rows; each tile as wide as
    # two vectors, the last one narrower.
    width = 64 // c.itemsize
    i = 0
    while i + TILE_ROWS <= m:
        j = 0
        while j < n:
            cols = width if j + width <= n else n - j
            tile(a, a_start + i * a_row_stride, a_row_stride, a_col_stride, b, b_start + j, ldb, c, c_start + i * ldc + j, ldc, k, TILE_ROWS, cols)
            j += width
        i += TILE_ROWS
    while i < m:
        j = 0
        while j < n:
            cols = width if j + width <= n else n - j
            tile(a, a_start + i * a_row_stride, a_row_stride, a_col_stride, b, b_start + j, ldb, c, c_start + i * ldc + j, ldc, k, 1, cols)
            j += width
        i += 1


def _loops_nn(control, m, n, k, a, a_start, lda, b, b_start, ldb, c, c_start, ldc):
    """``C[i, j] = Σ_p A[i, p] B[p, j]`` for an ``m × n`` block of C (A ``m × k``, B ``k × n``)
    in plain loops, dot products along p (contiguous in A): for products with fewer columns
    than a vector."""
    m, n, k, lda, ldb, ldc = unsigned(m), unsigned(n), unsigned(k), unsigned(lda), unsigned(ldb), unsigned(ldc)
    a_start, b_start, c_start = unsigned(a_start), unsigned(b_start), unsigned(c_start)
    zero = c.dtype.type(0.0)
    for i in range(m):
        a_row = a_start + i * lda
        for j in range(n):
            total = zero
            for p in range(k):
                total += a[a_row + p] * b[b_start + p * ldb + j]
            c[c_start + i * ldc + j] = total
    return np.int64(0)


def _loops_tn(control, m, n, k, a, a_start, lda, b, b_start, ldb, c, c_start, ldc):
    """``C[i, j] = Σ_p A[p, i] B[p, j]`` for an ``m × n`` block of C (A ``k × m`` read by
    columns from ``a_start``, B ``k × n``) in plain loops: rows of A (contiguous along i)
    scaled into C's columns."""
    m, n, k, lda, ldb, ldc = unsigned(m), unsigned(n), unsigned(k), unsigned(lda), unsigned(ldb), unsigned(ldc)
    a_start, b_start, c_start = unsigned(a_start), unsigned(b_start), unsigned(c_start)
    zero = c.dtype.type(0.0)
    for i in range(m):
        for j in range(n):
            c[c_start + i * ldc + j] = zero
    for p in range(k):
        a_row = a_start + p * lda
        for j in range(n):
            x = b[b_start + p * ldb + j]
            for i in range(m):
                c[c_start + i * ldc + j] += a[a_row + i] * x
    return np.int64(0)


def _tiles_nn(control, m, n, k, a, a_start, lda, b, b_start, ldb, c, c_start, ldc):
    """``A @ B`` as ``_loops_nn``, by the register-blocked micro-kernel (``microkernel.tile``)."""
    _tiles(m, n, k, a, a_start, lda, 1, b, b_start, ldb, c, c_start, ldc)
    return np.int64(0)


def _tiles_tn(control, m, n, k, a, a_start, lda, b, b_start, ldb, c, c_start, ldc):
    """``Aᵀ @ B`` as ``_loops_tn``, by the micro-kernel."""
    _tiles(m, n, k, a, a_start, 1, lda, b, b_start, ldb, c, c_start, ldc)
    return np.int64(0)


def _blas_nn(control, m, n, k, a, a_start, lda, b, b_start, ldb, c, c_start, ldc):
    """``A @ B`` as ``_loops_nn``, one BLAS ``gemm`` call."""
    gemm(control, _N, _N, m, n, k, a, a_start, lda, b, b_start, ldb, c, c_start, ldc)
    return np.int64(0)


def _blas_tn(control, m, n, k, a, a_start, lda, b, b_start, ldb, c, c_start, ldc):
    """``Aᵀ @ B`` as ``_loops_tn``, one BLAS ``gemm`` call."""
    gemm(control, _T, _N, m, n, k, a, a_start, lda, b, b_start, ldb, c, c_start, ldc)
    return np.int64(0)


def _blas_nt(control, m, n, k, a, a_start, lda, b, b_start, ldb, c, c_start, ldc):
    """``C[i, j] = Σ_p A[i, p] B[j, p]`` for an ``m × n`` block of C (A ``m × k``, B ``n × k``),
    one BLAS ``gemm`` call (BLAS transposes for free; the other paths transpose B beforehand
    and take ``A @ Bᵀ`` as an ``nn`` product)."""
    gemm(control, _N, _T, m, n, k, a, a_start, lda, b, b_start, ldb, c, c_start, ldc)
    return np.int64(0)


# (path, shape) -> its piece (kind "product" in kernels.pieces). Every piece has the same
# arguments, so a network that can never take a path gets another path's piece in its slot.
PIECES = {
    (path, shape): make_piece(function, f"product_{path}_{shape}")
    for (path, shape), function in (
        (("loops", "nn"), _loops_nn), (("loops", "tn"), _loops_tn), (("tiles", "nn"), _tiles_nn),
        (("tiles", "tn"), _tiles_tn), (("blas", "nn"), _blas_nn), (("blas", "tn"), _blas_tn), (("blas", "nt"), _blas_nt),
    )
}  # fmt: skip


@njit(**_INLINE)
def transpose(source, source_start, rows, cols, target, target_start):
    """``target`` (cols × rows) = ``source`` (rows × cols)ᵀ, both row-major at their offsets."""
    rows, cols = unsigned(rows), unsigned(cols)
    source_start, target_start = unsigned(source_start), unsigned(target_start)
    for i in range(rows):
        for j in range(cols):
            target[target_start + j * rows + i] = source[source_start + i * cols + j]
