# stamp: 5fe37144240bf673b1d15d2838f83450
"""Matrix products on blocks of flat buffers, row-major, with leading dimensions: three pieces,
one per path (``product_loops``, ``product_tiles``, ``product_blas``), with one signature.

Shapes (``shape``):

* ``NN``: C = A @ B   (forward: activations times weights; and the local gradients of the
  layer below, δ @ Wᵀ, with Wᵀ transposed beforehand: ``transpose``)
* ``TN``: C = Aᵀ @ B  (weight gradients: inputs transposed times local gradients)
* ``NT``: C = A @ Bᵀ  (δ @ Wᵀ without the transposed copy: BLAS, which transposes for free)

Paths: one BLAS ``gemm`` call (the caller decides once per whole product, from its size:
``uses_blas``); the register-blocked ``microkernel.tile``; plain loops that vectorise along the
contiguous dimension (``path`` chooses between the last two). Every element of C is computed by
one call over the whole inner dimension in a fixed order, so a block's result does not depend on
how rows were split among threads.
"""

from __future__ import annotations

import numpy as np

from .blas import NO_TRANSPOSE, TRANSPOSE, call_gemm
from .config import BLAS_MIN_MACS, BLAS_MIN_SIDE
from .jit import helper
from .lowlevel import advance, element_size, view2
from .microkernel import TILE_ROWS, tile

NN = 0
TN = 1
NT = 2


LOOPS = 0
TILES = 1
BLAS = 2


@helper
def uses_blas(may_blas, m, n, k):
    """Whether an ``m × n`` product over ``k`` goes to BLAS in a network that may call BLAS at
    all (``may_blas``: ``layout`` decides it from the weight sizes): enough work, and no side
    shorter than BLAS_MIN_SIDE (config: where the micro-kernel is faster)."""
    return may_blas and m * n * k >= BLAS_MIN_MACS and m >= BLAS_MIN_SIDE and n >= BLAS_MIN_SIDE and k >= BLAS_MIN_SIDE


@helper
def path(may_blas, shape, m, n, k, lanes):
    """The path of an ``m × n`` product over ``k`` (the whole product, not a block):
    BLAS (``uses_blas``), the micro-kernel for NN and TN products of at least half ``lanes``
    columns (its masked tiles), else loops."""
    if uses_blas(may_blas, m, n, k):
        return BLAS
    return TILES if shape != NT and 2 * n >= lanes else LOOPS


def product_blas(shape, m, n, k, a, lda, b, ldb, c, ldc, gemm):
    """``C = op(A) @ op(B)`` for an ``m × n`` block of C over an inner dimension ``k``, by one
    call of BLAS's ``?gemm`` at address ``gemm`` (``blas.gemm_address``).

    Parameters
    ----------
    shape : int64
        NN, TN or NT.
    m, n, k : intp
    a : pointer
        A: ``m × k`` rows of stride ``lda`` (NN, NT), or ``k × m`` (TN).
    lda : intp
    b : pointer
        B: ``k × n`` rows of stride ``ldb`` (NN, TN), or ``n × k`` (NT).
    ldb : intp
    c : pointer
        C: ``m × n`` rows of stride ``ldc``; overwritten.
    ldc : intp
    gemm : int64
    """
    # Column-major BLAS sees a row-major matrix as its transpose: Cᵀ = op(B)ᵀ op(A)ᵀ.
    transa = TRANSPOSE if shape == TN else NO_TRANSPOSE
    transb = TRANSPOSE if shape == NT else NO_TRANSPOSE
    call_gemm(gemm, transb, transa, n, m, k, b, ldb, a, lda, c, ldc)


def product_tiles(shape, m, n, k, a, lda, b, ldb, c, ldc, gemm):
    """``product_blas``'s product by the register-blocked micro-kernel (``microkernel.tile``),
    for C of at least a vector's width of columns (NN and TN; NT by loops)."""
    if shape == NN:
        _tiles(m, n, k, a, lda, 1, b, ldb, c, ldc)
    elif shape == TN:
        _tiles(m, n, k, a, 1, lda, b, ldb, c, ldc)
    else:
        _loops_nt(m, n, k, view2(a, m, lda), view2(b, n, ldb), view2(c, m, ldc))


def product_loops(shape, m, n, k, a, lda, b, ldb, c, ldc, gemm):
    """``product_blas``'s product in plain loops that vectorise along the contiguous dimension."""
    if shape == NN:
        _loops_nn(m, n, k, view2(a, m, lda), view2(b, k, ldb), view2(c, m, ldc))
    elif shape == TN:
        _loops_tn(m, n, k, view2(a, k, lda), view2(b, k, ldb), view2(c, m, ldc))
    else:
        _loops_nt(m, n, k, view2(a, m, lda), view2(b, n, ldb), view2(c, m, ldc))


@helper
def _loops_nn(m, n, k, A, B, C):
    # C[i, j] = Σ_p A[i, p] B[p, j]: dot products along p (contiguous in A), for products with
    # fewer columns than a vector.
    zero = C.dtype.type(0.0)
    for i in range(m):
        for j in range(n):
            total = zero
            for p in range(k):
                total += A[i, p] * B[p, j]
            C[i, j] = total


@helper
def _loops_tn(m, n, k, A, B, C):
    # C[i, j] = Σ_p A[p, i] B[p, j]: rows of A (contiguous along i) scaled into C's columns.
    zero = C.dtype.type(0.0)
    for i in range(m):
        for j in range(n):
            C[i, j] = zero
    for p in range(k):
        for j in range(n):
            x = B[p, j]
            for i in range(m):
                C[i, j] += A[p, i] * x


@helper
def _loops_nt(m, n, k, A, B, C):
    # C[i, j] = Σ_p A[i, p] B[j, p]: dot products of two contiguous rows.
    zero = C.dtype.type(0.0)
    for i in range(m):
        for j in range(n):
            total = zero
            for p in range(k):
                total += A[i, p] * B[j, p]
            C[i, j] = total


@helper
def _tiles(m, n, k, a, a_row_stride, a_col_stride, b, ldb, c, ldc):
    # C (m × n) tile by tile: TILE_ROWS rows at a time, then single rows; each tile as wide as
    # two vectors, the last one narrower.
    width = 64 // element_size(c)
    i = 0
    while i + TILE_ROWS <= m:
        j = 0
        while j < n:
            cols = width if j + width <= n else n - j
            tile(advance(a, i * a_row_stride), a_row_stride, a_col_stride, advance(b, j), ldb, advance(c, i * ldc + j), ldc, k,
                 TILE_ROWS, cols)  # fmt: skip
            j += width
        i += TILE_ROWS
    while i < m:
        j = 0
        while j < n:
            cols = width if j + width <= n else n - j
            tile(advance(a, i * a_row_stride), a_row_stride, a_col_stride, advance(b, j), ldb, advance(c, i * ldc + j), ldc, k, 1, cols)
            j += width
        i += 1


@helper
def transpose(source, rows, cols, target):
    """``target`` (cols × rows) = ``source`` (rows × cols)ᵀ, both 2-D views."""
    for i in range(rows):
        for j in range(cols):
            target[j, i] = source[i, j]
