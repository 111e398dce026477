"""A team of threads running one compiled kernel together (SPMD), with no threading layer.

fastgd starts ``n_threads`` Python threads (``fastgd._threads``) that each call the same
compiled, GIL-free kernel with their own ``tid``; inside, the kernel's phases are separated by
``barrier`` and the work of a phase is a list of tasks handed out by ``next_task``. Every
thread takes the same path through the kernel: decisions (stop, divergence) are made from shared
values read after a barrier. Waiting threads spin on an atomic load with the CPU's pause hint,
about 0.1 µs per barrier on two cores, so a team can synchronise many times per training step.

Tasks are fixed blocks of work (``layout.block_count``) that do not depend on the team's size,
and each is computed the same way by whichever thread takes it: results are bitwise the same for
any number of threads.

If one thread fails (an exception in Python or a bounds check), the launcher sets
``control[CONTROL_ABORT]`` and every thread waiting in a barrier raises instead of waiting
forever.
"""

import atexit
import os
import threading

from numba import njit

from .compat import atomic_add, atomic_load, atomic_store, spin_pause, yield_cpu
from .config import INTERNAL_OPTIONS, JIT_OPTIONS
from .layout import CONTROL_ABORT, CONTROL_ARRIVED, CONTROL_GENERATION, CONTROL_NEXT_TASK, CONTROL_STOP_SEEN

_INLINE = dict(JIT_OPTIONS, inline="always")

# About 50 µs of spinning (a pause is ~10-40 ns) before a waiting thread starts yielding.
SPINS_BEFORE_YIELD = 2000


@njit(**INTERNAL_OPTIONS)
def barrier(control, n_threads):
    """Wait until all ``n_threads`` threads of the team have arrived; also starts a new task
    list (``next_task`` counts from 0 again). Raises if another thread of the team failed."""
    if n_threads == 1:
        return
    generation = atomic_load(control, CONTROL_GENERATION)
    if atomic_add(control, CONTROL_ARRIVED, 1) == n_threads - 1:
        # Last to arrive: nobody is handing out tasks now.
        atomic_store(control, CONTROL_NEXT_TASK, 0)
        atomic_store(control, CONTROL_ARRIVED, 0)
        atomic_store(control, CONTROL_GENERATION, generation + 1)
        return
    spins = 0
    while atomic_load(control, CONTROL_GENERATION) == generation:
        if atomic_load(control, CONTROL_ABORT) != 0:
            raise RuntimeError("fastgd: another thread of the team failed")
        # Spin while the wait is short (the usual case: ~0.1 µs); after that, give the core
        # away each time round, so a team on a busy machine does not burn the time slice a
        # descheduled teammate needs.
        if spins < SPINS_BEFORE_YIELD:
            spins += 1
            spin_pause()
        else:
            yield_cpu()


@njit(**_INLINE)
def first_task(control, tid, n_threads):
    """This thread's first task of the current phase (compare with the phase's task count)."""
    return tid


@njit(**_INLINE)
def next_task(control, n_threads, previous):
    """This thread's next task of the current phase, after ``previous``: tasks are dealt round
    robin (thread t takes tasks t, t + n, t + 2n...). Handing them out through an atomic counter
    balanced better on a busy machine but cost ~0.1 µs per task in contended atomics, which
    halved the speed of a tiny network's step on two threads."""
    return previous + n_threads


@njit(**_INLINE)
def read_flag(control, index):
    """``control[index]``, read so that a write from another thread is seen while a loop runs
    (an atomic load: LLVM cannot hoist it out of the loop)."""
    return atomic_load(control, index)


@njit(**_INLINE)
def write_flag(control, index, value):
    atomic_store(control, index, value)


class Team:
    """``size − 1`` worker threads that stay up between compiled calls: between two calls each
    waits on a semaphore of its own (blocked in the kernel, not spinning), so a call costs a
    wake-up, not a thread start. A call runs ``kernel(tid, size, control, *args)`` on every
    member, thread 0 being the caller; the first error any raises is raised to the caller once
    every member has finished (the others are released from their barriers, ``CONTROL_ABORT``).

    Not for concurrent calls: fastgd makes one compiled call at a time per process (its engine
    lock); ``run_team`` keeps one team per process (``current_team``).
    """

    def __init__(self, size):
        self.size = int(size)
        self._wake = [threading.Semaphore(0) for _ in range(self.size - 1)]
        self._finished = threading.Semaphore(0)
        self._job = None
        self._errors = []
        self._threads = [threading.Thread(target=self._member, args=(tid,), name=f"fastgd-{tid}", daemon=True) for tid in range(1, self.size)]
        for thread in self._threads:
            thread.start()

    def _member(self, tid):
        while True:
            self._wake[tid - 1].acquire()
            job = self._job
            if job is None:  # close()
                self._finished.release()
                return
            kernel_function, args, control = job
            try:
                kernel_function(tid, self.size, control, *args)
            except BaseException as error:  # handed to the caller
                self._errors.append(error)
                control[CONTROL_ABORT] = 1
            self._finished.release()

    def run(self, kernel_function, args, control):
        """Run one compiled call on the team; returns thread 0's result."""
        self._errors = []
        self._job = (kernel_function, args, control)
        for wake in self._wake:
            wake.release()
        result = None
        try:
            result = kernel_function(0, self.size, control, *args)
        except BaseException as error:
            self._errors.insert(0, error)
            control[CONTROL_ABORT] = 1
        finally:
            for _ in self._wake:
                self._finished.acquire()
            self._job = None
        if self._errors:
            raise self._errors[0]
        return result

    def close(self, timeout=5.0):
        """Let the workers end (each wakes once more, sees no job and returns)."""
        self._job = None
        for wake in self._wake:
            wake.release()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []

    @property
    def alive(self) -> bool:
        """Whether every worker is up (not after ``close``)."""
        return bool(self._threads) and all(thread.is_alive() for thread in self._threads)


_TEAM = None
_TEAM_LOCK = threading.Lock()


def current_team(size) -> Team:
    """The process's team of ``size`` threads: the one that is up, or a new one (the old one
    closed) when the size changed or its threads are gone."""
    global _TEAM
    with _TEAM_LOCK:
        if _TEAM is None or _TEAM.size != size or not _TEAM.alive:
            if _TEAM is not None:
                _TEAM.close()
            _TEAM = Team(size)
        return _TEAM


def _forget_team_after_fork():
    # A forked child has the parent's Team object but none of its threads: it starts its own.
    global _TEAM, _TEAM_LOCK
    _TEAM, _TEAM_LOCK = None, threading.Lock()


def _close_team_at_exit():
    if _TEAM is not None:
        _TEAM.close(timeout=1.0)


os.register_at_fork(after_in_child=_forget_team_after_fork)
atexit.register(_close_team_at_exit)


def run_team(kernel_function, args, n_threads, control):
    """Run ``kernel_function(tid, n_threads, control, *args)`` on ``n_threads`` threads, thread
    0 being the calling one (the others: the process's team, ``current_team``), and return
    thread 0's result.

    The team's synchronisation slots of ``control`` are reset first. If a thread raises, the
    others are released from their barriers (``CONTROL_ABORT``) and the first error is raised
    here once every thread has ended.
    """
    n_threads = int(n_threads)
    for slot in (CONTROL_ARRIVED, CONTROL_GENERATION, CONTROL_ABORT, CONTROL_NEXT_TASK, CONTROL_STOP_SEEN):
        control[slot] = 0
    if n_threads <= 1:
        return kernel_function(0, 1, control, *args)
    return current_team(n_threads).run(kernel_function, args, control)
