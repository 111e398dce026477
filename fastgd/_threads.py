"""Threads: how many fastgd uses, the one lock around compiled calls, and BLAS's thread count.

fastgd runs its compiled kernels on its own team of threads (``fastgd.kernels.team``): no
threading layer of Numba's is started. During a compiled call BLAS is held to one thread, since
the team's threads call BLAS themselves (one pool of threads at a time); the NumPy backend gives
BLAS the network's ``n_threads``. Both settings are restored after each call.

Process-wide effects of importing this module: an at-fork handler that gives a forked child a
fresh ``ENGINE_LOCK`` (a fork taken while another thread held it would leave the child's copy
held forever), and fastgd's team registered with threadpoolctl (``TeamController``), so that
``threadpool_limits`` caps it and ``threadpool_info`` lists it. Nothing else.
"""

from __future__ import annotations

import contextlib
import numbers
import os
import threading

from threadpoolctl import LibController, ThreadpoolController

from .kernels.compat import TEAM_LIBRARY_PREFIX, register_controller, set_library_threads

# One compiled call at a time per process: BLAS's thread limit is process-wide, and two teams
# spinning on the same cores would slow each other down. fit takes it per compiled call (an in
# memory fit is usually one), so two Python threads' fits take turns; each gets bitwise what it
# would alone.
ENGINE_LOCK = threading.RLock()


def _reset_lock_after_fork() -> None:
    global ENGINE_LOCK
    ENGINE_LOCK = threading.RLock()


os.register_at_fork(after_in_child=_reset_lock_after_fork)


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. under taskset or a container's
    cpuset), else ``os.cpu_count()``."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
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


def _blas():
    """A threadpoolctl controller for the BLAS libraries loaded now, SciPy's included (the one
    the kernels call; threadpoolctl only sees libraries already loaded). Built once: scanning
    the process's libraries costs ~2 ms."""
    global _controller
    if _controller is None:
        import scipy.linalg.cython_blas  # noqa: F401

        _controller = ThreadpoolController().select(user_api="blas")
    return _controller


def blas_threads():
    """BLAS's thread count now (the first library's), for tests and show_config."""
    controllers = _blas().lib_controllers
    return controllers[0].get_num_threads() if controllers else None


@contextlib.contextmanager
def compiled_call(blas_threads):
    """Hold ``ENGINE_LOCK`` and BLAS at ``blas_threads`` (None: as it is) for one compiled call
    (or one NumPy-backend call), and put BLAS back after."""
    with ENGINE_LOCK:
        libraries = _blas().lib_controllers if blas_threads is not None else []
        previous = [library.get_num_threads() for library in libraries]
        for library, old in zip(libraries, previous):
            if old != blas_threads:
                set_library_threads(library, blas_threads)
        try:
            yield
        finally:
            for library, old in zip(libraries, previous):
                if library.get_num_threads() != old:
                    set_library_threads(library, old)


class TeamController(LibController):
    """fastgd's team of threads as threadpoolctl sees it: ``threadpool_info()`` lists it
    (``user_api`` "fastgd"), and ``threadpool_limits(n)`` caps it, as it caps BLAS and OpenMP.

    threadpoolctl finds the libraries it controls among the shared libraries loaded in the
    process; fastgd's compiled code is not one, so the controller is found through Numba's
    helper library, which is always loaded with fastgd (``compat.TEAM_LIBRARY_PREFIX``); the
    ``filepath`` it reports is fastgd's package folder.
    """

    user_api = "fastgd"
    internal_api = "fastgd"
    filename_prefixes = (TEAM_LIBRARY_PREFIX,)

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


register_controller(TeamController)
