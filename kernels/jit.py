"""How fastgd compiles: the decorators of every kernel, with the options of ``config`` and
Numba's own on-disk cache (``cache=True``), nothing else.

``kernel`` is ``numba.njit`` with fastgd's options. A *piece* is a function compiled on its own
as a C callback (``numba.cfunc``, over pointers and sizes) for one dtype at a time, the first
time it is needed, and called from other compiled code as a first-class function value
(``kernels.pieces``). Under ``NUMBA_DISABLE_JIT=1`` both stay plain Python functions.
"""

from __future__ import annotations

import pickle
import traceback
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


def cached(compile_function, function, **settings):
    """``compile_function(**settings)(function)`` (``njit`` or ``cfunc`` with their arguments)
    with Numba's cache when this process may use it, and without when Numba finds nowhere to
    write it (a read-only installation whose user-wide cache folder is unwritable too: Numba
    refuses ``cache=True`` there with a RuntimeError naming the missing locator) or cannot read
    what it finds there (``is_cache_read_error``)."""
    if settings.get("cache"):
        try:
            compiled = compile_function(**settings)(function)
        except RuntimeError as error:
            if "locator" not in str(error):
                raise
            _no_cache_here(str(error))
            settings = dict(settings, cache=False)
        except Exception as error:
            if not is_cache_read_error(error):
                raise
            unreadable_entry(function, error)
            settings = dict(settings, cache=False)
        else:
            if compile_function is njit:
                _SETTINGS[id(compiled)] = settings
            return compiled
    return compile_function(**settings)(function)


# The settings of each cached ``njit`` dispatcher (by id), for ``without_cache``.
_SETTINGS = {}


def is_cache_read_error(error) -> bool:
    """Whether ``error`` was raised by Numba while it read an entry of its on-disk cache (a file
    damaged on disk: Numba writes its entries atomically, so a crash leaves none half-written,
    but a disk fault or a hand edit can), seen from where it was raised."""
    if not isinstance(error, (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
                              ImportError, OSError)):  # fmt: skip
        return False
    frames = traceback.extract_tb(error.__traceback__)
    return any(frame.filename.replace("\\", "/").endswith("numba/core/caching.py") for frame in frames)


def unreadable_entry(function, error) -> None:
    """Warn that a cache entry of ``function`` could not be read (it is compiled without the
    cache in this process)."""
    name = getattr(function, "__qualname__", None) or getattr(getattr(function, "py_func", None), "__qualname__", str(function))
    warnings.warn(f"fastgd discarded an unreadable compile-cache entry of {name} ({type(error).__name__}: {error}); it is "
                  "compiled without the cache in this process. Delete Numba's cache folder (`python -m fastgd config` "
                  "shows it) to repair it.", RuntimeWarning, stacklevel=3)  # fmt: skip


def without_cache(dispatcher):
    """A copy of the ``kernel`` ``dispatcher`` that neither reads nor writes Numba's cache (its
    cached entry could not be read: ``is_cache_read_error``)."""
    settings = dict(_SETTINGS.get(id(dispatcher), JIT_OPTIONS), cache=False)
    return njit(**settings)(dispatcher.py_func)


_WARNED = []


def _no_cache_here(reason):
    if not _WARNED:
        _WARNED.append(reason)
        warnings.warn(f"fastgd's kernels are compiled without Numba's on-disk cache in this process: {reason}. "
                      "Set NUMBA_CACHE_DIR to a writable folder to keep them.", RuntimeWarning, stacklevel=3)  # fmt: skip


def kernel(function=None, *, exact=False, **options):
    """``@njit`` with fastgd's options (``exact``: the exact fast-math flags, for code that
    relies on the order of its floating-point operations) and Numba's cache."""
    settings = dict(EXACT_JIT_OPTIONS if exact else JIT_OPTIONS, **options)
    if function is None:
        return lambda function: cached(njit, function, **settings)
    return cached(njit, function, **settings)


def helper(function=None, *, exact=False, fastmath=None):
    """A function compiled code calls: ``numba.extending.register_jitable`` (the documented way
    to write a function usable from both Python and compiled code), compiled as a subroutine of
    its callers, which carry the cache. (Each function and signature is a compile pipeline of
    its own, ~0.05-0.2 s; Numba's ``inline="always"`` measured slower still, as it types the
    body again at every call site.)"""
    settings = dict(config.EXACT_OPTIONS if exact else config.BASE_OPTIONS)
    if fastmath is not None:
        settings["fastmath"] = set(fastmath)
    settings.pop("nogil")
    if function is None:
        return register_jitable(**settings)
    return register_jitable(**settings)(function)
