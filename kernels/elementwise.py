"""Elementwise activation kernels on flat arrays, shared by the dense kernels and the epilogues of
the parallel matrix product (``blas.parallel_gemm``).

Each loop tests the activation code once, outside the loop: a branch inside would stop LLVM from
vectorising it.
"""

from numba import njit

from .._config import JIT_OPTIONS
from .codes import LEAKY_RELU, LEAKY_SLOPE, RELU, SIGMOID, TANH
from .mathfn import fast_exp, fast_tanh


@njit(**JIT_OPTIONS)
def activate_in_place(a, activation):
    # In place on one array: with separate input and output arrays that are the same memory,
    # LLVM's runtime overlap check fails and it runs the scalar loop instead (7x slower).
    t = a.dtype.type
    zero, one, slope = t(0.0), t(1.0), t(LEAKY_SLOPE)
    if activation == SIGMOID:
        for i in range(a.size):
            a[i] = one / (one + fast_exp(-a[i]))
    elif activation == TANH:
        for i in range(a.size):
            a[i] = fast_tanh(a[i])
    elif activation == RELU:
        for i in range(a.size):
            # `a <= 0` is False for NaN, so NaN propagates instead of being clipped to 0.
            a[i] = zero if a[i] <= zero else a[i]  # noqa: FURB136 (max() would clip NaN)
    elif activation == LEAKY_RELU:
        for i in range(a.size):
            a[i] = a[i] * slope if a[i] <= zero else a[i]


@njit(**JIT_OPTIONS)
def multiply_by_derivative(a, delta, activation):
    # delta *= f'(z), written through the layer output a = f(z), so z never needs to be stored.
    t = a.dtype.type
    zero, one, slope = t(0.0), t(1.0), t(LEAKY_SLOPE)
    if activation == SIGMOID:
        for i in range(a.size):
            delta[i] *= a[i] * (one - a[i])
    elif activation == TANH:
        for i in range(a.size):
            delta[i] *= one - a[i] * a[i]
    elif activation == RELU:
        for i in range(a.size):
            delta[i] *= one if a[i] > zero else zero
    elif activation == LEAKY_RELU:
        for i in range(a.size):
            delta[i] *= one if a[i] > zero else slope
