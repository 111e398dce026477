"""The one place for numerics and compilation settings: fastmath flags, cache policy, threads.

Every Numba kernel in :mod:`fastgd.kernels` takes its ``@njit`` options from here, so a change of
policy (say, turning the on-disk cache off) is one edit.
"""

from __future__ import annotations

import contextlib
import numbers
import os

import numba
from threadpoolctl import threadpool_info, threadpool_limits

# LLVM fast-math flags we allow. Deliberately *not* ``nnan``/``ninf`` (what ``fastmath=True`` adds):
# those let LLVM assume no NaN/inf exists and delete the very checks that detect divergence.
#   nsz      ignore the sign of zero
#   arcp     x / y may become x * (1 / y)
#   contract fuse a * b + c into an FMA
#   afn      approximate math functions where the backend offers them
#   reassoc  reorder sums, which is what lets LLVM vectorise reductions
FASTMATH_FLAGS = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})

# The vectorisable exp/tanh in kernels/mathfn.py rely on the order of their operations (Cody-Waite
# range reduction): they get no ``reassoc``, which would let LLVM fold the two halves of ln 2.
EXACT_FASTMATH_FLAGS = frozenset({"nsz", "arcp", "contract"})


def _cache_enabled() -> bool:
    # FASTGD_NUMBA_CACHE=0 turns the on-disk compile cache off (for example on a filesystem where
    # numba's cache files cannot be written at all). Numba itself falls back from the read-only
    # package folder to a per-user cache directory, and honours NUMBA_CACHE_DIR.
    return os.environ.get("FASTGD_NUMBA_CACHE", "1").strip().lower() not in {"0", "false", "no", "off"}


CACHE = _cache_enabled()

# Options for every kernel. error_model="numpy" makes x / 0 give inf/nan like NumPy instead of
# raising, which keeps exception checks out of the inner loops.
JIT_OPTIONS = dict(nogil=True, cache=CACHE, fastmath=set(FASTMATH_FLAGS), error_model="numpy")

# Matrix products with fewer multiply-adds than this run as plain compiled loops: below it the
# ~5 µs cost of a BLAS call outweighs the arithmetic (a 32x32x64 product is 65 536 MACs).
BLAS_MIN_MACS = 512


def default_threads() -> int:
    """Number of threads Numba uses when the caller does not say (``NUMBA_NUM_THREADS``)."""
    return int(numba.config.NUMBA_NUM_THREADS)


def _check_threads(n_threads) -> int:
    if isinstance(n_threads, bool) or not isinstance(n_threads, numbers.Integral):
        raise TypeError(f"n_threads must be an int or None, got {type(n_threads).__name__}")
    n = int(n_threads)
    if not 1 <= n <= default_threads():
        raise ValueError(f"n_threads must be between 1 and {default_threads()} (NUMBA_NUM_THREADS), got {n}")
    return n


@contextlib.contextmanager
def thread_limits(n_threads):
    """Run the body with Numba and BLAS both limited to ``n_threads`` threads; restore after.

    ``None`` leaves both as they are.
    """
    if n_threads is None:
        yield
        return
    n = _check_threads(n_threads)
    previous = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        with threadpool_limits(limits=n, user_api="blas"):
            yield
    finally:
        numba.set_num_threads(previous)


def cache_directory() -> str:
    """Where Numba writes compiled kernels: ``NUMBA_CACHE_DIR`` if set, else next to the sources.

    When the package folder is not writable Numba falls back to a per-user cache directory on its
    own; this function reports the configured location, not the fallback.
    """
    configured = numba.config.CACHE_DIR
    if configured:
        return configured
    from . import kernels

    return os.path.join(os.path.dirname(kernels.__file__), "__pycache__")


def show_config(file=None) -> None:
    """Print what a bug report needs: versions, threading layer, threads, BLAS and cache."""
    import platform
    import sys

    import numpy as np
    import scipy

    from . import __version__

    try:
        layer = numba.threading_layer()
    except ValueError:
        layer = f"not initialised yet (configured: {numba.config.THREADING_LAYER})"
    lines = [
        f"fastgd          {__version__}",
        f"python          {sys.version.split()[0]} ({platform.platform()})",
        f"numpy           {np.__version__}",
        f"scipy           {scipy.__version__}",
        f"numba           {numba.__version__}",
        f"cpu             {platform.processor() or platform.machine()} ({os.cpu_count()} logical cores)",
        f"numba threads   {numba.get_num_threads()} of {default_threads()}",
        f"threading layer {layer}",
        f"fastmath flags  {', '.join(sorted(FASTMATH_FLAGS))}",
        f"compile cache   {'on' if CACHE else 'off'}: {cache_directory()}",
    ]
    for pool in threadpool_info():
        lines.append(
            f"threadpool      {pool.get('internal_api')} {pool.get('version')} "
            f"threads={pool.get('num_threads')} {pool.get('filepath')}"
        )
    print("\n".join(lines), file=file)
