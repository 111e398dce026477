"""Vectorisable exp, tanh and log1p for the activation and loss kernels.

Numba lowers ``np.exp``/``np.tanh``/``np.log1p`` to scalar libm calls, which LLVM cannot
vectorise without a vector math library: 3.3 ns per float32 sigmoid and 19 ns per tanh on the
benchmark machine, more than the matrix products of a small layer. These branch-free versions
(``lowlevel.select`` rather than branches; a division is a vector instruction) vectorise:

* float32 ``exp``/``tanh``: Cephes' expf/tanhf polynomials, within 2.5 ulp of the exact values;
* float64 ``exp``/``tanh``: Cephes' exp (a Padé form on |r| <= ln 2 / 2) and tanh (a rational
  form below 0.625, exp above), within 2 ulp of libm's over the whole range (measured in
  tests/test_kernels.py: every float64 exponent, and a million random arguments);
* ``log1p`` for both dtypes: in float64, Cephes' log rational on the mantissa with the rounding
  of 1 + x corrected (``log(1 + x) = log(u) + (x − (u − 1))/u``, u = 1 + x rounded), within
  2 ulp; float32 arguments are computed in float64 and rounded once.

The NumPy twins keep libm's functions: they are the oracle these are tested against, and the
float64 equivalence tests (1e-12) and the classic XOR reproduction hold with these in the kernels.

``fast_exp(x)``, ``fast_tanh(x)`` and ``fast_log1p(x)`` pick the implementation by the type of ``x``.
"""

import math

import numpy as np
from numba import njit, types
from numba.extending import overload

from .config import EXACT_OPTIONS
from .lowlevel import float32_bits as _float32_bits
from .lowlevel import float32_from_bits as _float32_from_bits
from .lowlevel import float64_bits as _float64_bits
from .lowlevel import float64_from_bits as _float64_from_bits
from .lowlevel import select

# Compiled code calls ``fast_exp``, ``fast_tanh`` and ``fast_log1p``, whose overloads hand Numba
# the plain functions below (each compiled once per dtype, with the EXACT flags: no ``reassoc``,
# which would fold the two halves of ln 2 in the range reduction). Each is straight-line code
# (``select`` rather than branches) that calls no other compiled function, so it is small enough
# for LLVM to inline into a caller's loop, which it then vectorises: a tanh that called a
# separately compiled exp was not inlined, and a loop with a call in it stays scalar. The exp
# cores are inlined into them by Numba (``inline="always"``).
_CORE = dict(EXACT_OPTIONS)

_F = np.float32
_LOG2E = _F(1.4426950408889634)
# ln 2 in two parts: k * _LN2_HI is exact for the k that occur, so x - k ln 2 loses nothing.
_LN2_HI = _F(0.693359375)
_LN2_LO = _F(-2.12194440e-4)
_EXP_MAX = _F(88.72284)  # ln(largest float32): exp overflows above this
_EXP_MIN = _F(-103.97)  # and is 0 below this


@njit(**_CORE)
def _exp32_core(x):
    # e^x for x in [_EXP_MIN, _EXP_MAX] (Cephes expf: x = k ln 2 + r, |r| <= ln 2 / 2).
    k = np.floor(x * _LOG2E + _F(0.5))
    r = x - k * _LN2_HI
    r = r - k * _LN2_LO
    p = _F(1.9875691500e-4)
    p = p * r + _F(1.3981999507e-3)
    p = p * r + _F(8.3334519073e-3)
    p = p * r + _F(4.1665795894e-2)
    p = p * r + _F(1.6666665459e-1)
    p = p * r + _F(5.0000001201e-1)
    p = p * r * r + r + _F(1.0)
    # 2^k as two factors, so that k down to -150 (subnormal results) needs no special case.
    ki = np.int32(k)
    half = ki >> np.int32(1)
    rest = ki - half
    result = p * _float32_from_bits((half + np.int32(127)) << np.int32(23))
    return result * _float32_from_bits((rest + np.int32(127)) << np.int32(23))


def exp32(x):
    """exp of a float32, branch-free."""
    # (NaN compares False throughout and passes through)
    xc = select(x < _EXP_MIN, _EXP_MIN, x)
    xc = select(xc > _EXP_MAX, _EXP_MAX, xc)
    result = select(x > _EXP_MAX, _F(np.inf), _exp32_core(xc))
    return select(x < _EXP_MIN, _F(0.0), result)


def tanh32(x):
    """tanh of a float32, branch-free (Cephes tanhf: odd polynomial below 0.625, 1 − 2/(e^2|x| + 1) above)."""
    ax = abs(x)
    twice = _F(2.0) * ax
    e = _exp32_core(select(twice > _EXP_MAX, _EXP_MAX, twice))
    large = _F(1.0) - _F(2.0) / (e + _F(1.0))
    large = select(x < _F(0.0), -large, large)
    z = x * x
    p = _F(-5.70498872745e-3)
    p = p * z + _F(2.06390887954e-2)
    p = p * z + _F(-5.37397155531e-2)
    p = p * z + _F(1.33314422036e-1)
    p = p * z + _F(-3.33332819422e-1)
    small = p * z * x + x
    return select(ax < _F(0.625), small, large)


_D = np.float64
_LOG2E_D = 1.4426950408889634
# ln 2 in two parts (Cephes' C1, C2): k * _LN2_HI_D is exact for every k that occurs.
_LN2_HI_D = 6.93145751953125e-1
_LN2_LO_D = 1.42860682030941723212e-6
_EXP_MAX_D = 7.09782712893383996843e2  # ln(largest float64)
_EXP_MIN_D = -7.45133219101941108420e2  # ln(smallest subnormal)
_SQRT_HALF_D = 0.70710678118654752440


@njit(**_CORE)
def _exp64_core(x):
    # e^x for x in [_EXP_MIN_D, _EXP_MAX_D] (Cephes exp: x = k ln 2 + r, exp(r) = 1 + 2r·P/(Q − r·P)).
    k = np.floor(x * _LOG2E_D + 0.5)
    r = x - k * _LN2_HI_D
    r = r - k * _LN2_LO_D
    rr = r * r
    p = (1.26177193074810590878e-4 * rr + 3.02994407707441961300e-2) * rr + 9.99999999999999999910e-1
    p = p * r
    q = ((3.00198505138664455042e-6 * rr + 2.52448340349684104192e-3) * rr + 2.27265548208155028766e-1) * rr
    q = q + 2.00000000000000000009e0
    e = 1.0 + 2.0 * (p / (q - p))
    # 2^k as two factors, so that k down to -1075 (subnormal results) needs no special case.
    # (float64 -> int32 -> int64: AVX2 has no vector float64 -> int64 conversion, AVX-512 does)
    ki = np.int64(np.int32(k))
    half = ki >> np.int64(1)
    rest = ki - half
    result = e * _float64_from_bits((half + np.int64(1023)) << np.int64(52))
    return result * _float64_from_bits((rest + np.int64(1023)) << np.int64(52))


def exp64(x):
    """exp of a float64, branch-free."""
    xc = select(x < _EXP_MIN_D, _EXP_MIN_D, x)
    xc = select(xc > _EXP_MAX_D, _EXP_MAX_D, xc)
    result = select(x > _EXP_MAX_D, np.inf, _exp64_core(xc))
    return select(x < _EXP_MIN_D, 0.0, result)


def tanh64(x):
    """tanh of a float64, branch-free (Cephes tanh: x + x³·P(x²)/Q(x²) below 0.625, 1 − 2/(e^2|x| + 1) above)."""
    ax = abs(x)
    twice = 2.0 * ax
    e = _exp64_core(select(twice > _EXP_MAX_D, _EXP_MAX_D, twice))
    large = 1.0 - 2.0 / (e + 1.0)
    large = select(x < 0.0, -large, large)
    z = x * x
    p = (-9.64399179425052238628e-1 * z - 9.92877231001918586564e1) * z - 1.61468768441708447952e3
    q = ((z + 1.12811678491632931402e2) * z + 2.23548839060100448583e3) * z + 4.84406305325125486048e3
    small = x + x * z * (p / q)
    return select(ax < 0.625, small, large)


def log1p64(x):
    """log(1 + x) of a float64 x >= -1, branch-free: Cephes' log rational on the mantissa of
    u = 1 + x, plus (x − (u − 1))/u for the rounding of 1 + x."""
    u = 1.0 + x
    bits = _float64_bits(u)
    # (int32 arithmetic from here: AVX2 has no vector int64 -> float64 conversion)
    exponent = np.int32(((bits >> np.int64(52)) & np.int64(0x7FF)) - np.int64(1022))
    # u = m·2^exponent with m in [0.5, 1); then m in [√½, √2) by moving a factor 2.
    m = _float64_from_bits((bits & np.int64(0x000FFFFFFFFFFFFF)) | np.int64(0x3FE0000000000000))
    low = m < _SQRT_HALF_D
    exponent = select(low, np.int32(exponent - np.int32(1)), exponent)
    f = select(low, m + m - 1.0, m - 1.0)
    e = np.float64(exponent)
    z = f * f
    p = (
        (
            ((1.01875663804580931796e-4 * f + 4.97494994976747001425e-1) * f + 4.70579119878881725854e0) * f
            + 1.44989225341610930846e1
        )
        * f
        + 1.79368678507819816313e1
    ) * f + 7.70838733755885391666e0
    q = (
        (((f + 1.12873587189167450590e1) * f + 4.52279145837532221105e1) * f + 8.29875266912776603211e1) * f
        + 7.11544750618563894466e1
    ) * f + 2.31251620126765340583e1
    y = f * (z * (p / q)) - e * 2.121944400546905827679e-4 - 0.5 * z
    result = f + y + e * 0.693359375
    # The rounding of 1 + x (exactly 0 where 1 + x is exact), and the edges: log1p(0) = 0,
    # log1p(-1) = -inf, log1p(inf) = inf, NaN and x < -1 give NaN.
    result = result + (x - (u - 1.0)) / u
    result = select(x == 0.0, x, result)
    result = select(x == -1.0, -np.inf, result)
    result = select(x == np.inf, np.inf, result)
    return select((x < -1.0) | (x != x), np.nan, result)


# Cephes' erf.c (ndtr.c; S. L. Moshier): erf = x·T(x²)/U(x²) on |x| <= 1; erfc = e^(−x²)·P(|x|)/Q(|x|)
# on 1 < |x| < 8 and e^(−x²)·R(|x|)/S(|x|) above. Coefficients highest degree first (the ONNX
# export's float64 erf, fastgd.convert, builds the same forms from them).
ERF_T = (
    9.60497373987051638749e0,
    9.00260197203842689217e1,
    2.23200534594684319226e3,
    7.00332514112805075473e3,
    5.55923013010394962768e4,
)
ERF_U = (
    1.0,
    3.35617141647503099647e1,
    5.21357949780152679795e2,
    4.59432382970980127987e3,
    2.26290000613890934246e4,
    4.92673942608635921086e4,
)
ERFC_P = (
    2.46196981473530512524e-10,
    5.64189564831068821977e-1,
    7.46321056442269912687e0,
    4.86371970985681366614e1,
    1.96520832956077098242e2,
    5.26445194995477358631e2,
    9.34528527171957607540e2,
    1.02755188689515710272e3,
    5.57535335369399327526e2,
)
ERFC_Q = (
    1.0,
    1.32281951154744992508e1,
    8.67072140885989742329e1,
    3.54937778887819891062e2,
    9.75708501743205489753e2,
    1.82390916687909736289e3,
    2.24633760818710981792e3,
    1.65666309194161350182e3,
    5.57535340817727675546e2,
)
ERFC_R = (
    5.64189583547755073984e-1,
    1.27536670759978104416e0,
    5.01905042251180477414e0,
    6.16021097993053585195e0,
    7.40974269950448939160e0,
    2.97886665372100240670e0,
)
ERFC_S = (
    1.0,
    2.26052863220117276590e0,
    9.39603524938001434673e0,
    1.20489539808096656605e1,
    1.70814450747565897222e1,
    9.60896809063285878198e0,
    3.36907645100081516050e0,
)


def erf64(x):
    """erf of a float64, branch-free: every form computed, one selected."""
    ax = abs(x)
    z = x * x
    # (Horner's rule written out, four steps a line: a loop here, inlined into a caller's loop,
    # would keep that loop scalar)
    t = (((ERF_T[0] * z + ERF_T[1]) * z + ERF_T[2]) * z + ERF_T[3]) * z + ERF_T[4]
    u = (((ERF_U[0] * z + ERF_U[1]) * z + ERF_U[2]) * z + ERF_U[3]) * z + ERF_U[4]
    u = u * z + ERF_U[5]
    p = (((ERFC_P[0] * ax + ERFC_P[1]) * ax + ERFC_P[2]) * ax + ERFC_P[3]) * ax + ERFC_P[4]
    p = (((p * ax + ERFC_P[5]) * ax + ERFC_P[6]) * ax + ERFC_P[7]) * ax + ERFC_P[8]
    q = (((ERFC_Q[0] * ax + ERFC_Q[1]) * ax + ERFC_Q[2]) * ax + ERFC_Q[3]) * ax + ERFC_Q[4]
    q = (((q * ax + ERFC_Q[5]) * ax + ERFC_Q[6]) * ax + ERFC_Q[7]) * ax + ERFC_Q[8]
    r = (((ERFC_R[0] * ax + ERFC_R[1]) * ax + ERFC_R[2]) * ax + ERFC_R[3]) * ax + ERFC_R[4]
    r = r * ax + ERFC_R[5]
    s = (((ERFC_S[0] * ax + ERFC_S[1]) * ax + ERFC_S[2]) * ax + ERFC_S[3]) * ax + ERFC_S[4]
    s = (s * ax + ERFC_S[5]) * ax + ERFC_S[6]
    # One division, of the form |x| selects (divisions are the slow vector instructions here).
    ratio = select(ax <= 1.0, x * t, select(ax < 8.0, p, r)) / select(ax <= 1.0, u, select(ax < 8.0, q, s))
    # 1 − erfc(|x|); from |x| = 6, erfc < 2.2e-17 and the difference rounds to 1 (so neither ∞/∞
    # in P/Q and R/S nor e^(−x²) past 6² is used).
    large = select(ax >= 6.0, 1.0, 1.0 - _exp64_core(-select(z > 36.0, 36.0, z)) * ratio)
    return select(ax <= 1.0, ratio, select(x < 0.0, -large, large))


_SQRT_HALF_F = _F(0.70710678118654752440)


def log1p32(x):
    """log(1 + x) of a float32 x >= -1, branch-free, as ``log1p64`` with Cephes' logf
    polynomial on the mantissa (no division but the rounding correction's)."""
    u = _F(1.0) + x
    bits = _float32_bits(u)
    exponent = ((bits >> np.int32(23)) & np.int32(0xFF)) - np.int32(126)
    m = _float32_from_bits((bits & np.int32(0x007FFFFF)) | np.int32(0x3F000000))  # [0.5, 1)
    low = m < _SQRT_HALF_F
    exponent = select(low, exponent - np.int32(1), exponent)
    f = select(low, m + m - _F(1.0), m - _F(1.0))
    e = np.float32(exponent)
    z = f * f
    p = (
        (
            (
                (
                    (
                        ((_F(7.0376836292e-2) * f - _F(1.1514610310e-1)) * f + _F(1.1676998740e-1)) * f
                        - _F(1.2420140846e-1)
                    )
                    * f
                    + _F(1.4249322787e-1)
                )
                * f
                - _F(1.6668057665e-1)
            )
            * f
            + _F(2.0000714765e-1)
        )
        * f
        - _F(2.4999993993e-1)
    ) * f + _F(3.3333331174e-1)
    y = p * f * z - e * _F(2.12194440e-4) - _F(0.5) * z
    result = f + y + e * _F(0.693359375)
    result = result + (x - (u - _F(1.0))) / u
    result = select(x == _F(0.0), x, result)
    result = select(x == _F(-1.0), _F(-np.inf), result)
    result = select(x == _F(np.inf), _F(np.inf), result)
    return select((x < _F(-1.0)) | (x != x), _F(np.nan), result)


def fast_exp(x):
    """exp: the vectorisable version of the argument's dtype (float32 or float64)."""
    return np.exp(x)


def fast_tanh(x):
    """tanh: the vectorisable version of the argument's dtype (float32 or float64)."""
    return np.tanh(x)


def fast_log1p(x):
    """log1p: the vectorisable version of the argument's dtype (float32 or float64)."""
    return np.log1p(x)


def fast_erf(x):
    """erf of a float64: the vectorisable version."""
    return math.erf(x)


@overload(fast_exp, jit_options=EXACT_OPTIONS)
def _fast_exp(x):
    if x == types.float32:
        return exp32
    if x == types.float64:
        return exp64
    return lambda x: np.exp(x)


@overload(fast_tanh, jit_options=EXACT_OPTIONS)
def _fast_tanh(x):
    if x == types.float32:
        return tanh32
    if x == types.float64:
        return tanh64
    return lambda x: np.tanh(x)


# log1p64 and erf64 are inlined by Numba: they are over LLVM's inlining threshold, and a call in a
# loop keeps it scalar.
@overload(fast_log1p, jit_options=EXACT_OPTIONS, inline="always")
def _fast_log1p(x):
    if x == types.float32:
        return log1p32
    if x == types.float64:
        return log1p64
    return lambda x: np.log1p(x)


@overload(fast_erf, jit_options=EXACT_OPTIONS, inline="always")
def _fast_erf(x):
    if x == types.float64:
        return erf64
    return lambda x: math.erf(x)
