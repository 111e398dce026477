# stamp: 24f71bbd7c3c1f04ac4e992a27a83ee8
"""Teams of threads running one compiled kernel together (SPMD), with no threading layer.

A team is ``n_threads`` Python threads that each call the same compiled, GIL-free kernel with
their own ``tid`` (the caller is thread 0); inside, the kernel's phases are separated by
``barrier`` and the work of a phase is a list of tasks dealt out by ``next_task``. Every thread
takes the same path through the kernel: decisions (stop, divergence) are made from shared values
read after a barrier. Waiting threads spin on an atomic load with the CPU's pause hint, ~0.1 µs
per barrier on two cores, then yield the core.

Tasks are fixed blocks of work (``layout.block_count``) that do not depend on the team's size,
and each is computed the same way by whichever thread takes it: results are bitwise the same for
any number of threads.

Teams are lent from a pool (``run_team``): two fits in two Python threads get two teams and run
at the same time; a team's workers wait on semaphores between calls, so a call costs a wake-up,
not a thread start. If one thread fails (an exception, a bounds check), the others are released
from their barriers (``CONTROL.abort``) and the first error is raised to the caller.
"""

from __future__ import annotations

import atexit
import os
import threading

from .jit import subroutine
from .layout import CONTROL
from .lowlevel import atomic_add, atomic_load, atomic_store, call_void, spin_pause

# About 50 µs of spinning (a pause is ~10-40 ns) before a waiting thread starts yielding.
SPINS_BEFORE_YIELD = 2000


@subroutine
def barrier(control, n_threads):
    """Wait until all ``n_threads`` threads of the team have arrived. Raises if another thread
    of the team failed."""
    if n_threads == 1:
        return
    generation = atomic_load(control, CONTROL.generation)
    if atomic_add(control, CONTROL.arrived, 1) == n_threads - 1:
        # Last to arrive: nobody else touches the counter before the generation moves on.
        atomic_store(control, CONTROL.arrived, 0)
        atomic_store(control, CONTROL.generation, generation + 1)
        return
    spins = 0
    while atomic_load(control, CONTROL.generation) == generation:
        if atomic_load(control, CONTROL.abort) != 0:
            raise RuntimeError("fastgd: another thread of the team failed")
        # Spin while the wait is short (the usual case: ~0.1 µs); after that, give the core
        # away each time round, so a team on a busy machine does not burn the time slice a
        # descheduled teammate needs.
        if spins < SPINS_BEFORE_YIELD:
            spins += 1
            spin_pause()
        else:
            call_void(control[CONTROL.yield_address])


@subroutine
def next_task(n_threads, previous):
    """This thread's task after ``previous`` (its first is its ``tid``): tasks are dealt round
    robin, thread t taking tasks t, t + n, t + 2n... (handing them out through an atomic counter
    balanced better on a busy machine but cost ~0.1 µs per task in contended atomics)."""
    return previous + n_threads


@subroutine
def read_flag(control, index):
    """``control[index]``, read so that a write from another thread is seen while a loop runs
    (an atomic load: LLVM cannot hoist it out of the loop)."""
    return atomic_load(control, index)


@subroutine
def write_flag(control, index, value):
    atomic_store(control, index, value)


class Team:
    """``size − 1`` worker threads that stay up between compiled calls: between two calls each
    waits on a semaphore of its own, so a call costs a wake-up, not a thread start. A call runs
    ``kernel(tid, size, control, *args)`` on every member, thread 0 being the caller; the first
    error any raises is raised to the caller once every member has finished (the others are
    released from their barriers, ``CONTROL.abort``). One call at a time per team."""

    def __init__(self, size):
        self.size = int(size)
        self.pid = os.getpid()
        self._wake = [threading.Semaphore(0) for _ in range(self.size - 1)]
        self._finished = threading.Semaphore(0)
        self._job = None
        self._errors = []
        self._threads = [
            threading.Thread(target=self._member, args=(tid,), name=f"fastgd-{tid}", daemon=True)
            for tid in range(1, self.size)
        ]
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
                control[CONTROL.abort] = 1
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
            control[CONTROL.abort] = 1
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
        """Whether every worker is up in this process (a forked child has none of them, and a
        closed team none either)."""
        return (
            self.pid == os.getpid()
            and len(self._threads) == self.size - 1
            and all(thread.is_alive() for thread in self._threads)
        )


# Idle teams by size. A call borrows one (or starts one) and gives it back; a team that is not
# alive (after a fork, the child's copies have no threads) is dropped. At most MAX_IDLE are kept.
_IDLE = {}
_POOL_LOCK = threading.Lock()
MAX_IDLE = 4


def _borrow(size) -> Team:
    with _POOL_LOCK:
        teams = _IDLE.get(size, [])
        while teams:
            team = teams.pop()
            if team.alive:
                return team
    return Team(size)


def _give_back(team) -> None:
    with _POOL_LOCK:
        if team.alive and sum(len(teams) for teams in _IDLE.values()) < MAX_IDLE:
            _IDLE.setdefault(team.size, []).append(team)
            return
    team.close(timeout=1.0)


def close_idle_teams() -> None:
    """End every idle team's threads (at exit, and for tests)."""
    with _POOL_LOCK:
        teams = [team for group in _IDLE.values() for team in group]
        _IDLE.clear()
    for team in teams:
        if team.pid == os.getpid():
            team.close(timeout=1.0)


atexit.register(close_idle_teams)


def run_team(kernel_function, args, n_threads, control):
    """Run ``kernel_function(tid, n_threads, control, *args)`` on ``n_threads`` threads, thread
    0 being the calling one (the others: a team from the pool), and return thread 0's result.

    The team's synchronisation slots of ``control`` are reset first. If a thread raises, the
    others are released from their barriers and the first error is raised here once every
    thread has ended.
    """
    n_threads = int(n_threads)
    for slot in (CONTROL.arrived, CONTROL.generation, CONTROL.abort, CONTROL.stop_seen):
        control[slot] = 0
    if n_threads <= 1:
        return kernel_function(0, 1, control, *args)
    team = _borrow(n_threads)
    try:
        return team.run(kernel_function, args, control)
    finally:
        _give_back(team)
