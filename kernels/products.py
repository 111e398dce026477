# stamp: 9dcc932dc92c95f86699a219a58bb7c5
"""Matrix products on blocks of flat buffers, row-major: plain loops, a register-blocked tile
written in LLVM IR, or one BLAS ``?gemm`` call.

An operand is ``(array, start, ld)``: a flat array, the element where the block starts and the
row stride (leading dimension). Shapes:

* ``NN``: C = A @ B   (forward: activations times weights; the local gradients of the layer
  below, δ @ Wᵀ, with Wᵀ transposed beforehand by ``transpose``)
* ``TN``: C = Aᵀ @ B  (weight gradients: inputs transposed times local gradients)
* ``NT``: C = A @ Bᵀ  (δ @ Wᵀ without the transposed copy: BLAS, which transposes for free)

Every element of C is computed by one path over the whole inner dimension in a fixed order, so a
block's result does not depend on how rows were split among threads.

The tile. Products too small for BLAS (whose call and packing cost microseconds) but too large
for plain loops (which keep the running sums of C in memory) are computed tile by tile: a tile of
``rows × 2L`` elements of C (two vectors a row) stays in registers while the inner dimension
is walked once, each step loading two vectors of B and broadcasting one element of A per row
(L: 8 float32 lanes with AVX2, 16 with AVX-512). LLVM's loop vectoriser does not find this on
its own, so the tile is written as vector IR with llvmlite's builder. Columns past a narrow
tile's last are masked with LLVM's ``llvm.masked.load``/``llvm.masked.store`` intrinsics
(LLVM Language Reference, "Masked Vector Load and Store Intrinsics").
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

from .config import BLAS_MIN_MACS, BLAS_MIN_SIDE, FASTMATH_FLAGS
from .jit import helper, subroutine
from .lowlevel import pointer

NN = 0
TN = 1
NT = 2

LOOPS = 0
TILES = 1
BLAS = 2


def _vector_bytes() -> int:
    # The widest vector Numba compiles for here: 64 bytes with AVX-512, else 32 (AVX2; LLVM splits
    # wider vectors where the CPU has none). Read from what Numba targets: NUMBA_CPU_NAME and
    # NUMBA_CPU_FEATURES when set (its documented settings), else the host (llvmlite's
    # ``get_host_cpu_features``). Numba's cache keys compiled code by CPU, so this matches it.
    from numba import config

    if config.CPU_NAME:
        features = config.CPU_FEATURES or ""
    else:
        from llvmlite import binding

        features = binding.get_host_cpu_features().flatten()
    return 64 if "+avx512f" in features.split(",") else 32


VECTOR_BYTES = _vector_bytes()
# Rows of C per tile (the main tiles; the remaining rows use single-row tiles), two vectors a row.
# AVX2's 16 registers hold four rows (eight accumulators, two vectors of B, a broadcast);
# AVX-512's 32 hold eight. Measured (float32, µs per product, AVX-512, 256-bit vectors and 4 rows
# against 512-bit and 4, 6, 8 rows): 32×64 over 32: 2.39, 1.00, 1.09, 0.86; 256×256 over 128:
# -, 169, 142, 112.
TILE_ROWS = 8 if VECTOR_BYTES == 64 else 4
_FLAGS = sorted(FASTMATH_FLAGS)


@subroutine
def uses_blas(may_blas, m, n, k):
    """Whether an ``m × n`` product over ``k`` goes to BLAS in a network that may call BLAS at
    all (``may_blas``, from its weight sizes): enough work, and no side shorter than
    BLAS_MIN_SIDE (config: where the tile is faster)."""
    return may_blas and m * n * k >= BLAS_MIN_MACS and m >= BLAS_MIN_SIDE and n >= BLAS_MIN_SIDE and k >= BLAS_MIN_SIDE


@subroutine
def path(may_blas, shape, m, n, k, lanes):
    """The path of an ``m × n`` product over ``k`` (the whole product, not a block): BLAS
    (``uses_blas``), the tile for NN and TN products of at least half ``lanes`` columns (its
    masked tiles), else loops."""
    if uses_blas(may_blas, m, n, k):
        return BLAS
    return TILES if shape != NT and 2 * n >= lanes else LOOPS


@helper
def product(chosen, shape, m, n, k, a, b, c, gemm):
    """``C = op(A) @ op(B)`` for an ``m × n`` block of C over an inner dimension ``k`` by path
    ``chosen`` (``path``); ``a``, ``b``, ``c`` operands ``(array, start, ld)``: A is ``m × k``
    (NN, NT) or ``k × m`` (TN), B ``k × n`` (NN, TN) or ``n × k`` (NT); C is overwritten.
    ``gemm``: BLAS's ``?gemm`` address (``gemm_address``), read by the BLAS path."""
    if chosen == BLAS:
        _blas(shape, m, n, k, a, b, c, gemm)
    elif chosen == TILES and shape == NN:
        _tiles(m, n, k, a[0], a[1], a[2], 1, b, c)
    elif chosen == TILES and shape == TN:
        _tiles(m, n, k, a[0], a[1], 1, a[2], b, c)
    elif shape == NN:
        _loops_nn(m, n, k, a, b, c)
    elif shape == TN:
        _loops_tn(m, n, k, a, b, c)
    else:
        _loops_nt(m, n, k, a, b, c)


@subroutine
def _blas(shape, m, n, k, a, b, c, gemm):
    # Column-major BLAS sees a row-major matrix as its transpose: Cᵀ = op(B)ᵀ op(A)ᵀ, so B goes
    # first, with the transpose flags unchanged.
    transa = TRANSPOSE if shape == TN else NO_TRANSPOSE
    transb = TRANSPOSE if shape == NT else NO_TRANSPOSE
    call_gemm(
        gemm, transb, transa, n, m, k, pointer(b[0], b[1]), b[2], pointer(a[0], a[1]), a[2], pointer(c[0], c[1]), c[2]
    )


# The loops index with unsigned integers: Numba wraps a negative signed index around the array's
# end (a test and a select per element), which keeps LLVM from vectorising the loop (measured:
# a 32 × 1 product over 64, 1.22 µs signed, 0.16 µs unsigned).


@subroutine
def _unsigned(operand):
    array, start, ld = operand
    return array, np.uint64(start), np.uint64(ld)


@subroutine
def _loops_nn(m, n, k, a, b, c):
    # C[i, j] = Σ_p A[i, p] B[p, j]: dot products along p (contiguous in A), for products with
    # fewer columns than a vector.
    (A, a0, lda), (B, b0, ldb), (C, c0, ldc) = _unsigned(a), _unsigned(b), _unsigned(c)
    zero = C.dtype.type(0.0)
    for i in range(np.uint64(m)):
        for j in range(np.uint64(n)):
            total = zero
            for p in range(np.uint64(k)):
                total += A[a0 + i * lda + p] * B[b0 + p * ldb + j]
            C[c0 + i * ldc + j] = total


@subroutine
def _loops_tn(m, n, k, a, b, c):
    # C[i, j] = Σ_p A[p, i] B[p, j]: rows of A (contiguous along i) scaled into C's columns.
    (A, a0, lda), (B, b0, ldb), (C, c0, ldc) = _unsigned(a), _unsigned(b), _unsigned(c)
    zero = C.dtype.type(0.0)
    for i in range(np.uint64(m)):
        for j in range(np.uint64(n)):
            C[c0 + i * ldc + j] = zero
    for p in range(np.uint64(k)):
        for j in range(np.uint64(n)):
            x = B[b0 + p * ldb + j]
            for i in range(np.uint64(m)):
                C[c0 + i * ldc + j] += A[a0 + p * lda + i] * x


@subroutine
def _loops_nt(m, n, k, a, b, c):
    # C[i, j] = Σ_p A[i, p] B[j, p]: dot products of two contiguous rows.
    (A, a0, lda), (B, b0, ldb), (C, c0, ldc) = _unsigned(a), _unsigned(b), _unsigned(c)
    zero = C.dtype.type(0.0)
    for i in range(np.uint64(m)):
        for j in range(np.uint64(n)):
            total = zero
            for p in range(np.uint64(k)):
                total += A[a0 + i * lda + p] * B[b0 + j * ldb + p]
            C[c0 + i * ldc + j] = total


# The tile shapes (rows × vectors of C), named by a code the tile takes as a literal: the main
# tiles, the rows left below them, and for a product's last columns when they fit one vector,
# tiles one vector wide (half of a two-vector tile would be masked off).
WIDE, WIDE_ROW, NARROW, NARROW_ROW = 0, 1, 2, 3
TILE_SHAPES = {WIDE: (TILE_ROWS, 2), WIDE_ROW: (1, 2), NARROW: (TILE_ROWS, 1), NARROW_ROW: (1, 1)}


@subroutine
def _tiles(m, n, k, A, a0, a_row_stride, a_col_stride, b, c):
    # C (m × n) tile by tile: TILE_ROWS rows at a time, then single rows; each tile two vectors
    # wide, the last ones one vector wide when that is enough, and narrower still (masked).
    # A's element (i, p) is A[a0 + i·a_row_stride + p·a_col_stride].
    B, b0, ldb = b
    C, c0, ldc = c
    lanes = VECTOR_BYTES // C.itemsize
    i = 0
    while i < m:
        full = i + TILE_ROWS <= m
        j = 0
        while j < n:
            cols = n - j
            a_at, b_at, c_at = pointer(A, a0 + i * a_row_stride), pointer(B, b0 + j), pointer(C, c0 + i * ldc + j)
            if cols > lanes:
                cols = 2 * lanes if cols > 2 * lanes else cols
                if full:
                    tile(a_at, a_row_stride, a_col_stride, b_at, ldb, c_at, ldc, k, WIDE, cols)
                else:
                    tile(a_at, a_row_stride, a_col_stride, b_at, ldb, c_at, ldc, k, WIDE_ROW, cols)
            elif full:
                tile(a_at, a_row_stride, a_col_stride, b_at, ldb, c_at, ldc, k, NARROW, cols)
            else:
                tile(a_at, a_row_stride, a_col_stride, b_at, ldb, c_at, ldc, k, NARROW_ROW, cols)
            j += cols
        i += TILE_ROWS if full else 1


@subroutine
def transpose(source, s0, rows, cols, target, t0):
    """``target[t0:]`` (cols × rows) = ``source[s0:]`` (rows × cols)ᵀ, flat row-major blocks."""
    a, b = source[s0 : s0 + rows * cols], target[t0 : t0 + rows * cols]
    for i in range(rows):
        for j in range(cols):
            b[j * rows + i] = a[i * cols + j]


# --------------------------------------------------------------------------- the tile


def tile(a, a_row_stride, a_col_stride, b, ldb, c, ldc, k, shape, cols):
    """``C[i, j] = Σ_p A[i, p] · B[p, j]`` for ``i`` below the rows of ``shape`` (a literal, one
    of ``TILE_SHAPES``) and ``j < cols`` (at most its vectors' lanes), ``p < k``; C's tile is
    overwritten.

    A's element (i, p) is ``a[i·a_row_stride + p·a_col_stride]``; B's (p, j) ``b[p·ldb + j]``;
    C's (i, j) ``c[i·ldc + j]`` (typed pointers; in Python the flat views from there, so that
    this twin runs under NUMBA_DISABLE_JIT).
    """
    for i in range(TILE_SHAPES[shape][0]):
        for j in range(cols):
            total = c.dtype.type(0.0)
            for p in range(k):
                total += a[i * a_row_stride + p * a_col_stride] * b[p * ldb + j]
            c[i * ldc + j] = total


@overload(tile, prefer_literal=True)
def _tile(a, a_row_stride, a_col_stride, b, ldb, c, ldc, k, shape, cols):
    if isinstance(shape, types.IntegerLiteral):

        def impl(a, a_row_stride, a_col_stride, b, ldb, c, ldc, k, shape, cols):
            return _tile_ir(
                a,
                np.int64(a_row_stride),
                np.int64(a_col_stride),
                b,
                np.int64(ldb),
                c,
                np.int64(ldc),
                np.int64(k),
                shape,
                np.int64(cols),
            )

        return impl


def _declare(builder, name, return_type, argument_types):
    # An LLVM function declared once per module (an ``llvm.*`` intrinsic).
    found = builder.module.globals.get(name)
    return (
        found
        if found is not None
        else ir.Function(builder.module, ir.FunctionType(return_type, list(argument_types)), name)
    )


@intrinsic(prefer_literal=True)
def _tile_ir(typingctx, a, a_row_stride, a_col_stride, b, ldb, c, ldc, k, shape, cols):
    if not isinstance(shape, types.IntegerLiteral) or not all(isinstance(x, types.CPointer) for x in (a, b, c)):
        return None
    if not (a.dtype == b.dtype == c.dtype) or a.dtype not in (types.float32, types.float64):
        return None
    if any(x != types.int64 for x in (a_row_stride, a_col_stride, ldb, ldc, k, cols)):
        return None
    n_rows, vectors = TILE_SHAPES[shape.literal_value]
    signature = types.int64(a, a_row_stride, a_col_stride, b, ldb, c, ldc, k, shape, cols)

    def codegen(context, builder, sig, args):
        pa, a_rs, a_cs, pb, ldb, pc, ldc, k, _, cols = args
        i64, i32 = ir.IntType(64), ir.IntType(32)
        element = context.get_value_type(sig.args[0].dtype)
        bits = 32 if isinstance(element, ir.FloatType) else 64
        lanes = VECTOR_BYTES * 8 // bits
        vector = ir.VectorType(element, lanes)
        mask_type = ir.VectorType(ir.IntType(1), lanes)
        name = f"v{lanes}f{bits}"
        masked_load = _declare(
            builder, f"llvm.masked.load.{name}.p0", vector, (ir.PointerType(vector), i32, mask_type, vector)
        )
        masked_store = _declare(
            builder, f"llvm.masked.store.{name}.p0", ir.VoidType(), (vector, ir.PointerType(vector), i32, mask_type)
        )
        align = bits // 8  # the element's size: rows of C need not be vector-aligned

        # One mask per vector of a row: lane + v·L < cols.
        lane_index = ir.Constant(ir.VectorType(i64, lanes), list(range(lanes)))
        broadcast = ir.Constant(ir.VectorType(i32, lanes), [0] * lanes)

        def splat(value, vector_type):
            first = builder.insert_element(ir.Constant(vector_type, ir.Undefined), value, ir.Constant(i32, 0))
            return builder.shuffle_vector(first, first, broadcast)

        masks = [
            builder.icmp_signed(
                "<", lane_index, splat(builder.sub(cols, ir.Constant(i64, v * lanes)), ir.VectorType(i64, lanes))
            )
            for v in range(vectors)
        ]
        full = builder.icmp_signed("==", cols, ir.Constant(i64, vectors * lanes))

        def vector_pointer(base, offset):
            return builder.bitcast(builder.gep(base, [offset]), ir.PointerType(vector))

        entry = builder.basic_block
        head = builder.append_basic_block("tile.head")
        body = builder.append_basic_block("tile.body")
        tail = builder.append_basic_block("tile.tail")
        builder.branch(head)
        builder.position_at_end(head)
        p = builder.phi(i64)
        p.add_incoming(ir.Constant(i64, 0), entry)
        sums = []
        for _ in range(n_rows * vectors):
            phi = builder.phi(vector)
            phi.add_incoming(ir.Constant(vector, None), entry)
            sums.append(phi)
        builder.cbranch(builder.icmp_signed("<", p, k), body, tail)

        builder.position_at_end(body)
        b_row = builder.gep(pb, [builder.mul(p, ldb)])
        b_vectors = []
        for v in range(vectors):
            pointer_v = vector_pointer(b_row, ir.Constant(i64, v * lanes))
            # Full tiles load plainly; a narrow one masks the lanes past its last column.
            with builder.if_else(full) as (whole, part):
                with whole:
                    plain = builder.load(pointer_v, align=align)
                    whole_block = builder.basic_block
                with part:
                    masked = builder.call(
                        masked_load, [pointer_v, ir.Constant(i32, align), masks[v], ir.Constant(vector, None)]
                    )
                    part_block = builder.basic_block
            loaded = builder.phi(vector)
            loaded.add_incoming(plain, whole_block)
            loaded.add_incoming(masked, part_block)
            b_vectors.append(loaded)
        a_column = builder.mul(p, a_cs)
        updated = []
        for i in range(n_rows):
            x = builder.load(builder.gep(pa, [builder.add(builder.mul(ir.Constant(i64, i), a_rs), a_column)]))
            x_vector = splat(x, vector)
            for v in range(vectors):
                product_v = builder.fmul(x_vector, b_vectors[v], flags=_FLAGS)
                updated.append(builder.fadd(sums[i * vectors + v], product_v, flags=_FLAGS))
        next_p = builder.add(p, ir.Constant(i64, 1))
        latch = builder.basic_block
        p.add_incoming(next_p, latch)
        for phi, value in zip(sums, updated):
            phi.add_incoming(value, latch)
        builder.branch(head)

        builder.position_at_end(tail)
        for i in range(n_rows):
            c_row = builder.gep(pc, [builder.mul(ir.Constant(i64, i), ldc)])
            for v in range(vectors):
                pointer_v = vector_pointer(c_row, ir.Constant(i64, v * lanes))
                value = sums[i * vectors + v]
                with builder.if_else(full) as (whole, part):
                    with whole:
                        builder.store(value, pointer_v, align=align)
                    with part:
                        builder.call(masked_store, [value, pointer_v, ir.Constant(i32, align), masks[v]])
        return ir.Constant(i64, 0)

    return signature, codegen


# --------------------------------------------------------------------------- BLAS


NO_TRANSPOSE = ord("N")
TRANSPOSE = ord("T")


def _entry_alloca(builder, llvm_type):
    # Stack room in the function's entry block (an alloca inside a loop would grow the stack
    # on every iteration).
    with builder.goto_entry_block():
        return builder.alloca(llvm_type)


@intrinsic
def _call_gemm(typingctx, address, transa, transb, m, n, k, a, lda, b, ldb, c, ldc):
    # Column-major C = op(A) op(B) (alpha 1, beta 0) by the Fortran ?gemm at ``address``: every
    # argument by pointer, sizes as 32-bit ``int`` (SciPy's LP64 BLAS).
    integers = (address, transa, transb, m, n, k, lda, ldb, ldc)
    if any(value != types.int64 for value in integers) or not isinstance(a, types.CPointer) or not a == b == c:
        return None
    if a.dtype not in (types.float32, types.float64):
        return None
    signature = types.int64(address, transa, transb, m, n, k, a, lda, b, ldb, c, ldc)

    def codegen(context, builder, sig, args):
        address, transa, transb, m, n, k, a, lda, b, ldb, c, ldc = args
        i8, i32 = ir.IntType(8), ir.IntType(32)
        element = context.get_value_type(sig.args[6].dtype)
        slots = []
        for value, width in (
            (transa, i8),
            (transb, i8),
            (m, i32),
            (n, i32),
            (k, i32),
            (lda, i32),
            (ldb, i32),
            (ldc, i32),
        ):
            slot = _entry_alloca(builder, width)
            builder.store(builder.trunc(value, width), slot)
            slots.append(slot)
        one, zero = _entry_alloca(builder, element), _entry_alloca(builder, element)
        builder.store(ir.Constant(element, 1.0), one)
        builder.store(ir.Constant(element, 0.0), zero)
        ta, tb, pm, pn, pk, plda, pldb, pldc = slots
        arguments = [ta, tb, pm, pn, pk, one, a, plda, b, pldb, zero, c, pldc]
        function_type = ir.FunctionType(ir.VoidType(), [value.type for value in arguments])
        builder.call(builder.inttoptr(address, function_type.as_pointer()), arguments)
        return ir.Constant(ir.IntType(64), 0)

    return signature, codegen


def call_gemm(address, transa, transb, m, n, k, a, lda, b, ldb, c, ldc):
    """Column-major ``C = op(A) op(B)`` by the Fortran ``?gemm`` at ``address``
    (``gemm_address``): ``transa``/``transb`` are ``NO_TRANSPOSE`` or ``TRANSPOSE``; ``a``,
    ``b``, ``c`` typed pointers. Compiled code only."""
    raise NotImplementedError("call_gemm runs in compiled code only")


@overload(call_gemm)
def _ol_call_gemm(address, transa, transb, m, n, k, a, lda, b, ldb, c, ldc):
    def impl(address, transa, transb, m, n, k, a, lda, b, ldb, c, ldc):
        return _call_gemm(
            np.int64(address),
            np.int64(transa),
            np.int64(transb),
            np.int64(m),
            np.int64(n),
            np.int64(k),
            a,
            np.int64(lda),
            b,
            np.int64(ldb),
            c,
            np.int64(ldc),
        )

    return impl


_GEMM = {}


def gemm_address(dtype) -> int:
    """The address of SciPy's ``sgemm`` (float32) or ``dgemm`` (float64), through
    ``numba.extending.get_cython_function_address`` on ``scipy.linalg.cython_blas`` (Numba's
    "Calling Cython functions" page). Passed to compiled code at run time: a process's address is
    not a constant a cached function may hold."""
    dtype = np.dtype(dtype)
    if dtype not in _GEMM:
        from numba.extending import get_cython_function_address

        name = {np.dtype(np.float32): "sgemm", np.dtype(np.float64): "dgemm"}[dtype]
        _GEMM[dtype] = int(get_cython_function_address("scipy.linalg.cython_blas", name))
    return _GEMM[dtype]
