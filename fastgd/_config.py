"""The one place for numerics and compilation settings: fastmath flags, cache policy, threads.

Every Numba kernel in :mod:`fastgd.kernels` takes its ``@njit`` options from here, so a change of
policy (say, turning the on-disk cache off) is one edit.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import numbers
import os
import tempfile
import threading
import warnings

import numba
from threadpoolctl import ThreadpoolController, threadpool_info

# LLVM fast-math flags we allow. Deliberately *not* ``nnan``/``ninf`` (which the blanket boolean form adds):
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
    # FASTGD_NUMBA_CACHE=0 turns the on-disk compile cache off.
    return os.environ.get("FASTGD_NUMBA_CACHE", "1").strip().lower() not in {"0", "false", "no", "off"}


def _writable_folder(path: str) -> bool:
    """Can this process create files in ``path`` (made if missing)? Tried for real, as Numba
    does: permission bits say nothing for root, or on a read-only mount."""
    try:
        os.makedirs(path, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
        return True
    except OSError:
        return False


def _private_folder(path: str) -> bool:
    # A shared temporary folder must not hold a cache someone else could write: Numba unpickles
    # what it finds there.
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        info = os.stat(path)
    except OSError:
        return False
    if hasattr(os, "getuid") and (info.st_uid != os.getuid() or info.st_mode & 0o022):
        return False
    return _writable_folder(path)


def _choose_cache_folder():
    """Where the compile cache goes, decided before any kernel is defined.

    Numba tries ``NUMBA_CACHE_DIR``, then the ``__pycache__`` folder next to the kernels'
    sources, then a per-user folder (``~/.cache/numba``), and fails to define a cached function
    at all when none is writable. When both of the last two are unwritable (a read-only install
    and a read-only or missing home), fastgd points Numba at a private folder in the temporary
    directory; when even that fails, it compiles without a cache (and says so in show_config).

    Returns (cache enabled, the fallback folder fastgd chose or None).
    """
    if not _cache_enabled():
        return False, None
    if numba.config.CACHE_DIR:
        return True, None
    import importlib.util

    from numba.misc.appdirs import AppDirs

    spec = importlib.util.find_spec("fastgd.kernels")
    kernels_folder = spec.submodule_search_locations[0] if spec and spec.submodule_search_locations else None
    if kernels_folder and _writable_folder(os.path.join(kernels_folder, "__pycache__")):
        return True, None
    if _writable_folder(AppDirs(appname="numba", appauthor=False).user_cache_dir):
        return True, None
    user = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    fallback = os.path.join(tempfile.gettempdir(), f"fastgd-numba-cache-{user}")
    if _private_folder(fallback):
        numba.config.CACHE_DIR = fallback
        return True, fallback
    warnings.warn(
        "fastgd: no writable folder for the compile cache (the install folder, ~/.cache and the "
        "temporary folder all refused); kernels are compiled in every process. Set NUMBA_CACHE_DIR.",
        RuntimeWarning,
        stacklevel=2,
    )
    return False, None


CACHE, CACHE_FALLBACK = _choose_cache_folder()

# Options for every kernel. error_model="numpy" makes x / 0 give inf/nan like NumPy instead of
# raising, which keeps exception checks out of the inner loops.
JIT_OPTIONS = dict(nogil=True, cache=CACHE, fastmath=set(FASTMATH_FLAGS), error_model="numpy")
# Kernels with prange loops over fixed blocks.
PARALLEL_JIT_OPTIONS = dict(JIT_OPTIONS, parallel=True)

# Matrix products with fewer multiply-adds than this run as plain compiled loops (a BLAS call
# costs ~1-5 µs); measured with `python -m fastgd bench xor small digits`.
BLAS_MIN_MACS = 512
# From this many multiply-adds on, a product is split into blocks of output rows that Numba's
# threads compute in parallel (below it, thread start-up costs more than it saves). A product
# with m output rows gets clamp(m // MIN_BLOCK_ROWS, 1, MAX_BLOCKS) equal blocks: the split
# depends on the sizes only, so results do not depend on the thread count.
PARALLEL_MIN_MACS = 1 << 20
MIN_BLOCK_ROWS = 128
MAX_BLOCKS = 16


# Numba's threading layer. Left to itself Numba picks tbb, else OpenMP, else its own workqueue.
# With GNU OpenMP (libgomp, what pip's numba finds on Linux) a process forked after a parallel
# kernel has run hangs in its first parallel kernel (measured: multiprocessing "fork" pool).
# "forksafe" makes Numba pick tbb (installed with fastgd where wheels exist; fork- and
# thread-safe), else a fork-safe OpenMP (not GNU's), else workqueue (fork-safe; measured ~30 %
# slower on the `mid` benchmark than tbb or OpenMP, and not safe to enter from two threads at
# once, which ENGINE_LOCK rules out for fastgd's own calls). A user's NUMBA_THREADING_LAYER
# wins, and so does a layer some other code already started.
THREADING_LAYER = "forksafe"


def _choose_threading_layer() -> None:
    if "NUMBA_THREADING_LAYER" in os.environ:
        return
    from numba.np.ufunc import parallel

    if not getattr(parallel, "_is_initialized", False) and str(numba.config.THREADING_LAYER).lower() == "default":
        numba.config.THREADING_LAYER = THREADING_LAYER


_choose_threading_layer()

# One compiled call at a time per process: Numba's thread count is per thread but BLAS's
# thread limit (threadpoolctl) is process-wide, and the workqueue layer must not be entered
# from two threads at once. fit takes it per compiled chunk, so two threads' fits interleave
# chunk by chunk; as results do not depend on scheduling, each gets what it would alone.
ENGINE_LOCK = threading.RLock()


def _reset_lock_after_fork() -> None:
    # A fork taken while another thread held the lock would leave the child's copy held forever.
    global ENGINE_LOCK
    ENGINE_LOCK = threading.RLock()


os.register_at_fork(after_in_child=_reset_lock_after_fork)


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


_blas_controller = None


def _blas():
    """A threadpoolctl controller for the BLAS libraries loaded now, SciPy's included (that is
    the one Numba calls; threadpoolctl only sees libraries already loaded). Built once: scanning
    the process's libraries costs ~2 ms."""
    global _blas_controller
    if _blas_controller is None:
        import scipy.linalg.cython_blas  # noqa: F401

        _blas_controller = ThreadpoolController().select(user_api="blas")
    return _blas_controller


# BLAS's thread count as fastgd last read or set it (None: unknown), kept under ENGINE_LOCK so
# that a compiled section can skip the library calls when nothing changed.
_blas_now = None


def _set_library_threads(library, n) -> None:
    # threadpoolctl (>= 3.6) ignores OpenBLAS limits set from any Python thread but the first one
    # that set one, as long as that thread lives, so that threads do not fight over the shared
    # pool; ENGINE_LOCK already serialises fastgd's settings, so go to the library directly.
    # (Measured: a fit run in a second thread otherwise trained with 2 BLAS threads.)
    setter = getattr(library, "_real_set_num_threads", library.set_num_threads)
    setter(n)


def _set_blas_threads(n) -> None:
    global _blas_now
    if n is not None and _blas_now != n:
        for library in _blas().lib_controllers:
            _set_library_threads(library, n)
        _blas_now = n


def blas_threads_for(n_threads, compiled):
    """The BLAS thread count a call of this backend runs with (None: leave as it is)."""
    return 1 if compiled else n_threads


@contextlib.contextmanager
def thread_limits(n_threads=None, compiled=True):
    """Set the threads for a public call (a whole ``fit``, a ``predict``) and restore them after.

    ``compiled=True`` (the Numba backend): one pool of threads, Numba's, ``n_threads`` wide
    (None: as it is), with BLAS held to one thread. The kernels split large matrix products into
    fixed blocks that Numba's threads hand to BLAS one block per call; a multi-threaded BLAS
    underneath would fight them for the same cores. ``compiled=False`` (the NumPy backend): BLAS
    gets ``n_threads`` (None: unchanged).

    Numba's setting is per thread; BLAS's is per process, so it is applied by
    :func:`compiled_section` around each compiled call, under ``ENGINE_LOCK``: another Python
    thread may have changed it in between.
    """
    global _blas_now
    n = None if n_threads is None else _check_threads(n_threads)
    previous_numba = numba.get_num_threads()
    with ENGINE_LOCK:
        libraries = _blas().lib_controllers
        previous_blas = [library.get_num_threads() for library in libraries]
        known = previous_blas[0] if len(set(previous_blas)) == 1 else None  # one value, or unknown
        _blas_now = known
    if compiled and n is not None and n != previous_numba:
        numba.set_num_threads(n)
    try:
        yield
    finally:
        with ENGINE_LOCK:
            for library, previous in zip(libraries, previous_blas):
                if library.get_num_threads() != previous:
                    _set_library_threads(library, previous)
            _blas_now = known
        if numba.get_num_threads() != previous_numba:
            numba.set_num_threads(previous_numba)


@contextlib.contextmanager
def compiled_section(blas_threads):
    """Hold ``ENGINE_LOCK`` and BLAS at ``blas_threads`` (None: as it is) for one compiled call.
    Costs well under a microsecond when BLAS is already set."""
    with ENGINE_LOCK:
        _set_blas_threads(blas_threads)
        yield


def cache_directory() -> str:
    """Where Numba keeps fastgd's compiled kernels.

    In order: ``NUMBA_CACHE_DIR`` if set; the ``__pycache__`` folder next to the kernels'
    sources if writable; a per-user folder (``~/.cache/numba/...`` on Linux); a private folder
    in the temporary directory (see ``_choose_cache_folder``).
    """
    from .kernels import forward_backward

    cache = getattr(forward_backward, "_cache", None)
    return getattr(cache, "_cache_path", "(caching disabled)")


def _sources_stamp(paths) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(os.path.basename(path).encode())
        with open(path, "rb") as file:
            digest.update(file.read())
    return digest.hexdigest()


def guard_compile_cache(modules) -> None:
    """Make the compile cache of fastgd's kernels (every Numba function defined in
    ``fastgd.kernels``, overload implementations included) safe to trust.

    * Numba keys a cache entry on its own function's source file only, so after an edit to a
      kernel another kernel inlines (or to the numerics settings here) it would load stale
      machine code. Every entry is stamped instead with a hash of all kernel sources and this
      file: any change recompiles everything once.
    * Numba raises on a corrupt or truncated cache file (seen: ``UnpicklingError``, ``EOFError``,
      ``ValueError``). Such an entry is deleted, with a warning, and the function recompiled;
      a failure to write one is a warning too, never an error.

    This wraps ``numba.core.caching.Cache``'s load and save for functions of ``fastgd.kernels``
    only; every other cached function in the process goes through Numba's code untouched.
    """
    from numba.core.caching import Cache

    global _CACHE_STAMP
    # Code-generation settings that change the machine code go into the stamp as well:
    # Numba's own key leaves them out, so a NUMBA_BOUNDSCHECK=1 run would load unchecked code.
    settings = f"boundscheck={numba.config.BOUNDSCHECK} opt={numba.config.OPT} debuginfo={numba.config.DEBUGINFO_DEFAULT}"
    _CACHE_STAMP = _sources_stamp({__file__, *(module.__file__ for module in modules)}) + " " + settings
    if getattr(Cache, "_fastgd_guard", False):
        return
    original_load, original_save = Cache.load_overload, Cache.save_overload

    def load_overload(self, sig, target_context):
        cache_file = _our_cache_file(self)
        if cache_file is None:
            return original_load(self, sig, target_context)
        try:
            return original_load(self, sig, target_context)
        except Exception as error:  # any unreadable entry: recompile instead
            _discard(self, cache_file, error)
            return None

    def save_overload(self, sig, data):
        cache_file = _our_cache_file(self)
        if cache_file is None:
            return original_save(self, sig, data)
        try:
            original_save(self, sig, data)
        except Exception as error:  # a cache that cannot be written must not stop training
            _discard(self, cache_file, error)

    Cache.load_overload = load_overload
    Cache.save_overload = save_overload
    Cache._fastgd_guard = True


_CACHE_STAMP = None


def _our_cache_file(cache):
    """The index/data file object of ``cache`` when it belongs to a fastgd kernel (stamped
    with the sources' hash), else None."""
    module = getattr(getattr(cache, "_py_func", None), "__module__", "") or ""
    cache_file = getattr(cache, "_cache_file", None)
    if not module.startswith(__package__ + ".kernels") or not hasattr(cache_file, "_source_stamp"):
        return None
    cache_file._source_stamp = _CACHE_STAMP
    return cache_file


def _discard(cache, cache_file, error) -> None:
    index = cache_file._index_path
    data = os.path.join(os.path.dirname(index), cache_file._data_name_pattern.replace("{number:d}", "*"))
    for path in [index, *glob.glob(data)]:
        with contextlib.suppress(OSError):
            os.unlink(path)
    warnings.warn(
        f"fastgd: discarded an unreadable compile-cache entry for {cache._py_func.__qualname__} "
        f"({type(error).__name__}: {error}) in {os.path.dirname(index)}; recompiling",
        RuntimeWarning,
        stacklevel=2,
    )


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
        f"compile cache   {'on' if CACHE else 'off'}: {cache_directory()}"
        + (" (fallback: install folder and ~/.cache not writable)" if CACHE_FALLBACK else ""),
    ]
    settings = sorted(f"{k}={v}" for k, v in os.environ.items() if k.startswith(("NUMBA_", "FASTGD_", "OMP_", "OPENBLAS_", "MKL_")))
    lines.append(f"environment     {' '.join(settings) or '(no NUMBA_/FASTGD_/OMP_/OPENBLAS_/MKL_ variables)'}")
    for pool in threadpool_info():
        lines.append(
            f"threadpool      {pool.get('internal_api')} {pool.get('version')} "
            f"threads={pool.get('num_threads')} {pool.get('filepath')}"
        )
    print("\n".join(lines), file=file)
