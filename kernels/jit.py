"""How the kernels are compiled: ``kernel`` (``numba.njit`` with the options of ``config`` and
Numba's own on-disk cache) for the entry points Python calls, ``helper`` (``register_jitable``)
for the functions compiled code calls, and ``first_call`` for a kernel's first call in a process.

Under ``NUMBA_DISABLE_JIT=1`` both decorators return the plain Python functions.
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
        f"fastgd's kernel sources changed since their stamps ({', '.join(stamps.stale())}): compiled code is not "
        "cached "
        "in this process. Run `python -m fastgd.kernels.stamps` after editing a kernel module.",
        RuntimeWarning,
        stacklevel=2,
    )


def kernel(function=None, *, exact=False, **options):
    """``@njit`` with fastgd's options (``exact``: the exact fast-math flags, for code that
    relies on the order of its floating-point operations) and Numba's cache."""
    settings = dict(config.EXACT_OPTIONS if exact else config.BASE_OPTIONS, cache=CACHE, **options)

    def decorate(function):
        try:
            compiled = njit(**settings)(function)
        except RuntimeError as error:
            # Numba refuses cache=True where it finds nowhere to write (a read-only install
            # whose user-wide cache folder is unwritable too), naming its cache "locator".
            if "locator" not in str(error):
                raise
            _no_cache_here(str(error))
            return njit(**dict(settings, cache=False))(function)
        if settings["cache"]:
            _SETTINGS[compiled] = settings
        return compiled

    return decorate if function is None else decorate(function)


def helper(function=None, *, exact=False, fastmath=None):
    """A small function compiled code calls: ``njit(inline="always")``, typed and compiled inside
    each caller (cheaper than a compile of its own for the few lines of a scalar formula or a
    short loop). Numba's flags are per instruction, so fast-math options here are the caller's."""
    settings = dict(config.EXACT_OPTIONS if exact else config.BASE_OPTIONS, inline="always")
    if fastmath is not None:
        settings["fastmath"] = set(fastmath)
    if function is None:
        return njit(**settings)
    return njit(**settings)(function)


def subroutine(function=None, *, exact=False, fastmath=None):
    """A function compiled code calls from several places: ``numba.extending.register_jitable``
    (the documented way to write a function usable from both Python and compiled code),
    compiled once per signature and linked into its callers, which carry the cache."""
    settings = dict(config.EXACT_OPTIONS if exact else config.BASE_OPTIONS)
    if fastmath is not None:
        settings["fastmath"] = set(fastmath)
    settings.pop("nogil")
    if function is None:
        return register_jitable(**settings)
    return register_jitable(**settings)(function)


def compile_piece(function):
    """``function(tid, n_threads, args) -> int64`` compiled as a C function (``numba.cfunc``, with
    fastgd's options and Numba's cache), called by address (``lowlevel.call_piece``); under
    NUMBA_DISABLE_JIT the Python function itself, registered under a stand-in address."""
    from numba import cfunc, types

    from .lowlevel import PIECES

    if config.DISABLE_JIT:
        PIECES[id(function)] = function
        return function
    signature = types.int64(types.int64, types.int64, types.int64)
    settings = dict(config.BASE_OPTIONS, cache=CACHE)
    settings.pop("nogil")
    try:
        return cfunc(signature, **settings)(function)
    except RuntimeError as error:
        if "locator" not in str(error):
            raise
        _no_cache_here(str(error))
        return cfunc(signature, **dict(settings, cache=False))(function)
    except Exception as error:
        # A cache entry Numba cannot read (truncated, corrupt): compiled again without the cache.
        if not settings["cache"]:
            raise
        warnings.warn(
            f"fastgd discarded an unreadable compile-cache entry of {function.__qualname__} "
            f"({type(error).__name__}: {error}); it is compiled without the cache in this process. Delete "
            "Numba's cache folder (`python -m fastgd config` shows it) to repair it.",
            RuntimeWarning,
            stacklevel=2,
        )
        return cfunc(signature, **dict(settings, cache=False))(function)


def piece_address(piece) -> int:
    """The address callers call ``piece`` (``compile_piece``) by."""
    return id(piece) if config.DISABLE_JIT else int(piece.address)


def generated(name, source, namespace):
    """The function ``name`` defined by ``source`` (Python code) with the globals ``namespace``:
    the dispatch over a table (activations, losses, optimizers) written out from the table's
    entries when the code calling it is compiled, one branch per entry, so that adding an entry
    adds its branch. ``source`` is kept as the function's ``__source__`` for debugging."""
    scope = dict(namespace)
    exec(compile(source, f"<fastgd generated {name}>", "exec"), scope)  # noqa: S102 (our own template)
    function = scope[name]
    function.__source__ = source
    return function


_WARNED = []


def _no_cache_here(reason):
    if not _WARNED:
        _WARNED.append(reason)
        warnings.warn(
            f"fastgd's kernels are compiled without Numba's on-disk cache in this process: {reason}. "
            "Set NUMBA_CACHE_DIR to a writable folder to keep them.",
            RuntimeWarning,
            stacklevel=3,
        )


# Each cached kernel's settings (for its cache-less copy).
_SETTINGS = {}
# Kernels whose first call succeeded in this process, and the cache-less copies that replaced
# kernels whose cache entry could not be read.
_CALLED = set()
_REPLACED = {}


def first_call(dispatcher, *args):
    """Call the ``kernel`` ``dispatcher``; the first time in a process, a failure while Numba
    loads or compiles it with its cache on (a cache entry damaged on disk) is retried once with a
    copy that neither reads nor writes the cache, with a warning; a second failure is raised."""
    dispatcher = _REPLACED.get(dispatcher, dispatcher)
    if dispatcher in _CALLED or dispatcher not in _SETTINGS:
        return dispatcher(*args)
    try:
        result = dispatcher(*args)
    except Exception as error:
        copy = njit(**dict(_SETTINGS[dispatcher], cache=False))(dispatcher.py_func)
        result = copy(*args)
        warnings.warn(
            f"fastgd discarded an unreadable compile-cache entry of {dispatcher.py_func.__qualname__} "
            f"({type(error).__name__}: {error}); it is compiled without the cache in this process. Delete "
            "Numba's cache folder (`python -m fastgd config` shows it) to repair it.",
            RuntimeWarning,
            stacklevel=2,
        )
        _REPLACED[dispatcher] = copy
        dispatcher = copy
    _CALLED.add(dispatcher)
    return result


def current(dispatcher):
    """The kernel that runs for ``dispatcher``: itself, or the cache-less copy that replaced it."""
    return _REPLACED.get(dispatcher, dispatcher)
