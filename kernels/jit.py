"""How fastgd compiles: the decorators of every kernel, with the options of ``config`` and
Numba's own on-disk cache (``cache=True``), nothing else.

``kernel`` is ``numba.njit`` with fastgd's options. A *piece* is a function compiled on its own
as a C callback (``numba.cfunc``, over pointers and sizes) for one dtype at a time, the first
time it is needed, and called from other compiled code as a first-class function value
(``kernels.pieces``). Under ``NUMBA_DISABLE_JIT=1`` both stay plain Python functions.
"""

from __future__ import annotations

import warnings

from numba import njit
from numba.extending import register_jitable

from . import config, stamps

# Numba's cache, unless turned off or a kernel source is newer than its stamp (``stamps``).
CACHE = config.CACHE_REQUESTED and not config.DISABLE_JIT and stamps.fresh()
if config.CACHE_REQUESTED and not config.DISABLE_JIT and not CACHE:
    warnings.warn(
        f"fastgd's kernel sources changed since their stamps ({', '.join(stamps.stale())}): compiled code is not cached "
        "in this process. Run `python -m fastgd.kernels.stamps` after editing a kernel module.",
        RuntimeWarning,
        stacklevel=2,
    )

JIT_OPTIONS = dict(config.BASE_OPTIONS, cache=CACHE)
EXACT_JIT_OPTIONS = dict(config.EXACT_OPTIONS, cache=CACHE)


def kernel(function=None, *, exact=False, **options):
    """``@njit`` with fastgd's options (``exact``: the exact fast-math flags, for code that
    relies on the order of its floating-point operations) and Numba's cache."""
    settings = dict(EXACT_JIT_OPTIONS if exact else JIT_OPTIONS, **options)
    if function is None:
        return njit(**settings)
    return njit(**settings)(function)


def helper(function=None, *, exact=False):
    """A function compiled code calls: ``numba.extending.register_jitable`` (the documented way
    to write a function usable from both Python and compiled code), compiled as a subroutine of
    its callers, which carry the cache. (An ``@njit`` function costs a whole dispatcher compile,
    Python wrapper included, per signature.)"""
    settings = dict(config.EXACT_OPTIONS if exact else config.BASE_OPTIONS)
    settings.pop("nogil")
    if function is None:
        return register_jitable(**settings)
    return register_jitable(**settings)(function)
