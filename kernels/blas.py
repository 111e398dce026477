# stamp: 2f2180eec4c1fd98c830f0c52b49de4f
"""BLAS ``?gemm`` from compiled code, through SciPy's Cython BLAS.

SciPy exports every BLAS routine it links to as a C function (``scipy.linalg.cython_blas``);
``numba.extending.get_cython_function_address`` gives its address (Numba's documentation,
"Calling Cython functions", does exactly this). The address is passed to compiled code at run
time (a process's address is not a constant a cached function may hold), and ``call_gemm``
calls it with the Fortran convention: every argument by pointer, column-major matrices.

A row-major ``C = op(A) @ op(B)`` is the column-major ``Cᵀ = op(B)ᵀ op(A)ᵀ``: the call passes B
before A, with their transpose flags unchanged (``products``).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

NO_TRANSPOSE = ord("N")
TRANSPOSE = ord("T")

_ADDRESSES = {}


def gemm_address(dtype) -> int:
    """The address of SciPy's ``sgemm`` (float32) or ``dgemm`` (float64); imports SciPy's BLAS
    the first time (only networks large enough to call BLAS ask)."""
    dtype = np.dtype(dtype)
    if dtype not in _ADDRESSES:
        from numba.extending import get_cython_function_address

        name = {np.dtype(np.float32): "sgemm", np.dtype(np.float64): "dgemm"}[dtype]
        _ADDRESSES[dtype] = int(get_cython_function_address("scipy.linalg.cython_blas", name))
    return _ADDRESSES[dtype]


def _entry_alloca(builder, llvm_type):
    # Stack room in the function's entry block (an alloca inside a loop would grow the stack
    # on every iteration).
    with builder.goto_entry_block():
        return builder.alloca(llvm_type)


@intrinsic
def call_gemm(typingctx, address, transa, transb, m, n, k, a, lda, b, ldb, c, ldc):
    """Column-major ``C = op(A) op(B)`` (alpha 1, beta 0) by the Fortran ``?gemm`` at ``address``:
    ``transa``/``transb`` the characters ``ord('N')`` or ``ord('T')``; ``a``, ``b``, ``c``
    typed pointers; sizes and leading dimensions as integers (passed as 32-bit ``int``, as
    SciPy's LP64 BLAS takes them)."""
    if not isinstance(a, types.CPointer) or a.dtype not in (types.float32, types.float64) or not a == b == c:
        return None
    signature = types.void(address, transa, transb, m, n, k, a, lda, b, ldb, c, ldc)

    def codegen(context, builder, sig, args):
        address, transa, transb, m, n, k, a, lda, b, ldb, c, ldc = args
        i8, i32 = ir.IntType(8), ir.IntType(32)
        element = context.get_value_type(sig.args[6].dtype)
        pointers = []
        for value, value_type, llvm_type in ((transa, sig.args[1], i8), (transb, sig.args[2], i8)):
            slot = _entry_alloca(builder, llvm_type)
            builder.store(builder.trunc(context.cast(builder, value, value_type, types.int64), i8), slot)
            pointers.append(slot)
        for value, value_type in ((m, sig.args[3]), (n, sig.args[4]), (k, sig.args[5]), (lda, sig.args[7]), (ldb, sig.args[9]),
                                  (ldc, sig.args[11])):  # fmt: skip
            slot = _entry_alloca(builder, i32)
            builder.store(builder.trunc(context.cast(builder, value, value_type, types.int64), i32), slot)
            pointers.append(slot)
        one, zero = _entry_alloca(builder, element), _entry_alloca(builder, element)
        builder.store(ir.Constant(element, 1.0), one)
        builder.store(ir.Constant(element, 0.0), zero)
        ta, tb, pm, pn, pk, plda, pldb, pldc = pointers
        arguments = [ta, tb, pm, pn, pk, one, a, plda, b, pldb, zero, c, pldc]
        function_type = ir.FunctionType(ir.VoidType(), [value.type for value in arguments])
        function = builder.inttoptr(context.cast(builder, address, sig.args[0], types.int64), function_type.as_pointer())
        builder.call(function, arguments)
        return context.get_dummy_value()

    return signature, codegen
