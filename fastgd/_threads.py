"""Threads: how many fastgd uses, and BLAS's thread count while fastgd's threads call BLAS.

fastgd runs its compiled kernels on the calling thread, or on a team of threads
(``fastgd.kernels.team``) for large steps: no threading layer of Numba's is started. While compiled
code runs a network whose products may call BLAS, BLAS is held to one thread, whatever the team's
size (the team's threads call it themselves, and BLAS's own threads would sum in another order),
through threadpoolctl's public ``ThreadpoolController.limit``, one hold shared by every Python
thread (``blas_on_one_thread``); the NumPy backend gives BLAS the network's ``n_threads``. Both
are put back after the calls. There is no process-wide lock: two Python threads fitting or predicting
run at the same time (each fit takes its own team).

Importing this module registers fastgd's team with threadpoolctl (``TeamController``), so that
``threadpool_limits`` caps it and ``threadpool_info`` lists it; nothing else happens at import.
"""

from __future__ import annotations

import contextlib
import numbers
import os
import threading

from threadpoolctl import LibController, OpenBLASController, ThreadpoolController, register


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity where the OS reports one (taskset, a
    container's cpuset), else ``os.cpu_count()``."""
    affinity = getattr(os, "sched_getaffinity", None)
    if affinity is not None:
        try:
            return max(1, len(affinity(0)))
        except OSError:
            pass
    return max(1, os.cpu_count() or 1)


# Environment variables that set fastgd's threads when a network does not, in this order:
# fastgd's own, then those joblib's workers (and other pools) set for the libraries in them.
THREAD_VARIABLES = ("FASTGD_NUM_THREADS", "NUMBA_NUM_THREADS", "OMP_NUM_THREADS")


def default_threads() -> int:
    """Threads fastgd uses when a network does not say: ``FASTGD_NUM_THREADS`` if set, else
    ``NUMBA_NUM_THREADS``, else ``OMP_NUM_THREADS`` (what joblib's workers set to
    cores // n_jobs), else every usable core; capped by ``threadpoolctl.threadpool_limits``."""
    value = os.environ.get("FASTGD_NUM_THREADS", "").strip()
    if value:
        try:
            return _capped(max(1, int(value)))
        except ValueError:
            raise ValueError(f"FASTGD_NUM_THREADS must be a positive integer, got {value!r}") from None
    for name in THREAD_VARIABLES[1:]:
        # Other libraries' settings: OpenMP's may be a list per nesting level ("4,2"), the
        # first is this level's; a value fastgd cannot read is theirs to refuse, not fastgd's.
        first = os.environ.get(name, "").split(",")[0].strip()
        if first.isdigit() and int(first) > 0:
            return _capped(int(first))
    return _capped(usable_cores())


# The cap a threadpool_limits(...) block sets on fastgd's team (None: none).
_LIMIT = None


def _capped(n: int) -> int:
    return n if _LIMIT is None else max(1, min(n, _LIMIT))


def check_threads(n_threads, name="n_threads"):
    """``n_threads`` as an int >= 1, or None. Any count is accepted (a model saved on a bigger
    machine loads anywhere); ``team_size`` caps it at the cores there are."""
    if n_threads is None:
        return None
    if isinstance(n_threads, bool) or not isinstance(n_threads, numbers.Integral):
        raise TypeError(f"{name} must be an int or None, got {type(n_threads).__name__}")
    n = int(n_threads)
    if n < 1:
        raise ValueError(f"{name} must be >= 1, got {n}")
    return n


def team_size(n_threads) -> int:
    """Threads a compiled call runs on: ``n_threads`` (None: ``default_threads()``), at most the
    usable cores (more threads than cores would wait on each other in every barrier) and at most
    a ``threadpool_limits`` cap."""
    wanted = default_threads() if n_threads is None else _capped(int(n_threads))
    return max(1, min(wanted, usable_cores()))


_controller = None


def _blas() -> ThreadpoolController:
    """A threadpoolctl controller of the BLAS libraries loaded now, SciPy's included (the one the
    kernels call; threadpoolctl only sees libraries already loaded). Built once: scanning the
    process's libraries costs ~2 ms."""
    global _controller
    if _controller is None:
        import scipy.linalg.cython_blas  # noqa: F401

        _controller = ThreadpoolController().select(user_api="blas")
    return _controller


def blas_threads():
    """BLAS's thread count now (the first library's), for tests and show_config."""
    info = _blas().info()
    return info[0]["num_threads"] if info else None


def blas_limited(threads):
    """A context holding BLAS at ``threads`` threads (None: as it is) for one NumPy-backend call
    made by this Python thread, and putting it back after."""
    if threads is None:
        return contextlib.nullcontext()
    return _blas().limit(limits=int(threads))


# BLAS's setting is the process's, not a thread's: compiled calls from several Python threads
# share one hold on one BLAS thread, taken by the first and given back by the last. (Nested
# per-call limits would not do: the first call to end would put BLAS's threads back while the
# other still runs, and OpenBLAS's threads sum in another order.)
_hold_lock = threading.Lock()
_hold_count = 0
_hold_limiter = None


def _let_go_of_openblas():
    # threadpoolctl 3.8 lets only one Python thread set OpenBLAS's (pthreads) pool size, the
    # first to set it, until it lets go; a set from another thread is ignored (its CHANGES,
    # 3.8.0: OpenBLASController.clear_controlling_thread). fastgd's sets are serialised by
    # _hold_lock, whichever thread makes them: it lets go before and after each. (Before 3.8
    # there is no such control, and nothing to let go of.)
    clear = getattr(OpenBLASController, "clear_controlling_thread", None)
    if clear is not None:
        clear(force=True)


@contextlib.contextmanager
def blas_on_one_thread():
    """A context holding BLAS at one thread for compiled calls, however many Python threads
    make them at once; BLAS's threads are put back when the last of them ends (threadpoolctl's
    ``limit`` and ``restore_original_limits``)."""
    global _hold_count, _hold_limiter
    with _hold_lock:
        if _hold_count == 0:
            _let_go_of_openblas()
            _hold_limiter = _blas().limit(limits=1)
            _let_go_of_openblas()
        _hold_count += 1
    try:
        yield
    finally:
        with _hold_lock:
            _hold_count -= 1
            if _hold_count == 0:
                limiter, _hold_limiter = _hold_limiter, None
                _let_go_of_openblas()
                limiter.restore_original_limits()
                _let_go_of_openblas()


class TeamController(LibController):
    """fastgd's team of threads as threadpoolctl sees it: ``threadpool_info()`` lists it
    (``user_api`` "fastgd"), and ``threadpool_limits(n)`` caps it, as it caps BLAS and OpenMP.

    threadpoolctl finds the libraries it controls among the shared libraries loaded in the
    process (its documented ``LibController`` and ``register``); fastgd's compiled code is not
    one, so the controller is found through the C library every process loads (glibc's or
    musl's ``libc``, macOS's ``libsystem_c``, Windows' ``ucrtbase``); the ``filepath`` it
    reports is fastgd's package folder.
    """

    user_api = "fastgd"
    internal_api = "fastgd"
    filename_prefixes = ("libc.so", "libc.musl", "libsystem_c", "ucrtbase")

    def get_num_threads(self):
        return team_size(None)

    def set_num_threads(self, num_threads):
        global _LIMIT
        _LIMIT = None
        uncapped = default_threads()
        _LIMIT = None if int(num_threads) >= uncapped else max(1, int(num_threads))

    def get_version(self):
        from . import __version__

        return __version__

    def set_additional_attributes(self):
        self.filepath = os.path.dirname(os.path.abspath(__file__))


register(TeamController)
